"""Inception throughput on this machine against its measured matmul peak.

usage: python bench/core.py [--batch 32] [--small-size 299] [--repeats 3] [--quick]

Prints a Markdown table: images/s for inference and for a training step of
the small and the full Inception-v3, GFLOP/s from the analytic flop count,
and the share of the float32 matmul peak measured in the same run.
Goal (issue 2): full Inception-v3 inference at batch 32 >= 40 % of peak.
"""
from __future__ import annotations

import argparse
import datetime
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deepsci.core.bench import machine_info, matmul_peak_gflops, model_flops, table, timeit  # noqa: E402
from deepsci.core.models import inception  # noqa: E402


def _measure(name, model, batch, size, repeats, peak):
    x = tf.random.normal((batch, size, size, 3))
    y = tf.zeros((batch,), tf.int32)
    infer = tf.function(lambda x: model(x, training=False), jit_compile=False)
    opt = keras.optimizers.SGD(0.01)
    opt.build(model.trainable_variables)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    flops = model_flops(model)
    rows = []
    for mode, fn, factor in [("inference", lambda: infer(x).numpy(), 1.0),
                             ("train step", lambda: step(x, y).numpy(), 3.0)]:
        seconds = timeit(fn, repeats=repeats, warmup=1)
        gflops = factor * flops * batch / seconds / 1e9
        rows.append({"model": name, "mode": mode, "batch": batch, "size": size,
                     "GFLOP/img": flops / 1e9, "images/s": batch / seconds,
                     "GFLOP/s": gflops, "% of peak": 100 * gflops / peak})
    return rows


def _classifier(variant, size, **kw):
    net = inception.backbone(variant, (size, size, 3), **kw)
    inp = keras.Input((size, size, 3))
    return keras.Model(inp, keras.layers.Dense(2)(net(inp)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="batch 4, 1 repeat (smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.repeats = 4, 1
    info = machine_info()
    # Best of several measurements: the peak is what the machine can do, so a
    # moment of contention must not lower it (and so flatter the models).
    peak = matmul_peak_gflops(repeats=10)
    rows = _measure("small Inception (width 32)", _classifier("small", args.size), args.batch,
                    args.size, args.repeats, peak)
    rows += _measure("Inception-v3", _classifier("v3", args.size), args.batch, args.size,
                     args.repeats, peak)
    peak_after = matmul_peak_gflops(repeats=10)
    if peak_after > peak:
        for r in rows:
            r["% of peak"] = 100 * r["GFLOP/s"] / peak_after
        peak = peak_after
    rows.insert(0, {"model": "tf.linalg.matmul 2048²", "mode": "peak", "batch": "", "size": "",
                    "GFLOP/img": None, "images/s": None, "GFLOP/s": peak, "% of peak": 100.0})
    print(f"## core: Inception throughput ({datetime.date.today()}, {info['cores']} cores, "
          f"{info['cpu']}, TensorFlow {info['tensorflow']})\n")
    print(table(rows, ["model", "mode", "batch", "size", "GFLOP/img", "images/s", "GFLOP/s", "% of peak"]))
    v3 = next(r for r in rows if r["model"] == "Inception-v3" and r["mode"] == "inference")
    verdict = "met" if v3["% of peak"] >= 40 else "NOT met"
    print(f"\nGoal: Inception-v3 inference at batch {args.batch} >= 40 % of peak: "
          f"{v3['% of peak']:.1f} % ({verdict}).")
    return 0 if np.isfinite(v3["images/s"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
