"""The FFN runner: a trained model applied to batches of FOVs, loaded once per process.

:class:`FloodFiller` is what the flood fill and the agglomeration call; the
forward pass is the core's :class:`~deepsci.core.predict.Predictor` (one traced
function per model), and the runner counts FOV evaluations (the cost measure of
the benchmarks). Models are refused unless their card says ``connectomics``/``ffn``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deepsci.core.models.card import ModelCard, read_card
from deepsci.core.parallel import limit_tf_threads

__all__ = ["APP", "TASK", "FloodFiller", "normalise", "model_card", "load_flood_filler"]

APP, TASK = "connectomics", "ffn"


class FloodFiller:
    """Runs an FFN model on batches of FOVs.

    Parameters
    ----------
    model : keras.Model
        ``(N, Z, Y, X, 2) -> (N, Z, Y, X, 1)`` FFN.
    deltas : sequence of 3 int
        FOV movement step.
    """

    def __init__(self, model, deltas):
        from deepsci.core.predict import predictor

        self.fov = tuple(int(v) for v in model.input_shape[1:4])
        self.deltas = tuple(int(v) for v in deltas)
        # Batches are as long as the queue allows (1 .. batch_size FOVs): no padding to a fixed size,
        # which would cost up to batch_size times the work of a short batch.
        self._predict = predictor(model, batch_size=None)
        self.fov_evals = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(N, Z, Y, X)`` of a batch ``(N, Z, Y, X, 2)`` (image, canvas)."""
        self.fov_evals += len(batch)
        return self._predict(np.asarray(batch, np.float32))[..., 0]


def normalise(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(image - mean) / std`` as float32 (the training preprocessing), shape kept (Z, Y, X)."""
    return ((image.astype(np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32)


def model_card(model_path: str | Path) -> ModelCard:
    """The checked card of a trained FFN (FFN shape in ``extra["ffn"]``, ``preprocessing``), no TensorFlow."""
    return read_card(model_path, expect=APP, task=TASK)


_RUNNERS: dict = {}


def load_flood_filler(model_path: str | Path, *, threads: int | None = None) -> tuple[FloodFiller, ModelCard]:
    """The model at ``model_path`` as a :class:`FloodFiller` (loaded once per process) and its card.

    ``threads``: TensorFlow intra-op threads of this process (a Dask worker's share of the cores),
    set before the model's first op.
    """
    key = str(model_path)
    if key not in _RUNNERS:
        limit_tf_threads(threads)
        from deepsci.core.models.serialization import load_model

        model, card = load_model(key, expect=APP, task=TASK)
        _RUNNERS[key] = (FloodFiller(model, card.extra["ffn"]["deltas"]), card)
    return _RUNNERS[key]
