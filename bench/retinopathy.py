"""Benchmark of the retinopathy app: preprocessing and inference speed, held-out screening accuracy.

Measured side by side in one run on this machine:

* preprocessing images/s (decode JPEG, find the field of view, crop, rescale,
  local contrast, gradability, cached PNG write) on full-size 1411-px fundus
  JPEGs (``skimage.data.retina`` variants) and on the synthetic set, next to a
  plain scikit-image pipeline (``skimage.io.imread`` + ``transform.resize`` +
  ``filters.gaussian``) doing less work on the same files;
* inference images/s and GFLOP/s of the small Inception and full Inception-v3
  at 299 px (and the trained model at its own size), against the measured
  float32 matmul peak;
* referable-DR AUC (bootstrap 95 % CI), quadratic kappa and both operating
  points on a held-out synthetic set generated with a seed (``--test-seed``)
  never used in training; operating points are chosen on the validation
  patients of the training set and applied unchanged.

Usage::

    python bench/retinopathy.py [--train-patients 300] [--test-patients 100]
        [--synth-size 384] [--size 128] [--width 16] [--epochs 12] [--work DIR]
        [--skip-train] [--out bench/RESULTS.retinopathy.md] [--no-record]

The goal rows measured (held-out accuracy unless ``--skip-accuracy``, preprocessing speed)
replace their rows in ``bench/results/retinopathy.json`` and ``bench/RESULTS.md``
(:func:`result_rows`); ``--no-record`` only prints.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DEEPSCI_PROGRESS", "0")

GULSHAN = "Gulshan et al. 2016: {} on EyePACS-1 (real photographs, not comparable)"
#: Options left out of the recorded command (scratch and output paths).
_UNRECORDED = {"--work", "--out"}


def result_rows(measured: dict) -> list[dict]:
    """The goal rows of ``bench/results/retinopathy.json`` from one run's figures.

    ``measured["accuracy"]`` (None when skipped): ``n`` (held-out photographs), ``members``,
    ``width``, ``size``, ``auc``, ``auc_ci_low``, ``auc_ci_high``, ``kappa`` and
    ``high_sensitivity`` / ``high_specificity`` (each ``sensitivity``, ``specificity``);
    ``measured["preprocessing"]``: ``images_per_s``, ``per_cpu_s`` (1 thread, 1411-px JPEGs)
    and ``peer_images_per_s`` (the scikit-image pipeline on the same files).
    """
    rows = []
    acc = measured.get("accuracy")
    if acc:
        k = acc["members"]
        models = (f"ensemble of {k} small Inceptions" if k > 1 else "one small Inception")
        rows.append({
            "metric": f"referable-DR ROC AUC (95 % CI), held-out synthetic set ({acc['n']} "
                      f"photographs), {models} (width {acc['width']}, {acc['size']} px)",
            "deepsci": f"{acc['auc']:.4f} ({acc['auc_ci_low']:.4f}–{acc['auc_ci_high']:.4f})",
            "peer": "limit 1.0; " + GULSHAN.format("0.991"), "goal": ">= 0.98",
            "met": bool(acc["auc"] >= 0.98)})
        for point, peer in (("sensitivity", "97.5 % / 93.4 %"), ("specificity", "90.3 % / 98.1 %")):
            op = acc[f"high_{point}"]
            rows.append({
                "metric": f"sensitivity / specificity at the high-{point} operating point "
                          "(chosen on validation patients)",
                "deepsci": f"{100 * op['sensitivity']:.1f} % / {100 * op['specificity']:.1f} %",
                "peer": GULSHAN.format(peer), "goal": None, "met": None})
        rows.append({"metric": "quadratic weighted kappa of the ICDR grade, held-out synthetic set",
                     "deepsci": round(float(acc["kappa"]), 4), "peer": "limit 1.0",
                     "goal": None, "met": None})
    prep = measured["preprocessing"]
    rows.append({
        "metric": "preprocessing, 1411-px JPEG photographs, 1 thread (decode, field of view, crop, "
                  "rescale, contrast, gradability, cache)",
        "deepsci": f"{prep['images_per_s']:.4g} images/s ({prep['per_cpu_s']:.4g} per CPU-s)",
        "peer": "scikit-image read + resize + gaussian (no field of view, no cache): "
                f"{prep['peer_images_per_s']:.4g} images/s",
        "goal": ">= 20 images/s", "met": bool(prep["images_per_s"] >= 20)})
    return rows


def record_command(argv: list[str]) -> str:
    """This run's command as ``bench/results`` records it: scratch and output paths left out."""
    words, rest = [], list(argv)
    while rest:
        word = rest.pop(0)
        name, eq, _ = word.partition("=")
        if name in _UNRECORDED:
            if not eq and rest:
                rest.pop(0)
        elif name != "--no-record":
            words.append(word)
    return shlex.join(["python", f"bench/{Path(__file__).name}", *words])


