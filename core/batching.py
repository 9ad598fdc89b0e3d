"""Fixed-size batches for any inference backend: cut, pad the last one, trim, concatenate.

A backend that runs one fixed batch shape (a traced TensorFlow function, a
LiteRT interpreter) subclasses :class:`BatchedPredictor` and implements
``_run(batch, rows)``; callers pass any number of rows.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from .errors import InputError

__all__ = ["BatchedPredictor", "rows_of", "to_numpy"]


def rows_of(x) -> int:
    if isinstance(x, dict):
        return rows_of(next(iter(x.values())))
    if isinstance(x, (list, tuple)):
        return rows_of(x[0])
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


def to_numpy(y, rows: int | None = None):
    if isinstance(y, dict):
        return {k: to_numpy(v, rows) for k, v in y.items()}
    if isinstance(y, (list, tuple)):
        return [to_numpy(v, rows) for v in y]
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
        n = rows_of(x)
        if n == 0:
            raise InputError("expected at least one input to predict, found none")
        bs = self.batch_size
        parts = []
        for start in range(0, n, bs):
            chunk = _slice(x, start, min(n, start + bs))
            rows = rows_of(chunk)
            parts.append(self._run(_pad(chunk, bs - rows), rows))
        return _concat(parts)

    def map(self, batches: Iterable) -> Iterator:
        """Outputs of each batch of ``batches`` in turn (NumPy)."""
        for batch in batches:
            yield self(batch)
