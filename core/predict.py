"""Inference in one place: a model's forward pass traced once, with a fixed batch signature.

Every app runs its trained models through :class:`Predictor`. Inputs are cut
into batches of one size (the last one padded), so TensorFlow traces the
function once per process instead of once per new batch shape; ``xla=True``
compiles it; ``postprocess`` (a softmax, a sigmoid, un-standardising) runs
inside the same graph so ensembles are averaged in the space the app needs.
The backend is chosen by the model file's suffix behind one call, so another
runtime (LiteRT for ``.tflite``) plugs in without touching the apps.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .batching import BatchedPredictor, to_numpy
from .errors import InputError
from .litert import LiteRTModel

__all__ = ["Predictor", "predictor", "load_predictor", "BACKENDS"]



class Predictor(BatchedPredictor):
    """A model's inference as one traced, optionally XLA-compiled function.

    Parameters
    ----------
    model : keras.Model
    batch_size : int, optional
        Inputs are cut into batches of this many rows, the last one padded,
        so the function has one signature. ``None``: each call's input is
        passed as it is (ragged graph batches), with a relaxed signature.
    xla : bool, optional
        Compile the function with XLA; ``None`` (default) follows the current
        accelerator (:func:`deepsci.core.accelerator.current`, ``--xla``).
    threads : int, optional
        TensorFlow intra-op threads of this process, set before its first op.
    postprocess : callable, optional
        A TensorFlow function applied to the model's outputs inside the graph.

    Examples
    --------
    >>> import keras, numpy as np
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> p = Predictor(m, batch_size=4)
    >>> p(np.ones((6, 3), "float32")).shape
    (6, 2)
    """

    def __init__(self, model, *, batch_size: int | None = None, xla: bool | None = None,
                 threads: int | None = None, postprocess: Callable | None = None):
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"Expected batch_size >= 1. Received: {batch_size}")
        import tensorflow as tf

        xla = _xla(xla)
        if threads:
            from .parallel import limit_tf_threads

            limit_tf_threads(threads)
        self.model, self.batch_size, self.xla = model, batch_size, bool(xla)
        self.postprocess = postprocess

        def forward(x):
            y = model(x, training=False)
            return postprocess(y) if postprocess is not None else y

        self._fn = tf.function(forward, jit_compile=self.xla, reduce_retracing=True)

    @property
    def traces(self) -> int:
        """How many times the function was traced (1 once warm, whatever the input sizes)."""
        return int(self._fn.experimental_get_tracing_count())

    def _run(self, x, rows: int | None = None):
        return to_numpy(self._fn(x), rows)


def _xla(xla: bool | None) -> bool:
    if xla is None:
        from .accelerator import current

        return bool(current().xla)
    return bool(xla)


def predictor(model, *, batch_size: int | None = None, xla: bool | None = None,
              threads: int | None = None, postprocess: Callable | None = None) -> Predictor:
    """The :class:`Predictor` of ``model`` for these settings, built once per process."""
    xla = _xla(xla)
    key = (batch_size, xla, threads, postprocess)
    # Kept on the model itself: a weak-keyed table whose values hold the model
    # would keep every model alive; model <-> predictor is a cycle GC frees.
    per_model = model.__dict__.setdefault("_deepsci_predictors", {})
    if key not in per_model:
        per_model[key] = Predictor(model, batch_size=batch_size, xla=xla, threads=threads,
                                   postprocess=postprocess)
    return per_model[key]


def _load_keras(path: Path, expect: str | None, task: str | None):
    from .models.serialization import load_model

    return load_model(path, expect=expect, task=task)


def _load_litert(path: Path, expect: str | None, task: str | None):
    return LiteRTModel.load(path, expect=expect, task=task)


#: Model-file suffix -> loader returning ``(model, card)``.
BACKENDS: dict[str, Callable] = {".keras": _load_keras, ".tflite": _load_litert}


def load_predictor(path: str | os.PathLike, *, expect: str | None = None, task: str | None = None,
                   **kwargs) -> tuple[Predictor, object]:
    """Load the model at ``path`` (backend by suffix) and return its predictor and card."""
    path = Path(path)
    loader = BACKENDS.get(path.suffix)
    if loader is None:
        raise InputError(f"expected a model file ({', '.join(sorted(BACKENDS))}), "
                         f"found {path.suffix or 'no suffix'}", path)
    model, card = loader(path, expect, task)
    if hasattr(model, "predictor"):  # a runtime other than Keras builds its own
        return model.predictor(**kwargs), card
    return predictor(model, **kwargs), card
