"""Helpers for the benchmark scripts in ``bench/``: the machine's peak and tables."""
from __future__ import annotations

import os
import platform
import time

__all__ = ["matmul_peak_gflops", "table", "machine_info", "timeit", "model_flops"]


def matmul_peak_gflops(n: int = 2048, dtype: str = "float32", repeats: int = 5) -> float:
    """Measured matrix-multiply throughput of this machine now, in GFLOP/s.

    Times ``repeats`` runs of an ``n × n`` by ``n × n`` ``tf.linalg.matmul``
    (``2 n³`` flops each) after a warm-up and returns the best.
    """
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=dtype)
    b = tf.random.normal((n, n), dtype=dtype)
    mm = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    mm(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mm(a, b).numpy()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def timeit(fn, *, repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``fn()`` in seconds over ``repeats`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """Cores, CPU model and library versions, for the header of a results table."""
    info = {"cores": os.cpu_count(), "cpu": _cpu_model(), "python": platform.python_version()}
    try:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
    except ImportError:
        pass
    return info


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts) with the given column order."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def model_flops(model) -> float:
    """Forward-pass floating-point operations per example of a Keras model.

    Counts multiply-adds of convolutions (2-D and 3-D, incl. depthwise) and
    dense layers as 2 flops each, recursing into nested models; other layers
    are cheap by comparison and left out, so the result is a slight
    underestimate and the derived share of peak is conservative.
    """
    import keras
    import numpy as np

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += model_flops(layer)
            continue
        if not layer.weights:
            continue
        kernel = layer.weights[0]
        out = layer.output.shape
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D)):
            spatial = float(np.prod([d for d in out[1:-1]]))
            total += 2.0 * spatial * float(np.prod(kernel.shape))
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            total += 2.0 * float(np.prod(out[1:])) * float(np.prod(kernel.shape[:2]))
        elif isinstance(layer, keras.layers.Dense):
            total += 2.0 * float(np.prod(kernel.shape)) * float(np.prod(out[1:-1] or [1]))
    return total
