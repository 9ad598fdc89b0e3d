"""Low-precision export to LiteRT (``.tflite``), checked against the float model.

Post-training quantization (Jacob et al. 2018): weights and activations as
8-bit integers calibrated on a few hundred representative inputs, or weights
as float16. The exported file keeps float inputs and outputs, so every app
calls it exactly as it calls the Keras model; ops the converter cannot
quantize stay float, and the export report names them. The card travels with
the file (``model_int8.tflite`` -> ``model_int8.card.json``), recording the
quantization and the measured difference from the float model.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .errors import ConfigError, InputError
from .io import atomic_path, write_json
from .litert import LiteRTModel, flatten_batch
from .models.card import ModelCard, card_path
from .predict import Predictor

__all__ = ["QUANTIZE", "export_litert", "float_ops"]

QUANTIZE = ("int8", "float16", "none")


def _flat_inputs(model) -> tuple[object, list]:
    import tensorflow as tf

    structure = model.input
    return structure, tf.nest.flatten(structure)


def _endpoint(model, batch_size: int):
    """A flat-argument, flat-float-output function of ``model`` and its fixed-batch signature."""
    import tensorflow as tf

    structure, flat = _flat_inputs(model)
    specs = [tf.TensorSpec([batch_size, *t.shape[1:]], t.dtype, name=f"in_{i}")
             for i, t in enumerate(flat)]
    probe = model(tf.nest.pack_sequence_as(
        structure, [tf.zeros(s.shape, s.dtype) for s in specs]), training=False)
    out_keys = sorted(probe) if isinstance(probe, dict) else []

    def fn(*args):
        y = model(tf.nest.pack_sequence_as(structure, list(args)), training=False)
        flat_y = [y[k] for k in out_keys] if out_keys else tf.nest.flatten(y)
        return {f"out_{i}": tf.cast(v, tf.float32) for i, v in enumerate(flat_y)}

    return fn, specs, out_keys, len(flat)


def _saved_model_converter(model, batch_size: int, tmp: str):
    # Keras 3's documented route to LiteRT: an export archive (SavedModel) of
    # one endpoint, whose variables the converter freezes into constants.
    import keras
    import tensorflow as tf

    fn, specs, out_keys, n_in = _endpoint(model, batch_size)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", fn, input_signature=specs)
    archive.write_out(tmp, verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(tmp), out_keys, n_in


def _convert(model, *, quantize: str, batch_size: int, representative: Iterable | None):
    import tempfile

    with tempfile.TemporaryDirectory(prefix="deepsci-export-") as tmp:
        conv, out_keys, n_in = _saved_model_converter(model, batch_size, tmp)
        _configure(conv, quantize, representative)
        return conv.convert(), out_keys, n_in


def _configure(conv, quantize: str, representative: Iterable | None) -> None:
    import tensorflow as tf

    if quantize == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if representative is None:
            raise ConfigError("expected representative inputs for int8 quantization, found none")
        batches = list(representative)
        if not batches:
            raise ConfigError("expected representative inputs for int8 quantization, found none")

        def gen():
            # By signature name: a list is fed in the graph's tensor order, which
            # for several inputs need not be the signature's in_0, in_1, ...
            for b in batches:
                yield {f"in_{i}": v for i, v in enumerate(flatten_batch(b))}

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = gen
        # Integer kernels wherever the converter has them; the rest stays float.
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                          tf.lite.OpsSet.TFLITE_BUILTINS]
    elif quantize != "none":
        raise ConfigError(f"expected --quantize {'|'.join(QUANTIZE)}, found {quantize!r}")


def float_ops(blob: bytes) -> list[str]:
    """Names of op types whose outputs stay float in a converted model."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without delegates: XNNPACK would fold the graph into opaque DELEGATE nodes.
    interpreter = Interpreter(model_content=blob, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()  # the only listing of a model's ops LiteRT offers
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    names = set()
    for op in ops:
        outs = [details[i]["dtype"] for i in op.get("outputs", []) if i in details]
        if op["op_name"] not in ("DEQUANTIZE", "QUANTIZE") and any(
                np.dtype(d).kind == "f" for d in outs):
            names.add(op["op_name"])
    return sorted(names)


def export_litert(model, out: str | os.PathLike, *, card: ModelCard, quantize: str = "int8",
                  batch_size: int = 1, representative: Iterable | None = None,
                  check_inputs=None, compare: Callable | None = None,
                  tolerance: float | None = None,
                  measure: str = "largest output difference") -> dict:
    """Convert ``model`` to a ``.tflite`` file with its card; return the export report.

    Parameters
    ----------
    model : keras.Model
    out : path ending in ``.tflite``
    card : ModelCard
        The float model's card; the export adds ``extra["litert"]``.
    quantize : {"int8", "float16", "none"}
    batch_size : int
        The file's fixed batch size (the predictor pads the last batch).
    representative : iterable of input batches, shape (batch_size, ...)
        Calibration inputs for int8 (a few hundred rows of the app's data).
    check_inputs : array or dict of arrays, shape (N, ...), optional
        Held-out inputs on which the exported model is compared with ``model``.
    compare : callable, optional
        ``compare(float_outputs, exported_outputs) -> float``, the app's
        metric difference; default: the largest absolute output difference.
    tolerance : float, optional
        Refuse the export (ConfigError, nothing written) when the difference is larger.
    measure : str
        What ``compare`` measures, for the refusal's message.
    """
    out = Path(out)
    if out.suffix != ".tflite":
        raise InputError(f"expected an output path ending in .tflite, found {out.suffix or 'none'}", out)
    if int(batch_size) < 1:
        raise ConfigError(f"expected --batch-size >= 1, found {batch_size}")
    blob, out_keys, n_in = _convert(model, quantize=quantize, batch_size=int(batch_size),
                                    representative=representative)
    runtime = LiteRTModel(blob, batch_size=int(batch_size), out_keys=out_keys, n_inputs=n_in)
    report = {"quantize": quantize, "batch_size": int(batch_size), "bytes": len(blob),
              "float_ops": float_ops(blob) if quantize == "int8" else [],
              "outputs": out_keys, "n_inputs": n_in}
    if check_inputs is not None:
        ref = Predictor(model, batch_size=int(batch_size))(check_inputs)
        got = runtime.predictor()(check_inputs)
        diff = compare(ref, got) if compare is not None else _max_abs(ref, got)
        report["difference"] = float(diff)
        if tolerance is not None and diff > tolerance:
            raise ConfigError(f"expected the exported model's {measure} within {tolerance:g} of "
                              f"the float model, found {diff:.4g} (raise --tolerance to accept it)")
    with atomic_path(out) as tmp:
        tmp.write_bytes(blob)
    exported = dataclasses.replace(card, extra={**card.extra, "litert": report})
    write_json(card_path(out), exported.stamped().to_dict())
    return report


def _max_abs(a, b) -> float:
    if isinstance(a, dict):
        return max(_max_abs(a[k], b[k]) for k in a)
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
