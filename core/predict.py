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
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["BatchedPredictor", "Predictor", "predictor", "load_predictor", "BACKENDS"]

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _rows(x) -> int:
    if isinstance(x, dict):
        return _rows(next(iter(x.values())))
    if isinstance(x, (list, tuple)):
        return _rows(x[0])
    return int(np.shape(x)[0])


def _slice(x, start: int, stop: int):
    if isinstance(x, dict):
        return {k: _slice(v, start, stop) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_slice(v, start, stop) for v in x)
    return x[start:stop]


def _pad(x, rows: int):
    if isinstance(x, dict):
        return {k: _pad(v, rows) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_pad(v, rows) for v in x)
    x = np.asarray(x)
    if rows == 0:
        return x
    fill = np.repeat(x[-1:], rows, axis=0)  # a real row: padding never yields NaN
    return np.concatenate([x, fill], axis=0)


def _to_numpy(y, rows: int | None = None):
    if isinstance(y, dict):
        return {k: _to_numpy(v, rows) for k, v in y.items()}
    if isinstance(y, (list, tuple)):
        return [_to_numpy(v, rows) for v in y]
    y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
    return y if rows is None else y[:rows]


def _concat(parts: list):
    first = parts[0]
    if isinstance(first, dict):
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in first}
    if isinstance(first, list):
        return [np.concatenate([p[i] for p in parts], axis=0) for i in range(len(first))]
    return np.concatenate(parts, axis=0)


class BatchedPredictor:
    """Cuts inputs into fixed-size batches (the last one padded) for a backend's ``_run``."""

    batch_size: int | None = None

    def _run(self, x, rows: int | None = None):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x):
        """Outputs for every row of ``x`` (array, list or dict of arrays), as NumPy."""
        if self.batch_size is None:
            return self._run(x)
        n = _rows(x)
        if n == 0:
            raise InputError("expected at least one input to predict, found none")
        bs = self.batch_size
        parts = []
        for start in range(0, n, bs):
            chunk = _slice(x, start, min(n, start + bs))
            rows = _rows(chunk)
            parts.append(self._run(_pad(chunk, bs - rows), rows))
        return _concat(parts)

    def map(self, batches: Iterable) -> Iterator:
        """Outputs of each batch of ``batches`` in turn (NumPy)."""
        for batch in batches:
            yield self(batch)


class Predictor(BatchedPredictor):
    """A model's inference as one traced, optionally XLA-compiled function.

    Parameters
    ----------
    model : keras.Model
    batch_size : int, optional
        Inputs are cut into batches of this many rows, the last one padded,
        so the function has one signature. ``None``: each call's input is
        passed as it is (ragged graph batches), with a relaxed signature.
    xla : bool
        Compile the function with XLA.
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

    def __init__(self, model, *, batch_size: int | None = None, xla: bool = False,
                 threads: int | None = None, postprocess: Callable | None = None):
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"Expected batch_size >= 1. Received: {batch_size}")
        import tensorflow as tf

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
        return _to_numpy(self._fn(x), rows)


def predictor(model, *, batch_size: int | None = None, xla: bool = False,
              threads: int | None = None, postprocess: Callable | None = None) -> Predictor:
    """The :class:`Predictor` of ``model`` for these settings, built once per process."""
    key = (batch_size, bool(xla), threads, postprocess)
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = Predictor(model, batch_size=batch_size, xla=xla, threads=threads,
                                   postprocess=postprocess)
    return per_model[key]


def _load_keras(path: Path, expect: str | None, task: str | None):
    from .models.serialization import load_model

    return load_model(path, expect=expect, task=task)


def _load_litert(path: Path, expect: str | None, task: str | None):
    from .litert import LiteRTModel

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