def _record(rows: list[dict], argv: list[str]) -> None:
    """Replace the rows of the same metric in ``bench/results/retinopathy.json`` and the page."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from render_results import write_app_results

    from deepsci.core.bench import machine_info, machine_line

    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    machine = (f"{machine_line()}, TensorFlow {machine_info().get('tensorflow')}; load average "
               f"{load} at the end of the run (1/5/15 min)")
    cmd = record_command(argv)
    path = write_app_results("retinopathy", [{**r, "command": cmd} for r in rows], machine=machine)
    print(f"recorded {len(rows)} row(s) in {path}")


def inference_speed(model, size: int, batch: int, repeats: int = 3) -> dict:
    """Images/s and GFLOP/s of the app's inference path (the core's fixed-signature predictor)."""
    from deepsci.core.bench import model_flops, timeit
    from deepsci.core.predict import predictor

    x = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    fn = predictor(model, batch_size=batch)
    best = timeit(lambda: fn(x), repeats=repeats)
    flops = model_flops(model) * batch
    return {"images_per_s": batch / best, "gflops": flops / best / 1e9,
            "gflop_per_image": flops / batch / 1e9}


def retina_jpegs(folder: Path, n: int) -> list[Path]:
    """Full-size (1411 px) fundus JPEGs: the real retina, rotated/flipped/re-lit."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    base = Image.fromarray(data.retina())
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        im = base.rotate(float(rng.uniform(-20, 20)))
        if i % 2:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.clip(np.asarray(im, np.float32) * rng.uniform(0.7, 1.2), 0, 255).astype(np.uint8)
        p = folder / f"retina_{i}.jpeg"
        Image.fromarray(arr).save(p, quality=92)
        paths.append(p)
    return paths


def skimage_baseline(paths: list[Path], size: int) -> tuple[float, float]:
    """(images per wall-clock second, per CPU second) of a plain scikit-image pipeline:
    read, resize the whole frame, subtract a blurred copy."""
    from skimage import filters, io, transform

    t, c = time.perf_counter(), time.process_time()
    for p in paths:
        img = io.imread(p)
        small = transform.resize(img, (size, size), anti_aliasing=True)
        _ = 4 * (small - filters.gaussian(small, sigma=size / 30, channel_axis=-1)) + 0.5
    return len(paths) / (time.perf_counter() - t), len(paths) / (time.process_time() - c)


