"""Pathology benchmarks: heatmap throughput, slide reading, FROC / slide AUC on held-out slides.

Prints Markdown tables (``deepsci.core.bench.table``), side by side in one run:

1. ``heatmap`` tissue-tile throughput (tiles/s, level-0 megapixels/s, achieved
   GFLOP/s and % of the matmul peak measured now) for the small and the full
   Inception-v3, in one process on all cores and with 2 Dask workers;
2. reading throughput on the real SVS (OpenSlide ``read_region`` patches vs
   tifffile decoding the whole level 0, the peer reader);
3. FROC and slide AUC on held-out synthetic slides (a seed never used in training).

Usage::

    python bench/pathology.py                 # full settings
    python bench/pathology.py --quick         # reduced settings (minutes)
    python bench/pathology.py --results bench/RESULTS.pathology.md
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REAL_SVS = Path(__file__).resolve().parents[2] / "shared" / "data" / "pathology" / "cmu_small_region.svs"


def model_flops(model) -> float:
    """Forward multiply-add FLOPs (x2) of one example through conv and dense layers."""
    import keras

    total = 0.0
    for layer in _layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            _, ho, wo, co = layer.output.shape
            kh, kw = layer.kernel_size
            ci = layer.input.shape[-1]
            total += 2.0 * ho * wo * co * kh * kw * ci / layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += 2.0 * layer.input.shape[-1] * layer.units
    return total


def _layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _layers(layer)
        else:
            yield layer


def _save_untrained(path: Path, variant: str, patch: int, width: int, mags=(20.0,)) -> tuple[Path, float]:
    # Throughput does not depend on the weights: an untrained model of the
    # same architecture is timed, so the benchmark needs no training run.
    from deepsci.apps.pathology.patches import PatchConfig
    from deepsci.apps.pathology.train import PathologyTrainConfig, build_model
    from deepsci.core.models.serialization import save_model

    cfg = PathologyTrainConfig(slides=".", out_dir=".", variant=variant, width=width,
                               patch=PatchConfig(patch_size=patch, magnifications=mags, center_size=32))
    model = build_model(cfg)
    save_model(model, path, sidecar={"app": "pathology", "input_spec": {
        "patch_size": patch, "magnifications": list(mags), "center_size": 32}})
    return path, model_flops(model)


def bench_heatmap(work: Path, args, peak: float) -> list[dict]:
    from deepsci.apps.pathology.heatmap import HeatmapConfig, run_heatmaps
    from deepsci.apps.pathology.synth import SynthConfig, make_slides
    from deepsci.core.bench import matmul_peak_gflops

    slides = work / "hm_slides"
    make_slides(slides, n_tumour=args.hm_slides // 2, n_normal=args.hm_slides - args.hm_slides // 2,
                seed=99, config=SynthConfig(width=args.hm_size, height=args.hm_size, mpp=0.5))
    rows = []
    variants = [("small", args.small_patch, 16)]
    if not args.skip_v3:
        variants.append(("v3", 299, 0))
    for variant, patch, width in variants:
        model, flops = _save_untrained(work / f"{variant}.keras", variant, patch, width)
        # stride: one window per patch-centre region of 32 px, or 128 px for 299-px v3 patches (Liu et al.)
        stride = 32 if variant == "small" else 128
        for mode, scheduler, workers, threads in (("1 process, 2 threads", "inline", None, 2),
                                                  ("2 Dask workers x 1 thread", "local", 2, 1)):
            out = work / f"hm_{variant}_{scheduler}"
            # The cores are shared, so the peak is re-measured next to each row
            # and the row is compared with the peak of its own moment.
            peak = matmul_peak_gflops(repeats=3)
            t0 = time.perf_counter()
            res = run_heatmaps(HeatmapConfig(model=str(model), slides=str(slides), out_dir=str(out),
                                             stride=stride, batch_size=args.batch, scheduler=scheduler,
                                             workers=workers, threads=threads))
            wall = time.perf_counter() - t0
            tiles = sum(r["tiles"] for r in res.values())
            mpx = sum(r["level0_megapixels"] for r in res.values())
            compute = sum(r["seconds"] for r in res.values())
            # inline: time inside the slides; Dask: wall time incl. worker start and model load
            secs = compute if scheduler == "inline" else wall
            rate = tiles / secs
            gflops = rate * flops / 1e9
            in_slide = tiles / (compute / (workers or 1))
            rows.append({"model": f"{variant} Inception ({patch}px)", "mode": mode, "tiles": tiles,
                         "tiles/s": rate, "tiles/s in-slide": in_slide, "level-0 MP/s": mpx / secs, "GFLOP/tile": flops / 1e9,
                         "GFLOP/s": gflops, "matmul peak GFLOP/s": peak,
                         "% of matmul peak": 100 * gflops / peak,
                         "seconds": secs})
            print(f"  heatmap {variant} {mode}: {rate:.1f} tiles/s", flush=True)
    return rows


def bench_reading(path: Path, patch: int = 256, n: int = 400) -> list[dict]:
    import numpy as np
    import tifffile

    from deepsci.apps.pathology.io import Slide
    from deepsci.apps.pathology.tissue import slide_tissue

    rows = []
    with Slide(path) as s:
        w, h = s.dimensions
        rng = np.random.default_rng(0)
        xs, ys = rng.integers(0, w - patch, n), rng.integers(0, h - patch, n)
        t = time.perf_counter()
        for x, y in zip(xs, ys, strict=True):
            s.read_region((x, y), 0, (patch, patch))
        dt_ = time.perf_counter() - t
        rows.append({"reader": f"OpenSlide read_region, random {patch}px patches", "items/s": n / dt_,
                     "MP/s": n * patch * patch / 1e6 / dt_})
        t = time.perf_counter()
        tiles = 0
        for y in range(0, h, patch):
            for x in range(0, w, patch):
                s.read_region((x, y), 0, (patch, patch))
                tiles += 1
        dt_ = time.perf_counter() - t
        rows.append({"reader": f"OpenSlide read_region, whole slide in {patch}px tiles", "items/s": tiles / dt_,
                     "MP/s": w * h / 1e6 / dt_})
        t = time.perf_counter()
        mask, _ = slide_tissue(s)
        dt_ = time.perf_counter() - t
        rows.append({"reader": f"tissue detection (Otsu on saturation, {mask.mean():.0%} tissue)",
                     "items/s": 1 / dt_, "MP/s": w * h / 1e6 / dt_})
    t = time.perf_counter()
    with tifffile.TiffFile(path) as tif:
        img = tif.pages[0].asarray()
    dt_ = time.perf_counter() - t
    rows.append({"reader": "tifffile + imagecodecs, decode whole level 0 (peer)", "items/s": 1 / dt_,
                 "MP/s": img.shape[0] * img.shape[1] / 1e6 / dt_})
    return rows


def bench_accuracy(work: Path, args) -> tuple[list[dict], dict]:
    from deepsci.apps.pathology.demo import DemoSettings, run_pipeline

    s = DemoSettings(quick=False)
    s.size = args.size
    s.n_train = (args.train_tumour, args.train_normal)
    s.n_test = (args.test_tumour, args.test_normal)
    s.epochs, s.patches, s.width, s.patch = args.epochs, args.patches, args.width, args.patch
    s.stride = args.stride
    t = time.perf_counter()
    r = run_pipeline(work / "accuracy", s, train_seed=0, test_seed=1)
    m = r["metrics"]
    row = {"held-out slides": m["slides"], "lesions": m["lesions"], "FROC": m["froc"],
           **{f"sens@{k}": v for k, v in m["sensitivity_at"].items()},
           "slide AUC": m.get("slide_auc"), "patch val AUC": (r["history"][-1] or {}).get("val_auc"),
           "minutes": (time.perf_counter() - t) / 60}
    settings = (f"train seed 0: {s.n_train[0]} tumour + {s.n_train[1]} normal slides, test seed 1: "
                f"{s.n_test[0]} + {s.n_test[1]}; {s.size}x{s.size} px at 0.5 um/px; small Inception "
                f"width {s.width}, {s.patch}px 20x patches, {s.epochs} epochs x {s.patches} patches; "
                f"heatmap stride {s.stride}px; NMS threshold 0.1, radius 100 um; evaluation level 5")
    return [row], {"settings": settings}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="reduced settings")
    p.add_argument("--skip-v3", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--skip-heatmap", action="store_true")
    p.add_argument("--hm-slides", type=int, default=4)
    p.add_argument("--hm-size", type=int, default=2048)
    p.add_argument("--small-patch", type=int, default=96)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--train-tumour", type=int, default=6)
    p.add_argument("--train-normal", type=int, default=4)
    p.add_argument("--test-tumour", type=int, default=5)
    p.add_argument("--test-normal", type=int, default=5)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--patches", type=int, default=1536)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--stride", type=int, default=32)
    p.add_argument("--results", type=Path, help="also write the Markdown to this file")
    args = p.parse_args()
    if args.quick:
        args.hm_slides, args.hm_size = 2, 1024
        args.train_tumour, args.train_normal, args.test_tumour, args.test_normal = 3, 2, 3, 3
        args.epochs, args.patches, args.size = 3, 768, 1536

    os.environ.setdefault("DEEPSCI_PROGRESS", "0")
    from deepsci.core.bench import machine_info, matmul_peak_gflops, table

    info = machine_info()
    peak = matmul_peak_gflops()
    print(f"matmul peak {peak:.1f} GFLOP/s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench_pathology_"))
    out = [f"## pathology ({dt.date.today().isoformat()}, {info['cores']} cores, {info['cpu']}, "
           f"TensorFlow {info.get('tensorflow')})", "",
           f"Command: `python bench/pathology.py {' '.join(os.sys.argv[1:])}`. "
           f"Matmul peak measured in the same run: {peak:.1f} GFLOP/s (float32). "
           f"Load average at start: {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
           "(the machine is shared; other jobs compete for the cores).", ""]

    def emit(lines):
        # Print and save each section as soon as it exists, so a long run
        # that is stopped still leaves its finished tables.
        out.extend(lines)
        print("\n".join(lines), flush=True)
        if args.results:
            args.results.write_text("\n".join(out) + "\n")

    emit([])
    if not args.skip_accuracy:
        rows, extra = bench_accuracy(work, args)
        emit(["### FROC and slide AUC on held-out synthetic slides", "", extra["settings"], "",
              table(rows, list(rows[0])), ""])
    if REAL_SVS.exists():
        emit([f"### reading the real SVS ({REAL_SVS.name})", "",
              table(bench_reading(REAL_SVS), ["reader", "items/s", "MP/s"]), ""])
    else:
        emit(["(real SVS not found: reading benchmark skipped)", ""])
    if not args.skip_heatmap:
        hm = bench_heatmap(work, args, peak)
        emit([f"### heatmap throughput ({args.hm_slides} synthetic {args.hm_size}x{args.hm_size} slides "
              f"at 0.5 um/px, tissue tiles only, batch {args.batch}; untrained weights)", "",
              "`tiles/s` is end to end (for Dask: wall time including worker start-up and model "
              "loading); `tiles/s in-slide` counts only the time inside the slides.", "",
              table(hm, ["model", "mode", "tiles", "tiles/s", "tiles/s in-slide", "level-0 MP/s",
                         "GFLOP/tile", "GFLOP/s", "matmul peak GFLOP/s", "% of matmul peak",
                         "seconds"]), ""])


if __name__ == "__main__":
    main()
