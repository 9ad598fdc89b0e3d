"""Issue 15 bench for retinopathy: distilled small Inception and int8 LiteRT beside the shipped ensemble.

Rows (all through the product: ``synth``, ``distill``, ``train``, ``export``,
``evaluate`` and the app's predictor): the shipped 3-member
``retinopathy-synthetic-demo`` (the teacher, fp32), its member 0 (fp32 and
int8), the distilled width-8 student (fp32 and int8) and the same student
architecture trained on hard labels only by ``retinopathy train``. Metrics:
referable AUC and quadratic-weighted kappa from ``retinopathy evaluate`` on
held-out synthetic photographs of seed 31 (no model here trained on it; the
shipped model used 11/12, the students learn from seed 11 photographs).

Also Hinton et al.'s 3 %-of-the-data experiment: the student on soft targets
(alpha 0.7, T 3) against hard targets (alpha 0) on the same 3 % of the
training patients, same loop, same epochs (quick mode: 10 % of a tiny set).

Throughput: images/s of preprocessed (N, S, S, 3) inputs through the app's
predictor, batch 16 for every row, all on this machine's cores, models
interleaved in each of several repeats (median). FLOPs: counted by layer
(2 x multiply-adds of every Conv2D/Dense, batch norm and pooling left out),
the sum over members for an ensemble; an int8 file does the same operations
in integers. Start-up: loading the model and its first batch, in a process
that has already imported TensorFlow.

``python bench/compress_retinopathy.py [--quick]`` prints the table as JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DEEPSCI_PROGRESS", "0")

SHIPPED = "retinopathy-synthetic-demo"
FULL = {"train_patients": 300, "test_patients": 100, "epochs": 12, "repeats": 5, "samples": 256,
        "check": 128, "fraction": 0.03}
QUICK = {"train_patients": 24, "test_patients": 20, "epochs": 2, "repeats": 3, "samples": 32,
         "check": 16, "fraction": 0.1}
BATCH, WIDTH, TRAIN_SEED, TEST_SEED = 16, 8, 11, 31


def _flops(path: Path) -> int:
    """2 x multiply-adds of the Conv2D and Dense layers of one .keras model, per image."""
    import keras

    from deepsci.core.models.serialization import load_model

    model, _ = load_model(path)
    total = 0

    def walk(layer):
        nonlocal total
        for sub in getattr(layer, "layers", []):
            walk(sub)
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            _, h, w, cout = layer.output.shape
            cin = layer.input.shape[-1] // layer.groups
            total += 2 * kh * kw * cin * cout * h * w
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])

    walk(model)
    return int(total)


def _data(work: Path, cfg: dict) -> tuple[Path, Path]:
    from deepsci.apps.retinopathy.synth import SynthConfig, run_synth

    for name, n, seed in (("train", cfg["train_patients"], TRAIN_SEED),
                          ("test", cfg["test_patients"], TEST_SEED)):
        if not (work / name / "trainLabels.csv").is_file():
            run_synth(SynthConfig(out=work / name, n_patients=n, size=384, seed=seed), overwrite=True)
    return work / "train" / "trainLabels.csv", work / "test" / "trainLabels.csv"


def _students(work: Path, cfg: dict, teacher: str, train_csv: Path) -> dict[str, Path]:
    from deepsci.apps.retinopathy.compress import DistillConfig, distill
    from deepsci.apps.retinopathy.io import DatasetSpec
    from deepsci.apps.retinopathy.model import APP, TASK
    from deepsci.apps.retinopathy.preprocess import PreprocessConfig
    from deepsci.apps.retinopathy.train import RetinopathyConfig, _train_defaults, run_train
    from deepsci.core.compress import DistillSettings
    from deepsci.core.models.card import read_card

    tcfg = dataclasses.replace(_train_defaults(), epochs=cfg["epochs"], batch_size=BATCH,
                               progress=False, tensorboard=False)
    data = DatasetSpec(labels=train_csv)
    common = {"data": data, "train": tcfg, "width": WIDTH, "val_frac": 0.2, "test_frac": 0.0,
              "cache_dir": work / "cache"}
    out = {}
    for name, alpha, fraction in (("student", 0.7, 1.0), ("soft_frac", 0.7, cfg["fraction"]),
                                  ("hard_frac", 0.0, cfg["fraction"])):
        out[name] = work / name
        distill(DistillConfig(out=out[name], distill=DistillSettings(teacher=teacher, alpha=alpha),
                              fraction=fraction, **common))
    member = sorted(Path(teacher).glob("member_*/model.keras"))[0]
    card = read_card(member, expect=APP, task=TASK)
    out["hard"] = work / "hard"
    run_train(RetinopathyConfig(out=out["hard"], preprocess=PreprocessConfig(**card.preprocessing),
                                ensemble=1, balance="none", dme_head="yes", **common))
    return out


def _export(src: Path, out: Path, train_csv: Path, cfg: dict) -> Path:
    from deepsci.apps.retinopathy.compress import export
    from deepsci.core.compress import ExportConfig

    if not out.is_file():
        export(ExportConfig(model=str(src), out=out, quantize="int8", inputs=train_csv,
                            samples=cfg["samples"], check=cfg["check"], batch_size=BATCH),
               overwrite=True)
    return out


def _evaluate(model: Path, test_csv: Path, out: Path, cache: Path) -> dict:
    from deepsci.apps.retinopathy.evaluate import EvaluateConfig, run_evaluate
    from deepsci.apps.retinopathy.io import DatasetSpec

    m = run_evaluate(EvaluateConfig(out=out, model=model, data=DatasetSpec(labels=test_csv),
                                    split="test", n_boot=200, cache_dir=cache), overwrite=True)
    return {"referable_auc": round(m["auc"], 4), "kappa": round(m["kappa"], 4), "n": m["n"]}


def _speed(models: dict[str, Path], x, repeats: int) -> tuple[dict, dict]:
    """Images/s (median of interleaved repeats) and start-up seconds per model."""
    from deepsci.apps.retinopathy.predict import load_members, predict_arrays

    loaded, startup = {}, {}
    for name, path in models.items():
        t = time.perf_counter()
        loaded[name] = load_members([path] if Path(path).is_file() else path, batch_size=BATCH)
        predict_arrays(loaded[name], x[:BATCH])
        startup[name] = time.perf_counter() - t
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, ens in loaded.items():
            t = time.perf_counter()
            predict_arrays(ens, x)
            times[name].append(time.perf_counter() - t)
    return ({k: len(x) / statistics.median(v) for k, v in times.items()}, startup)


def _bytes(path: Path) -> int:
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("member_*/model.keras"))
    return int(sum(f.stat().st_size for f in files))


def rows(quick: bool = False, work: str | os.PathLike | None = None) -> dict:
    """The issue-15 table for retinopathy (see the module docstring)."""
    from deepsci.apps.retinopathy.io import DatasetSpec, read_dataset
    from deepsci.apps.retinopathy.model import APP, TASK
    from deepsci.apps.retinopathy.preprocess import load_cached, to_input
    from deepsci.core.models.registry import resolve_model

    cfg = QUICK if quick else FULL
    work = Path(work or tempfile.mkdtemp(prefix="deepsci-compress-retino-"))
    t0 = time.perf_counter()
    teacher = resolve_model(SHIPPED, app=APP, task=TASK, say=None)
    train_csv, test_csv = _data(work, cfg)
    students = _students(work, cfg, teacher, train_csv)
    member = Path(teacher) / "member_0" / "model.keras"
    models = {
        "teacher ensemble fp32 (shipped, 3 x width 16)": Path(teacher),
        "single model fp32 (member 0)": member,
        "single model int8 LiteRT": _export(member, work / "single_int8.tflite", train_csv, cfg),
        f"distilled student fp32 (width {WIDTH})": students["student"] / "member_0" / "model.keras",
        "distilled student int8 LiteRT": _export(students["student"] / "member_0" / "model.keras",
                                                 work / "student_int8.tflite", train_csv, cfg),
        f"hard-label student fp32 (width {WIDTH}, retinopathy train)": students["hard"],
    }
    metrics = {name: _evaluate(path, test_csv, work / "eval" / f"m{i}", work / "cache")
               for i, (name, path) in enumerate(models.items())}
    held_out = read_dataset(DatasetSpec(labels=test_csv))
    # Throughput does not depend on which photographs: any preprocessed ones of the shared cache.
    cached = sorted((work / "cache").glob("*.png"))[: max(BATCH * 4, 64)]
    x = to_input(load_cached([str(p) for p in cached]))
    speed, startup = _speed(models, x, cfg["repeats"])
    flops = {"member": _flops(member), "student": _flops(students["student"] / "member_0" / "model.keras")}
    table = []
    for name, path in models.items():
        f = flops["member"] * 3 if "ensemble" in name else (
            flops["member"] if "single" in name else flops["student"])
        table.append({"model": name, **metrics[name], "items_per_s": round(speed[name], 1),
                      "bytes": _bytes(path), "flops": f, "startup_s": round(startup[name], 2)})
    frac = {name: _evaluate(students[name], test_csv, work / "eval" / name, work / "cache")
            for name in ("soft_frac", "hard_frac")}
    notes = _notes(table, frac, cfg, len(held_out), time.perf_counter() - t0, len(x))
    return {"app": "retinopathy", "rows": table, "fraction_experiment": {
        "fraction_of_training_patients": cfg["fraction"],
        "soft targets (alpha 0.7, T 3)": frac["soft_frac"], "hard targets (alpha 0)": frac["hard_frac"]},
        "notes": notes, "work": str(work)}


def _notes(table: list[dict], frac: dict, cfg: dict, n_test: int, seconds: float, n_speed: int) -> list:
    by = {r["model"].split(" (")[0]: r for r in table}
    s32, s8 = by["distilled student fp32"], by["distilled student int8 LiteRT"]
    m32, m8 = by["single model fp32"], by["single model int8 LiteRT"]
    notes = [f"held-out: {n_test} synthetic photographs of seed {TEST_SEED}; students on seed "
             f"{TRAIN_SEED} ({cfg['train_patients']} patients, {cfg['epochs']} epochs)",
             f"throughput: {n_speed} images, batch {BATCH}, {os.cpu_count()} cores, median of "
             f"{cfg['repeats']} interleaved repeats"]
    for label, fp, q in (("student", s32, s8), ("member 0", m32, m8)):
        speedup, smaller = q["items_per_s"] / fp["items_per_s"], fp["bytes"] / q["bytes"]
        loss = fp["referable_auc"] - q["referable_auc"]
        met = speedup >= 2.5 and loss <= 0.005 and smaller >= 3.5
        notes.append(f"int8 goal ({label}): {speedup:.2f}x throughput (goal >= 2.5), AUC loss "
                     f"{loss:+.4f} (goal <= 0.005), {smaller:.2f}x smaller (goal >= 3.5): "
                     f"{'met' if met else 'NOT met'}")
    notes.append(f"student FLOPs {s32['flops'] / by['teacher ensemble fp32']['flops']:.3f} of the "
                 "teacher ensemble's")
    notes.append(f"{cfg['fraction']:.0%} experiment: soft AUC {frac['soft_frac']['referable_auc']}"
                 f" / kappa {frac['soft_frac']['kappa']} vs hard AUC "
                 f"{frac['hard_frac']['referable_auc']} / kappa {frac['hard_frac']['kappa']}")
    notes.append(f"bench wall time {seconds:.0f} s")
    return notes


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    print(json.dumps(rows(quick=args.quick, work=args.work), indent=2))