def preprocessing_speed(paths: list[Path], size: int, cache: Path, workers: int
                        ) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process)."""
    import pandas as pd

    from deepsci.apps.retinopathy.preprocess import PreprocessConfig, preprocess_table

    df = pd.DataFrame({"image": [p.stem for p in paths], "path": [str(p) for p in paths]})
    t, c = time.perf_counter(), time.process_time()
    preprocess_table(df, PreprocessConfig(size=size), cache, workers=workers)
    return len(paths) / (time.perf_counter() - t), len(paths) / (time.process_time() - c)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/deepsci-bench-retinopathy")
    p.add_argument("--train-patients", type=int, default=300)
    p.add_argument("--test-patients", type=int, default=100)
    p.add_argument("--train-seed", type=int, default=11)
    p.add_argument("--test-seed", type=int, default=2026)
    p.add_argument("--synth-size", type=int, default=384)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--ensemble", type=int, default=1)
    p.add_argument("--n-prep", type=int, default=40, help="Images for the speed measurements.")
    p.add_argument("--infer-batch", type=int, default=8)
    p.add_argument("--skip-train", action="store_true", help="Reuse the model in --work.")
    p.add_argument("--skip-v3", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true",
                   help="Only the speed measurements (preprocessing, inference).")
    p.add_argument("--out", default=None, help="Write the results section here.")
    p.add_argument("--no-record", action="store_true",
                   help="Do not write bench/results/retinopathy.json (and bench/RESULTS.md).")
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)

    from deepsci.apps.retinopathy.evaluate import EvaluateConfig, run_evaluate
    from deepsci.apps.retinopathy.io import DatasetSpec
    from deepsci.apps.retinopathy.model import build_model
    from deepsci.apps.retinopathy.predict import load_trained
    from deepsci.apps.retinopathy.preprocess import PreprocessConfig
    from deepsci.apps.retinopathy.synth import SynthConfig, run_synth
    from deepsci.apps.retinopathy.train import RetinopathyConfig, run_train
    from deepsci.core.bench import machine_info, matmul_peak_gflops, table
    from deepsci.core.training import TrainConfig

    work = Path(args.work)
    info = machine_info()
    t0 = time.perf_counter()

    # ---- held-out and training sets (different seeds)
    if not (work / "train" / "trainLabels.csv").is_file():
        run_synth(SynthConfig(out=work / "train", n_patients=args.train_patients,
                              size=args.synth_size, seed=args.train_seed))
    if not (work / "heldout" / "trainLabels.csv").is_file():
        run_synth(SynthConfig(out=work / "heldout", n_patients=args.test_patients,
                              size=args.synth_size, seed=args.test_seed))

    # ---- preprocessing speed
    big = retina_jpegs(work / "retina_jpegs", args.n_prep)
    synth = sorted((work / "heldout" / "train").glob("*.jpeg"))[: args.n_prep]
    prep_rows, measured = [], {"accuracy": None}
    for name, paths in (("retina variants, 1411x1411 JPEG", big),
                        (f"synthetic set, ~{args.synth_size} px fundus JPEG", synth)):
        for workers in (1, 2):
            cache = work / f"speed_cache_{len(prep_rows)}"
            if cache.exists():
                import shutil

                shutil.rmtree(cache)
            wall, cpu = preprocessing_speed(paths, 299, cache, workers)
            prep_rows.append({"input": name, "pipeline": f"deepsci preprocess, {workers} thread(s)",
                              "images/s": wall, "images per CPU-s": cpu})
            if paths is big and workers == 1:
                measured["preprocessing"] = {"images_per_s": wall, "per_cpu_s": cpu}
        wall, cpu = skimage_baseline(paths[:10], 299)
        prep_rows.append({"input": name,
                          "pipeline": "scikit-image read+resize+gaussian (no FOV, no cache)",
                          "images/s": wall, "images per CPU-s": cpu})
        if paths is big:
            measured["preprocessing"]["peer_images_per_s"] = wall

    # ---- training + held-out evaluation
    spec = DatasetSpec(labels=work / "train" / "trainLabels.csv")
    model_dir = work / "model"
    train_seconds = None
    reused = (model_dir / "member_0" / "model.keras").is_file()
    if not args.skip_train:
        t = time.perf_counter()
        run_train(RetinopathyConfig(
            out=model_dir, data=spec, preprocess=PreprocessConfig(size=args.size),
            width=args.width,
            ensemble=args.ensemble,
            train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                              lr_schedule="cosine", monitor="val_referable_auc", mode="max",
                              restore_best=False,
                              tensorboard=False),
            val_frac=0.2, test_frac=0.0, cache_dir=work / "cache"))
        train_seconds = time.perf_counter() - t
    acc_section: list[str] = []
    if not args.skip_accuracy:
        m = run_evaluate(EvaluateConfig(
            model=model_dir, out=work / "eval_heldout",
            data=DatasetSpec(labels=work / "heldout" / "trainLabels.csv"),
            cache_dir=work / "cache"))
        ens = json.loads((model_dir / "ensemble.json").read_text())
        # The model as trained (--skip-train reuses one), not this run's options.
        run_cfg = (json.loads((model_dir / "run.json").read_text()).get("config") or {}
                   if (model_dir / "run.json").is_file() else {})
        measured["accuracy"] = {
            **{k: m[k] for k in ("n", "auc", "auc_ci_low", "auc_ci_high", "kappa",
                                 "high_sensitivity", "high_specificity")},
            "members": len(ens.get("members", [])) or args.ensemble,
            "width": run_cfg.get("width", args.width),
            "size": (run_cfg.get("preprocess") or {}).get("size", args.size)}
        acc_rows = [{
            "held-out set": f"seed {args.test_seed}, {m['n']} images ({m['n_referable']} referable)",
            "referable AUC (95% CI)": f"{m['auc']:.4f} ({m['auc_ci_low']:.4f}-{m['auc_ci_high']:.4f})",
            "kappa": m["kappa"],
            "high-sens point sens/spec": f"{100 * m['high_sensitivity']['sensitivity']:.1f}% / "
                                         f"{100 * m['high_sensitivity']['specificity']:.1f}%",
            "high-spec point sens/spec": f"{100 * m['high_specificity']['sensitivity']:.1f}% / "
                                         f"{100 * m['high_specificity']['specificity']:.1f}%",
            "goal AUC >= 0.98": "met" if m["auc"] >= 0.98 else "NOT met",
        }]
        acc_section = [
            "### Held-out screening accuracy (synthetic, seed never used in training)",
            "",
            f"Trained on {ens['counts']['train']} images ({args.train_patients} patients, seed "
            f"{args.train_seed}), operating points from {ens['counts']['val']} validation "
            f"images; small Inception width {args.width} at {args.size} px, {args.epochs} "
            f"epochs, ensemble {args.ensemble}"
            + (f", training took {train_seconds:.0f} s" if train_seconds else "")
            + (" (members already in the model directory were reused; operating points "
               "re-chosen)" if reused else "") + ".",
            "",
            table(acc_rows, list(acc_rows[0])),
            "",
        ]

    # ---- inference speed, next to a matmul peak measured under the same load
    peak = matmul_peak_gflops()
    models = load_trained(model_dir)[0].models
    inf_rows = []
    candidates = [(f"trained small Inception (width {args.width})", models[0], args.size),
                  ("small Inception (width 32)", None, 299)]
    if not args.skip_v3:
        candidates.append(("Inception-v3", "v3", 299))
    heads = {"grade": 5, "referable": 1}
    for name, model, size in candidates:
        if model is None:
            model = build_model(size, heads, variant="small", width=32)
        elif model == "v3":
            model = build_model(size, heads, variant="v3")
        r = inference_speed(model, size, args.infer_batch)
        inf_rows.append({"model": name, "input px": size, "batch": args.infer_batch,
                         "images/s": r["images_per_s"], "GFLOP/image": r["gflop_per_image"],
                         "GFLOP/s": r["gflops"], "% of matmul peak": 100 * r["gflops"] / peak})

    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    # The machine is shared: report how busy it was so the numbers can be read.
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [
        "## retinopathy",
        "",
        f"{date}, {info.get('cores')} CPU cores ({info.get('cpu', info.get('cpu_model', ''))}), "
        f"TensorFlow {info.get('tensorflow', '')}; float32 matmul peak measured now: "
        f"{peak:.1f} GFLOP/s; load average (1, 5, 15 min) at the end: {load}. "
        f"Command: `python bench/retinopathy.py "
        f"{' '.join(argv)}`",
        "",
        "### Preprocessing (goal >= 20 images/s)",
        "",
        "Wall-clock images/s depend on what else runs on the shared cores; images per "
        "CPU-second (this process's CPU time) is what the code costs.",
        "",
        table(prep_rows, ["input", "pipeline", "images/s", "images per CPU-s"]),
        "",
        *acc_section,
        "### Inference on 2 CPU cores",
        "",
        table(inf_rows, ["model", "input px", "batch", "images/s", "GFLOP/image", "GFLOP/s",
                         "% of matmul peak"]),
        "",
        f"Total benchmark wall time {time.perf_counter() - t0:.0f} s.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        from deepsci.core.io import write_text

        write_text(args.out, text)
    if not args.no_record:
        _record(result_rows(measured), argv)


if __name__ == "__main__":
    main()
