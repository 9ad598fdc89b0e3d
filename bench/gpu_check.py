"""GPU check of the core: devices, Inception-v3, FFN and MPNN rates against the measured peak.

usage: python bench/gpu_check.py [--out gpu_check.json] [--batch 64] [--repeats 10] [--dry-run]

On a machine with an NVIDIA GPU (about 5 minutes, at most 8) it prints what
``deepsci devices`` prints, then one Markdown table:

* the matrix-multiply peak measured now, float32 (TensorFlow uses TF32 tensor
  cores for it on Ampere and later) and bfloat16;
* Inception-v3 (``core.models.inception``) inference and core-loop train
  steps at batch 64, in float32 and with precision ``mixed`` + XLA, in
  images/s and as a share of the peak of their precision;
* FFN (``core.models.ffn``, the google/ffn size) and MPNN
  (``core.models.mpnn``, QM9-sized molecules) inference rates;
* the multi-replica equivalence check (one GPU against ``MirroredStrategy``
  over all, same weights to 1e-4) where two or more GPUs exist;
* one epoch of ``deepsci.core.training.train`` with precision ``mixed``.

Every rate is ``items / seconds`` of a measured wall time, both written to the
JSON (``--out``). ``--dry-run`` runs every row on the CPU (two logical
devices) with tiny sizes, in seconds, to test the script itself.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("DEEPSCI_PROGRESS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deepsci.core import accelerator  # noqa: E402
from deepsci.core.bench import machine_info, model_flops, table  # noqa: E402
from deepsci.core.io import write_json  # noqa: E402
from deepsci.core.models import ffn, inception, mpnn  # noqa: E402
from deepsci.core.training import TrainConfig, train  # noqa: E402
from deepsci.core.training.loop import Loop  # noqa: E402
from deepsci.core.training.schedules import make_optimizer  # noqa: E402

#: Sizes of a real check and of the dry run.
SIZES = {
    "gpu": {"variant": "v3", "kw": {}, "size": 299, "matmul": 8192, "chain": 8, "ffn": "google",
            "ffn_batch": 64, "molecules": 256, "epoch_steps": 20},
    "dry": {"variant": "small", "kw": {"width": 4, "blocks": (1, 0, 0)}, "size": 32, "matmul": 256,
            "chain": 2, "ffn": "tiny", "ffn_batch": 2, "molecules": 8, "epoch_steps": 2},
}
COLUMNS = ["check", "precision", "xla", "batch", "rate", "unit", "GFLOP/s", "% of peak", "note"]


def _row(check, *, items, seconds, unit, precision="float32", xla=False, batch=None, flops=None,
         peak=None, note=""):
    """One result; ``rate`` is always ``items / seconds`` of a measured time."""
    rate = items / seconds
    row = {"check": check, "precision": precision, "xla": xla, "batch": batch, "items": items,
           "seconds": seconds, "rate": rate, "unit": unit, "note": note}
    if flops is not None:
        row["GFLOP/s"] = flops * rate / 1e9
        row["% of peak"] = 100 * row["GFLOP/s"] / peak if peak else None
    return row


def _timed(fn, repeats: int) -> float:
    """Total wall time of ``repeats`` calls after one warm-up call (compiles)."""
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return time.perf_counter() - t


def _matmul_rows(n: int, chain: int, repeats: int) -> list[dict]:
    rows = []
    for dtype in ("float32", "bfloat16"):
        a = tf.random.normal((n, n), dtype=dtype)
        b = tf.cast(tf.random.normal((n, n)) / np.sqrt(n), dtype)

        @tf.function
        def mm(x, b=b):
            # A chain, so that one call is long enough to time and cannot be folded.
            for _ in range(chain):
                x = tf.linalg.matmul(x, b)
            return x

        seconds = _timed(lambda mm=mm, a=a: mm(a)[0, 0].numpy(), repeats)
        gflop = 2.0 * n**3 * chain * repeats / 1e9
        rows.append(_row(f"matmul {n}²", items=gflop, seconds=seconds, unit="GFLOP/s",
                         precision=dtype, note="peak (float32 uses TF32 on recent GPUs)"))
    return rows


def _classifier(variant: str, size: int, kw: dict) -> keras.Model:
    net = inception.backbone(variant, (size, size, 3), **kw)
    inp = keras.Input((size, size, 3))
    return keras.Model(inp, keras.layers.Dense(2, dtype="float32")(net(inp)))


def _sparse_ce(y, logits):
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)


def _inception_rows(s: dict, batch: int, repeats: int, peaks: dict, strategy) -> list[dict]:
    rows = []
    for precision, xla in (("float32", False), ("mixed", True)):
        policy = accelerator.set_precision(precision, strategy)
        x = tf.random.normal((batch, s["size"], s["size"], 3))
        y = tf.zeros((batch,), tf.int32)
        with strategy.scope():
            model = _classifier(s["variant"], s["size"], s["kw"])
            opt = make_optimizer(TrainConfig(optimizer="sgd", learning_rate=1e-3), 1000)
            opt.build(model.trainable_variables)
        flops = model_flops(model)
        peak = peaks["float32" if policy == "float32" else "bfloat16"]
        infer = tf.function(lambda x, model=model: model(x, training=False), jit_compile=xla)
        seconds = _timed(lambda infer=infer, x=x: infer(x).numpy(), repeats)
        name = f"Inception-{s['variant']} {s['size']}² inference"
        rows.append(_row(name, items=batch * repeats, seconds=seconds, unit="images/s",
                         precision=policy, xla=xla, batch=batch, flops=flops, peak=peak))
        loop = Loop(model, opt, _sparse_ce, strategy, xla=xla)
        data = iter(strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensors((x, y)).repeat()))
        batch_in = next(data)
        seconds = _timed(lambda loop=loop, b=batch_in: loop.reduce(loop.train_step(b)), max(repeats // 2, 1))
        rows.append(_row(f"Inception-{s['variant']} {s['size']}² train step (core loop)",
                         items=batch * max(repeats // 2, 1), seconds=seconds, unit="images/s",
                         precision=policy, xla=xla, batch=batch, flops=3 * flops, peak=peak))
    accelerator.set_precision("float32")
    return rows


def _ffn_rows(s: dict, repeats: int, peaks: dict, strategy) -> list[dict]:
    cfg = ffn.PRESETS[s["ffn"]]
    rows = []
    for precision, xla in (("float32", False), ("mixed", True)):
        policy = accelerator.set_precision(precision, strategy)
        with strategy.scope():
            model = ffn.ffn_model(cfg)
        x = tf.random.normal((s["ffn_batch"], *cfg.fov_size, 2))
        infer = tf.function(lambda x, model=model: model(x, training=False), jit_compile=xla)
        seconds = _timed(lambda infer=infer, x=x: infer(x).numpy(), repeats)
        peak = peaks["float32" if policy == "float32" else "bfloat16"]
        rows.append(_row(f"FFN {s['ffn']} {cfg.fov_size[0]}³ inference", items=s["ffn_batch"] * repeats,
                         seconds=seconds, unit="FOVs/s", precision=policy, xla=xla,
                         batch=s["ffn_batch"], flops=ffn.ffn_flops_per_fov(cfg), peak=peak))
    accelerator.set_precision("float32")
    return rows


def _molecule_batch(n_molecules: int, atoms: int = 18, seed: int = 0) -> dict:
    """A disjoint-union batch of QM9-sized molecules with complete graphs (as Gilmer et al.)."""
    rng = np.random.default_rng(seed)
    local = np.array([(v, w) for v in range(atoms) for w in range(atoms) if v != w], np.int32)
    pairs = np.concatenate([local + m * atoms for m in range(n_molecules)])
    return {"atoms": rng.normal(size=(n_molecules * atoms, 13)).astype("float32"),
            "edges": rng.normal(size=(len(pairs), 6)).astype("float32"),
            "pairs": pairs, "graph": np.repeat(np.arange(n_molecules, dtype=np.int32), atoms)}


def _mpnn_rows(s: dict, repeats: int, strategy) -> list[dict]:
    batch = {k: tf.constant(v) for k, v in _molecule_batch(s["molecules"]).items()}
    with strategy.scope():
        model = mpnn.mpnn(13, 6, 12)
    infer = tf.function(lambda x: model(x, training=False))
    seconds = _timed(lambda: infer(batch).numpy(), repeats)
    return [_row("MPNN (enn-s2s, 18-atom molecules) inference", items=s["molecules"] * repeats,
                 seconds=seconds, unit="molecules/s", batch=s["molecules"])]


def _regression(n=256, d=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    return x, (x @ rng.normal(size=(d, 1))).astype("float32")


def _mlp():
    keras.utils.set_random_seed(11)
    i = keras.Input((8,))
    return keras.Model(i, keras.layers.Dense(1)(keras.layers.Dense(32, activation="tanh")(i)))


def _mse(y, p):
    return tf.reduce_mean(tf.square(y - p), axis=-1)


def _equivalence_row(one_device: str, out: Path) -> dict:
    """Train on one device and mirrored over all; the weights must agree to 1e-4."""
    x, y = _regression()

    def data(ctx, epoch):
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=epoch)
        return ds.batch(ctx.get_per_replica_batch_size(32), drop_remainder=True)

    cfg = TrainConfig(epochs=3, batch_size=32, learning_rate=0.05, tensorboard=False, progress=False)
    # TF32 rounds float32 matmuls to 10 bits of mantissa: the check needs true float32.
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        one = train(_mlp, data, _mse, cfg, out / "one", strategy=accelerator.resolve_strategy(one_device))
        t = time.perf_counter()
        # The cached strategy: a second one over the same devices would reuse its collective keys.
        mirrored = accelerator.resolve_strategy("mirrored")
        two = train(_mlp, data, _mse, cfg, out / "two", strategy=mirrored)
        seconds = time.perf_counter() - t
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(tf32)
    diff = max(float(np.max(np.abs(a - b) / (np.abs(a) + 1e-5)))
               for a, b in zip(one.model.get_weights(), two.model.get_weights(), strict=True))
    row = _row(f"{mirrored.num_replicas_in_sync}-replica equivalence (core loop)",
               items=cfg.epochs * len(x), seconds=seconds, unit="examples/s", batch=32,
               note=f"max rel. weight diff {diff:.2e} against one device")
    row["max_rel_diff"], row["agrees"] = diff, bool(diff < 1e-4)
    return row


def _epoch_row(s: dict, batch: int, out: Path) -> dict:
    """One epoch of the core training loop with precision mixed (compile time included)."""
    rng = np.random.default_rng(0)
    n = batch * s["epoch_steps"]
    # One batch repeated: a whole epoch of 299² images would be gigabytes of host memory.
    x = rng.normal(size=(batch, s["size"], s["size"], 3)).astype("float32")
    y = rng.integers(0, 2, size=batch).astype("int32")
    ds = tf.data.Dataset.from_tensors((x, y)).repeat(s["epoch_steps"])
    cfg = TrainConfig(epochs=1, batch_size=batch, optimizer="sgd", learning_rate=1e-3,
                      tensorboard=False, progress=False)
    t = time.perf_counter()
    result = train(lambda: _classifier(s["variant"], s["size"], s["kw"]), ds, _sparse_ce, cfg, out / "epoch",
                   accelerator=accelerator.AcceleratorConfig(strategy="auto", precision="mixed"))
    seconds = time.perf_counter() - t
    policy = keras.mixed_precision.dtype_policy().name
    accelerator.setup(accelerator.AcceleratorConfig())
    loss = result.history[0]["loss"]
    row = _row(f"one epoch, Inception-{s['variant']} (core loop)", items=n, seconds=seconds,
               unit="images/s", precision=policy, batch=batch,
               note=f"loss {loss:.4g}; incl. compile")
    row["loss"], row["finite"] = loss, bool(np.isfinite(loss))
    return row


def _devices_text(info: dict) -> str:
    """What ``deepsci devices`` prints."""
    lines = [f"tensorflow {info['tensorflow']} (CUDA build: {info['built_with_cuda']})"]
    lines += [f"  {d['type']:4s} {d['name']}" for d in info["physical"]]
    auto = info["auto"]
    lines.append(f"auto -> {auto['strategy']} with {auto['replicas']} replica(s): "
                 f"{', '.join(auto['devices'])}; mixed precision would use {auto['mixed_precision']}")
    return "\n".join(lines)


def _checks(s: dict, args, strategy, work: Path, gpus: list[str]):
    """(name, thunk returning rows) of every check, in order."""
    peaks: dict = {}

    def matmul():
        rows = _matmul_rows(s["matmul"], s["chain"], args.repeats)
        peaks.update({r["precision"]: r["rate"] for r in rows})
        return rows

    replicas = len(gpus) if gpus else len(tf.config.list_logical_devices("CPU")) if args.dry_run else 0
    return [
        ("matmul peak", matmul),
        ("inception", lambda: _inception_rows(s, args.batch, args.repeats, peaks, strategy)),
        ("ffn", lambda: _ffn_rows(s, args.repeats, peaks, strategy)),
        ("mpnn", lambda: _mpnn_rows(s, args.repeats, strategy)),
        ("equivalence", lambda: [_equivalence_row("gpu:0" if gpus else "cpu", work)] if replicas >= 2 else [
            {"check": "2-replica equivalence (core loop)", "note": f"skipped: {len(gpus)} GPU"}]),
        ("epoch", lambda: [_epoch_row(s, args.batch, work)]),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON results.")
    parser.add_argument("--batch", type=int, default=None, help="Images per batch (64; dry run 2).")
    parser.add_argument("--repeats", type=int, default=None, help="Timed calls per rate (10; dry run 2).")
    parser.add_argument("--dry-run", action="store_true", help="CPU only, tiny sizes (seconds).")
    args = parser.parse_args(argv)
    if args.dry_run:
        tf.config.set_visible_devices([], "GPU")
        accelerator.split_cpu(2)
    args.batch = args.batch or (2 if args.dry_run else 64)
    args.repeats = args.repeats or (2 if args.dry_run else 10)
    s = SIZES["dry" if args.dry_run else "gpu"]
    info = accelerator.describe_devices()
    print(_devices_text(info), flush=True)
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    strategy = accelerator.resolve_strategy("gpu:0" if gpus else "cpu")
    rows, errors = [], []
    work = tempfile.TemporaryDirectory(prefix="deepsci-gpu-check-")
    for name, check in _checks(s, args, strategy, Path(work.name), gpus):
        t = time.perf_counter()
        try:
            rows += check()
        except Exception as e:  # noqa: BLE001 - one failing check must not hide the others
            errors.append({"check": name, "error": f"{type(e).__name__}: {e}",
                           "traceback": traceback.format_exc()[-3000:]})
            print(f"check {name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        print(f"[{name}: {time.perf_counter() - t:.1f} s]", file=sys.stderr, flush=True)
    work.cleanup()
    report = {"date": datetime.date.today().isoformat(), "dry_run": args.dry_run,
              "machine": machine_info(), "devices": info, "rows": rows, "errors": errors}
    write_json(args.out, report)
    print(f"\n## core: GPU check ({report['date']}, {info['tensorflow']}, "
          f"{', '.join(gpus) or 'no GPU'}{', dry run' if args.dry_run else ''})\n")
    print(table(rows, COLUMNS))
    bad = [r for r in rows if r.get("agrees") is False or r.get("finite") is False]
    return 1 if errors or bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
