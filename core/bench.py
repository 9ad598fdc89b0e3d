"""Helpers for the benchmark scripts in ``bench/``: the machine's peak and tables."""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

__all__ = ["matmul_peak_gflops", "table", "machine_info", "machine_line", "timeit", "model_flops",
           "interleaved"]


_MATMUL: dict = {}


def matmul_peak_gflops(n: int = 2048, dtype: str = "float32", repeats: int = 5) -> float:
    """Measured matrix-multiply throughput of this machine now, in GFLOP/s.

    Times ``repeats`` runs of an ``n × n`` by ``n × n`` ``tf.linalg.matmul``
    (``2 n³`` flops each) after a warm-up and returns the best.
    """
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=dtype)
    b = tf.random.normal((n, n), dtype=dtype)
    # One traced function per process: interleaved() calls this many times.
    mm = _MATMUL.setdefault("fn", tf.function(lambda x, y: tf.linalg.matmul(x, y)))
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


def interleaved(work: dict, *, rounds: int = 5, peak: Callable[[], float] | None = None,
                clock: Callable[[], float] = time.perf_counter, warmup: int = 1,
                moved: float = 0.10) -> dict:
    """Time work against the matmul peak measured around it, round after round.

    A peak measured once, before or after, can be taken at a quieter or a
    busier moment than the work, and then "% of peak" can pass 100 %. Here
    each call of each work item sits between two peak measurements and is
    divided by their mean; the rounds give the spread.

    Parameters
    ----------
    work : dict of name -> (fn, flops)
        ``fn()`` does the work once (and waits for it); ``flops`` per call.
    rounds : int
        Repeats of the whole sequence (after ``warmup`` untimed calls of each fn).
    peak : callable, optional
        Returns the peak in GFLOP/s; default :func:`matmul_peak_gflops` with one repeat.
    moved : float
        Flag the run when the peak's largest/smallest measurement exceeds ``1 + moved``.

    Returns
    -------
    dict
        ``{"peak": {"median", "min", "max", "moved"}, "work": {name: {"gflops",
        "seconds", "pct_of_peak", "pct_min", "pct_max"}}}``: medians over rounds,
        and the smallest and largest share of the bracketing peak.
    """
    peak = peak or (lambda: matmul_peak_gflops(repeats=1))
    for fn, _ in work.values():
        for _ in range(warmup):
            fn()
    peaks: list[float] = []
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in work}
    before = peak()
    peaks.append(before)
    for _ in range(rounds):
        for name, (fn, flops) in work.items():
            t0 = clock()
            fn()
            seconds = clock() - t0
            after = peak()
            peaks.append(after)
            gflops = flops / seconds / 1e9
            samples[name].append((seconds, 100.0 * gflops / ((before + after) / 2)))
            before = after
    out = {"peak": {"median": _median(peaks), "min": min(peaks), "max": max(peaks),
                    "moved": bool(max(peaks) > (1 + moved) * min(peaks))}, "work": {}}
    for name, rows in samples.items():
        secs, pcts = [r[0] for r in rows], [r[1] for r in rows]
        out["work"][name] = {"seconds": _median(secs), "gflops": work[name][1] / _median(secs) / 1e9,
                             "pct_of_peak": _median(pcts), "pct_min": min(pcts), "pct_max": max(pcts)}
    return out


def _median(values) -> float:
    v = sorted(values)
    n = len(v)
    return float(v[n // 2]) if n % 2 else float((v[n // 2 - 1] + v[n // 2]) / 2)


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


def machine_line(*, shared: bool = True) -> str:
    """One line naming the machine, as cards and results pages record it.

    E.g. ``"2 CPU cores (AMD EPYC 7B13), no GPU, shared"``; GPUs are named
    only when TensorFlow is already imported (asking would start it).
    """
    import sys

    info = machine_info()
    gpus = "no GPU"
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        found = tf.config.list_physical_devices("GPU")
        if found:
            gpus = f"{len(found)} GPU" + ("s" if len(found) > 1 else "")
    return f"{info['cores']} CPU cores ({info['cpu']}), {gpus}" + (", shared" if shared else "")


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
