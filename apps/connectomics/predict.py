"""The FFN runner: a trained model applied to batches of FOVs, loaded once per process.

:class:`FloodFiller` is what the flood fill and the agglomeration call; it
counts FOV evaluations (the cost measure of the benchmarks).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deepsci.core.models.sidecar import read_sidecar
from deepsci.core.parallel import limit_tf_threads

__all__ = ["FloodFiller", "normalise", "model_info", "load_flood_filler"]


class FloodFiller:
    """Runs an FFN model on batches of FOVs with one fixed-signature ``tf.function``.

    Parameters
    ----------
    model : keras.Model
        ``(N, Z, Y, X, 2) -> (N, Z, Y, X, 1)`` FFN.
    deltas : sequence of 3 int
        FOV movement step.
    """

    def __init__(self, model, deltas):
        import tensorflow as tf

        self.fov = tuple(int(v) for v in model.input_shape[1:4])
        self.deltas = tuple(int(v) for v in deltas)
        spec = tf.TensorSpec((None, *self.fov, 2), tf.float32)
        self._predict = tf.function(lambda x: model(x, training=False), input_signature=[spec],
                                    reduce_retracing=True)
        self.fov_evals = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(N, Z, Y, X)`` of a batch ``(N, Z, Y, X, 2)`` (image, canvas)."""
        self.fov_evals += len(batch)
        return self._predict(batch).numpy()[..., 0]


def normalise(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(image - mean) / std`` as float32 (the training preprocessing), shape kept (Z, Y, X)."""
    return ((image.astype(np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32)


def model_info(model_path: str | Path) -> dict:
    """What a trained FFN's record says (FFN shape, preprocessing), without importing TensorFlow.

    Returns
    -------
    dict
        ``ffn`` (FFNConfig as dict), ``preprocessing`` (``image_mean``, ``image_stddev``) and the rest.
    """
    return read_sidecar(model_path)


_RUNNERS: dict = {}


def load_flood_filler(model_path: str | Path, *, threads: int | None = None) -> tuple[FloodFiller, dict]:
    """The model at ``model_path`` as a :class:`FloodFiller`, loaded once per process, and its record."""
    key = str(model_path)
    if key not in _RUNNERS:
        limit_tf_threads(threads)
        from deepsci.core.models.serialization import load_model

        model, side = load_model(key, expect="connectomics")
        _RUNNERS[key] = (FloodFiller(model, side["ffn"]["deltas"]), side)
    return _RUNNERS[key]
