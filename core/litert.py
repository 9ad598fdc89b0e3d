"""The LiteRT runtime behind the predictor: ``.tflite`` files made by :mod:`deepsci.core.export`.

The interpreter (XNNPACK on CPU) runs one fixed batch size; the predictor
pads the last batch, so apps call a ``.tflite`` model exactly as they call a
Keras one. Its card (``model_int8.card.json``) is checked as a Keras model's is.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .batching import BatchedPredictor
from .errors import InputError
from .models.card import ModelCard, card_path, read_card

__all__ = ["LiteRTModel", "LiteRTPredictor", "flatten_batch"]



def flatten_batch(x) -> list[np.ndarray]:
    import tensorflow as tf

    return [np.asarray(v, dtype=np.float32) if np.asarray(v).dtype.kind == "f" else np.asarray(v)
            for v in tf.nest.flatten(x)]


class LiteRTModel:
    """A ``.tflite`` model run by the LiteRT interpreter (XNNPACK on CPU)."""

    def __init__(self, blob: bytes, *, batch_size: int, out_keys: list, n_inputs: int,
                 threads: int | None = None, path: Path | None = None):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_content=blob, num_threads=threads or os.cpu_count())
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise InputError(f"expected a LiteRT model, found one that does not load: {first}",
                             path) from None
        self.blob, self.batch_size, self.out_keys, self.n_inputs = blob, batch_size, out_keys, n_inputs
        self.path = path
        try:
            sigs = self.interpreter.get_signature_list()
            self._runner = self.interpreter.get_signature_runner(next(iter(sigs)))
        except (ValueError, StopIteration):
            raise InputError("expected a deepsci LiteRT export (one signature), found another "
                             "model", path) from None

    @classmethod
    def load(cls, path: str | os.PathLike, *, expect: str | None = None, task: str | None = None,
             threads: int | None = None) -> tuple[LiteRTModel, ModelCard]:
        """Load ``path`` and its card (checked like a Keras model's)."""
        path = Path(path)
        card = read_card(path, expect=expect, task=task)
        info = card.extra.get("litert")
        if not isinstance(info, dict):
            raise InputError("expected a LiteRT export card (extra.litert), found none", card_path(path))
        model = cls(path.read_bytes(), batch_size=int(info["batch_size"]), out_keys=info["outputs"],
                    n_inputs=int(info["n_inputs"]), threads=threads, path=path)
        return model, card

    def predictor(self, *, postprocess: Callable | None = None, **_keras_only) -> LiteRTPredictor:
        """A predictor with the Keras predictor's call.

        The file fixes the batch size; ``xla`` does not apply to LiteRT, and
        threads are set when the model is loaded.
        """
        return LiteRTPredictor(self, postprocess=postprocess)

    def run(self, flat: list[np.ndarray]) -> list[np.ndarray]:
        """One fixed-size batch through the interpreter; outputs in the export's order."""
        got = self._runner(**{f"in_{i}": np.ascontiguousarray(v) for i, v in enumerate(flat)})
        return [np.array(got[f"out_{i}"]) for i in range(len(got))]


class LiteRTPredictor(BatchedPredictor):
    """Batches for a :class:`LiteRTModel`, padded to its fixed batch size."""

    def __init__(self, model: LiteRTModel, *, postprocess: Callable | None = None):
        self.model, self.batch_size, self.postprocess = model, model.batch_size, postprocess

    def _run(self, x, rows: int | None = None):
        outs = self.model.run(flatten_batch(x))
        y = dict(zip(self.model.out_keys, outs, strict=True)) if self.model.out_keys else (
            outs[0] if len(outs) == 1 else outs)
        if self.postprocess is not None:
            import tensorflow as tf

            y = tf.nest.map_structure(lambda t: np.asarray(t), self.postprocess(y))
        if rows is None:
            return y
        if isinstance(y, dict):
            return {k: v[:rows] for k, v in y.items()}
        return y[:rows] if not isinstance(y, list) else [v[:rows] for v in y]
