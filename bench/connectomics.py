"""Benchmark of the connectomics app: FFN vs watershed baseline, and FFN inference throughput.

On the real FIB-SEM volume ``../shared/data/em/neuroproof_sample2_train`` when present
(10 nm isotropic, 125 x 250 x 250; trains on slices 0-99 and tests on 100-124), otherwise
on a synthetic volume: VI split/merge, adapted Rand error and ERL of the FFN and of the
watershed baseline, inference throughput in voxels/s and GFLOP/s against the measured
float32 matmul peak (raw FFN on batches of FOVs, and the whole flood fill).

Usage::

    python bench/connectomics.py [--epochs 6] [--steps 200] [--preset cpu] [--crop 250]
        [--model model.keras] [--preset learned --train-agglo | --agglo-classifier C] [--seed-policy ...]
        [--scaling-workers 1 2] [--work DIR]

The FFN trains on z < ``train_slices - val_slices``; the next ``val_slices`` slices are the
validation slab on which the watershed baseline's parameters are tuned here (and the FFN's
inference options were tuned offline; they are passed as options and reported), and the
last slices are the test slab. Both methods are scored on both slabs. A blockwise run on a
local Dask cluster with 1 and 2 workers measures the parallel speed-up of ``segment``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from deepsci.apps.connectomics.predict import model_card  # noqa: E402  (TensorFlow-free)

EM = Path(__file__).resolve().parents[2] / "shared" / "data" / "em" / "neuroproof_sample2_train"


def load_data(args):
    """(image, labels, voxel_size, origin) of the whole volume."""
    from deepsci.apps.connectomics.io import open_volume, read_neuroproof_groundtruth

    if EM.exists() and not args.synthetic:
        img = open_volume(EM / "grayscale_maps").read()
        lab = read_neuroproof_groundtruth(EM / "groundtruth.h5")
        origin = "NeuroProof training_sample2 FIB-SEM (Drosophila medulla), 10 nm isotropic"
        vs = (10.0, 10.0, 10.0)
    else:
        from deepsci.apps.connectomics.synth import synthetic_volume

        img, lab = synthetic_volume(shape=(125, 160, 160), n_neurites=60, seed=0)
        origin = "synthetic EM-like volume (deepsci synth), 125 x 160 x 160"
        vs = (10.0, 10.0, 10.0)
    c = args.crop
    if c:
        img, lab = img[:, :c, :c], lab[:, :c, :c]
        origin += f", crop y, x < {c}"
    return img, lab.astype(np.uint32), vs, origin


def dask_scaling(model_path, image, work: Path, *, block_size, workers: list[int], inference) -> list[dict]:
    """Wall time of blockwise ``segment_volume`` on a local Dask cluster of 1, 2, ... workers.

    Every run segments the same blocks from scratch; the labels of each run are
    compared with the first run's (where a block runs must not change its result).
    """
    from deepsci.apps.connectomics.config import SegmentConfig
    from deepsci.apps.connectomics.io import open_volume, write_volume
    from deepsci.apps.connectomics.segment import segment_volume

    write_volume(work / "scaling.zarr", {"image": image}, voxel_size=(10.0, 10.0, 10.0))
    rows, ref = [], None
    for w in workers:
        out = work / f"scaling-{w}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = SegmentConfig(inference=inference, block_size=tuple(block_size), scheduler="local", workers=w)
        t0 = time.perf_counter()
        res = segment_volume(model_path, str(work / "scaling.zarr:image"), out, cfg, progress=False)
        wall = time.perf_counter() - t0
        labels = open_volume(out / "segmentation.zarr:labels", kind="labels").read()
        ref = labels if ref is None else ref
        rows.append({"workers": w, "blocks": res["blocks"], "wall s": wall, "block s (sum)": res["block_seconds"],
                     "voxels/s": res["voxels"] / wall, "speed-up": rows[0]["wall s"] / wall if rows else 1.0,
                     "same labels": bool(np.array_equal(labels, ref))})
    return rows


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/deepsci-bench-connectomics")
    p.add_argument("--model", default=None, help="score this trained model.keras instead of training one")
    p.add_argument("--model-preset", dest="preset", default="cpu", help="FFN size (train --preset)")
    p.add_argument("--fov-size", type=int, nargs=3, default=None)
    p.add_argument("--deltas", type=int, nargs=3, default=None)
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--features", type=int, default=None)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--steps", type=int, default=200, help="steps per epoch")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--moves", type=int, default=2)
    p.add_argument("--crop", type=int, default=0, help="use only y, x < CROP (faster)")
    p.add_argument("--train-slices", type=int, default=100, help="test slab: z >= this")
    p.add_argument("--val-slices", type=int, default=25, help="validation slab: the last of the training slices")
    p.add_argument("--block-size", type=int, nargs=3, default=None)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--preset", dest="segment_preset", default="ffn",
                   help="segment pipeline (deepsci connectomics segment --preset): ffn|membrane|supervoxels|learned")
    p.add_argument("--agglo-classifier", default=None, help="pair classifier JSON (train-agglo)")
    p.add_argument("--train-agglo", action="store_true",
                   help="fit the pair classifier on the training slab first (the product's train-agglo with the "
                        "preset's supervoxel settings) and use it")
    p.add_argument("--agglo-kind", default="forest", help="classifier of --train-agglo: forest|logistic")
    # Overrides of the preset's inference options (unset: the preset's value, as in `segment`).
    for name, typ in (("infer-batch", int), ("seed-policy", str), ("peak-min-distance", int),
                      ("move-threshold", float), ("segment-threshold", float), ("min-segment-size", int),
                      ("boundary-threshold", float), ("boundary-sigma", float), ("reseed-unclaimed", int),
                      ("agglo-threshold", float), ("agglo-min-contact", int), ("agglo-radius", int),
                      ("agglo-boundary-threshold", float), ("agglo-rounds", int)):
        p.add_argument(f"--{name}", type=typ, default=None)
    for name in ("consensus", "fill-unclaimed", "agglomerate"):
        p.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--no-speed", action="store_true", help="skip the throughput rows (quality only)")
    p.add_argument("--synthetic", action="store_true", help="ignore the real volume")
    p.add_argument("--scaling-workers", type=int, nargs="*", default=[1, 2],
                   help="Dask worker counts of the blockwise scaling run (none: skip it)")
    p.add_argument("--scaling-crop", type=int, default=128, help="test slab y, x < this for the scaling run")
    p.add_argument("--scaling-block", type=int, nargs=3, default=(25, 72, 72))
    p.add_argument("--keep", action="store_true", help="reuse a trained model in --work")
    p.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.connectomics.md")))
    p.add_argument("--fib25", default=None, metavar="CHECKPOINT",
                   help="only import this google/ffn convstack_3d checkpoint (models/fib25/model.ckpt-27465036) and "
                        "score it on a crop of the test slab beside --model and the watershed baseline")
    p.add_argument("--fib25-crop", type=int, default=64, help="y, x < this for the --fib25 comparison")
    p.add_argument("--record", action="store_true", help="with --fib25: record its rows in bench/results")
    return p.parse_args(argv)


def fib25(args, img, lab, vs, work: Path) -> list[dict]:
    """google/ffn's FIB-25 FFN (imported) vs ``--model`` vs the watershed on a crop of the test slab.

    No resampling: the checkpoint was trained on the NeuroProof ``validation_sample``, the same
    acquisition (and voxel size) as this volume, and google/ffn's own inference config runs it on
    ``training_sample2`` as it is. The FFN needs 33 slices of context and the test slab has 25, so
    every method segments z >= train_slices - 16 (image only) and is scored on z >= train_slices.
    """
    from deepsci.apps.connectomics.baseline import tune_watershed, watershed_baseline
    from deepsci.apps.connectomics.evaluate import evaluate_segmentation, skeleton_graph
    from deepsci.apps.connectomics.import_ffn import ImportFFNConfig, import_ffn

    k, v, c = args.train_slices, args.val_slices, args.fib25_crop
    imp = import_ffn(ImportFFNConfig(checkpoint=args.fib25, out=str(work / "fib25.keras"),
                                     voxel_size_nm=tuple(vs)))
    print(f"import-ffn: {imp}", flush=True)
    lo = k - 16
    image, truth = img[lo:, :c, :c], lab[k:, :c, :c]
    ws_cfg, _ = tune_watershed(img[k - v:k, :c, :c], lab[k - v:k, :c, :c], voxel_size=vs)
    graph = skeleton_graph(truth, voxel_size=vs)
    segs = {"watershed baseline tuned on the validation slab": (watershed_baseline(image, ws_cfg, voxel_size=vs),
                                                                 {})}
    models = [("google/ffn FIB-25 FFN, imported", work / "fib25.keras")]
    if args.model:
        models.append((f"deepsci FFN ({Path(args.model).parent.name or args.model})", Path(args.model)))
    for name, path in models:
        t0 = time.perf_counter()
        labels, seg = run_ffn(args, path, image, vs, work, f"fib25-{len(segs)}")
        segs[name] = (labels, {"fov_evals": seg["fov_evals"], "seconds": round(time.perf_counter() - t0, 1)})
    rows = []
    for name, (labels, info) in segs.items():
        sc = evaluate_segmentation(truth, labels[k - lo:], voxel_size=vs, graph=graph).as_dict()
        rows.append({"method": name, **sc, **info})
        print(rows[-1], flush=True)
    return [{**r, "import": imp} for r in rows]


def fib25_main(args, argv) -> None:
    """``--fib25``: the imported checkpoint's exactness and its scores, printed (and with ``--record``, kept)."""
    from deepsci.core.bench import machine_info, table

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    img, lab, vs, origin = load_data(args)
    load = os.getloadavg()[0]
    rows = fib25(args, img, lab, vs, work)
    imp = rows[0]["import"]
    cols = ["method", "vi_split", "vi_merge", "vi_total", "adapted_rand_error", "erl", "n_segments", "fov_evals",
            "seconds"]
    print(table(rows, cols))
    if not args.record:
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from render_results import write_app_results

    by = {r["method"]: r for r in rows}
    ours = by["google/ffn FIB-25 FFN, imported"]
    ws = by["watershed baseline tuned on the validation slab"]
    own = [r for m, r in by.items() if m.startswith("deepsci FFN")]
    crop = f"z >= {args.train_slices}, y, x < {args.fib25_crop} ({tuple(int(s) for s in lab[args.train_slices:, :args.fib25_crop, :args.fib25_crop].shape)})"
    cmd = (f"python bench/connectomics.py --fib25 CHECKPOINT --fib25-crop {args.fib25_crop}"
           + ("" if inference_config(args).consensus else " --no-consensus") + (" --model MODEL" if args.model else ""))
    info = machine_info()
    write_app_results("connectomics", [
        {"metric": "import-ffn of google/ffn models/fib25/model.ckpt-27465036 (depth 12, 32 features, FOV 33³): "
                   "max |logit difference| of the imported Keras model vs tf.nn.conv3d on the checkpoint's variables "
                   "(random inputs; the test also checks it against a NumPy convstack)",
         "deepsci": f"{imp['max_abs_diff']:.3g} (depth {imp['depth']}, {imp['features']} features, "
                    f"{imp['parameters']} parameters, step {imp['global_step']})",
         "peer": "google/ffn's variables", "goal": "<= 1e-3", "met": bool(imp["max_abs_diff"] <= 1e-3),
         "command": cmd},
        {"metric": f"total VI (bits), NeuroProof test slab crop {crop}, flood fill (segment --preset ffn, "
                   f"{'consensus' if inference_config(args).consensus else 'no consensus'}) with the imported FIB-25 "
                   "FFN; not resampled (it was trained on the NeuroProof validation_sample, same acquisition); image "
                   "z >= 84 given as context (33-slice FOV)",
         "deepsci": f"{ours['vi_total']:.3f} (split {ours['vi_split']:.3f}, merge {ours['vi_merge']:.3f}; "
                    f"{ours['fov_evals']} FOVs, {ours['seconds']} s)",
         "peer": f"watershed baseline tuned on the validation slab (same crop): {ws['vi_total']:.3f}"
                 + "".join(f"; {r['method']}, same pipeline: {r['vi_total']:.3f} ({r['seconds']} s)" for r in own),
         "goal": None, "met": None, "command": cmd},
    ], machine=json.loads((Path(__file__).with_name("results") / "connectomics.json").read_text())["machine"]
       + f"; the FIB-25 rows: {info['cores']} CPU cores, load average {load:.1f} at their start")


def train_model(args, img, lab, vs, work: Path) -> tuple[Path, str]:
    """Train on z < train_slices - val_slices (or use ``--model``); (model path, description)."""
    from deepsci.apps.connectomics.io import open_volume, write_volume
    from deepsci.apps.connectomics.train import FFNTrainConfig, train_ffn
    from deepsci.core.training import TrainConfig

    if args.model:
        card = model_card(args.model)
        hist = Path(args.model).with_name("history.json")
        steps = json.loads(hist.read_text())[-1]["step"] if hist.exists() else "?"
        return Path(args.model), (f"given model {args.model} ({steps} steps, final loss "
                                  f"{card.training.get('final_loss') or float('nan'):.4f})")
    k = args.train_slices - args.val_slices
    write_volume(work / "train.zarr", {"image": img[:k], "labels": lab[:k]}, voxel_size=vs)
    cfg = FFNTrainConfig(
        preset=args.preset, moves=args.moves, fov_size=args.fov_size, deltas=args.deltas, depth=args.depth,
        features=args.features,
        train=TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch_size,
                          learning_rate=args.lr, monitor="loss", tensorboard=False),
    ).validate()
    t0 = time.perf_counter()
    trained = train_ffn(open_volume(work / "train.zarr:image"), open_volume(work / "train.zarr:labels", kind="labels"),
                        cfg, work / "model")
    return work / "model" / "model.keras", (f"trained {trained['steps']} steps x batch {args.batch_size} on z < {k} "
                                            f"({(time.perf_counter() - t0) / 60:.1f} min, final loss "
                                            f"{trained['loss']:.4f})")


def inference_config(args, *, training: bool = False):
    """The product's ``segment --preset`` options with this run's overrides."""
    from deepsci.apps.connectomics.config import preset_inference

    agg = {"radius": None if args.agglo_radius is None else (args.agglo_radius,) * 3,
           "min_contact": args.agglo_min_contact, "threshold": args.agglo_threshold,
           "boundary_threshold": args.agglo_boundary_threshold, "rounds": args.agglo_rounds,
           "classifier": args.agglo_classifier}
    return preset_inference(
        args.segment_preset, training=training, batch_size=args.infer_batch, consensus=args.consensus,
        seed_policy=args.seed_policy, peak_min_distance=args.peak_min_distance, move_threshold=args.move_threshold,
        segment_threshold=args.segment_threshold, min_segment_size=args.min_segment_size,
        boundary_threshold=args.boundary_threshold, boundary_sigma=args.boundary_sigma,
        fill_unclaimed=args.fill_unclaimed, reseed_unclaimed=args.reseed_unclaimed, agglomerate=args.agglomerate,
        agglomeration=agg)


def train_agglo(args, model_path, img, lab, vs, work: Path) -> str:
    """The product's ``train-agglo`` on z < train_slices - val_slices; the classifier's path."""
    from deepsci.apps.connectomics.io import write_volume
    from deepsci.apps.connectomics.train_agglo import TrainAggloRun, run_train_agglo

    k = args.train_slices - args.val_slices
    write_volume(work / "agglo_train.zarr", {"image": img[:k], "labels": lab[:k]}, voxel_size=vs)
    t0 = time.perf_counter()
    res = run_train_agglo(TrainAggloRun(image=str(work / "agglo_train.zarr:image"),
                                        labels=str(work / "agglo_train.zarr:labels"), out=str(work / "agglo"),
                                        model=str(model_path), preset=args.segment_preset, kind=args.agglo_kind,
                                        inference=inference_config(args, training=True)), overwrite=True)
    print(f"train-agglo on z < {k}: {res} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return res["classifier"]


def run_ffn(args, model_path, image, vs, work: Path, name: str) -> tuple[np.ndarray, dict]:
    """Segment one slab with the FFN through ``segment_volume``; (labels, summary)."""
    from deepsci.apps.connectomics.config import SegmentConfig
    from deepsci.apps.connectomics.io import open_volume, write_volume
    from deepsci.apps.connectomics.segment import segment_volume

    write_volume(work / f"{name}.zarr", {"image": image}, voxel_size=vs)
    cfg = SegmentConfig(inference=inference_config(args),
                        block_size=tuple(args.block_size) if args.block_size else None,
                        scheduler="inline" if args.workers <= 1 else "local", workers=args.workers)
    out = work / f"segment-{name}"
    shutil.rmtree(out, ignore_errors=True)
    seg = segment_volume(model_path, str(work / f"{name}.zarr:image"), out, cfg)
    return open_volume(out / "segmentation.zarr:labels", kind="labels").read(), seg


def quality(args, model_path, img, lab, vs, work: Path) -> tuple[list[dict], dict, object]:
    """FFN and tuned watershed on the validation and test slabs: (rows, test FFN summary, baseline config)."""
    from deepsci.apps.connectomics.baseline import tune_watershed, watershed_baseline
    from deepsci.apps.connectomics.evaluate import evaluate_segmentation, skeleton_graph

    k, v = args.train_slices, args.val_slices
    slabs = {"validation": slice(k - v, k), "test": slice(k, None)}
    ws_cfg, _ = tune_watershed(img[slabs["validation"]], lab[slabs["validation"]], voxel_size=vs)
    ws_name = (f"watershed baseline ({ws_cfg.threshold or 'otsu'}, min_distance {ws_cfg.min_distance}, "
               f"sigma {ws_cfg.sigma})")
    cc_cfg, _ = tune_watershed(img[slabs["validation"]], lab[slabs["validation"]], voxel_size=vs,
                               markers="components")
    cc_name = (f"watershed, component markers ({cc_cfg.threshold or 'otsu'}, min_size {cc_cfg.min_size}, "
               f"sigma {cc_cfg.sigma})")
    rows, test_seg = [], None
    for slab, z in slabs.items():
        graph = skeleton_graph(lab[z], voxel_size=vs)
        ffn_labels, seg = run_ffn(args, model_path, img[z], vs, work, slab)
        t1 = time.perf_counter()
        ws_labels = watershed_baseline(img[z], ws_cfg, voxel_size=vs)
        ws_s = time.perf_counter() - t1
        cc_labels = watershed_baseline(img[z], cc_cfg, voxel_size=vs)
        for name, s_lab in (("FFN (deepsci)", ffn_labels), (ws_name, ws_labels), (cc_name, cc_labels)):
            sc = evaluate_segmentation(lab[z], s_lab, voxel_size=vs, graph=graph).as_dict()
            rows.append({"slab": slab, "method": name, **sc})
        if slab == "test":
            test_seg = {**seg, "ws_seconds": ws_s, "voxels": int(lab[z].size)}
    return rows, test_seg, (ws_cfg, cc_cfg)


def speed(args, model_path, seg: dict) -> list[dict]:
    """Matmul peak, raw FFN forward and end-to-end flood fill (GFLOP/s, voxels/s)."""
    from deepsci.apps.connectomics.predict import load_flood_filler
    from deepsci.core.bench import interleaved
    from deepsci.core.models.ffn import FFNConfig, ffn_flops_per_fov

    mc = FFNConfig(**model_card(model_path).extra["ffn"])
    ff, _ = load_flood_filler(model_path)
    rng = np.random.default_rng(0)
    xs = {b: rng.standard_normal((b, *mc.fov_size, 2)).astype(np.float32) for b in (args.infer_batch, 1)}
    # Other jobs may share the cores: every timed call sits between two peak
    # measurements and is divided by their mean (issue 16.9); medians over rounds.
    got = interleaved({b: (lambda x=x: ff(x), ffn_flops_per_fov(mc) * b) for b, x in xs.items()},
                      rounds=5)
    peak = got["peak"]["median"]
    vox = int(np.prod(mc.fov_size))

    def forward(b):
        w = got["work"][b]
        return {"GFLOP/s": w["gflops"], "% of peak": w["pct_of_peak"],
                "% range": f"{w['pct_min']:.1f}-{w['pct_max']:.1f}", "voxels/s": b * vox / w["seconds"]}

    moved = " (peak moved > 10 % during the run)" if got["peak"]["moved"] else ""
    e2e_gflops = seg["fov_evals"] * ffn_flops_per_fov(mc) / seg["block_seconds"] / 1e9
    return [
        {"measurement": "float32 matmul peak (2048^2)" + moved, "GFLOP/s": peak, "% of peak": 100.0,
         "% range": f"{got['peak']['min']:.0f}-{got['peak']['max']:.0f} GFLOP/s", "voxels/s": None},
        {"measurement": f"FFN forward, batch {args.infer_batch} FOVs", **forward(args.infer_batch)},
        {"measurement": "FFN forward, batch 1 FOV", **forward(1)},
        {"measurement": "flood fill end to end (test slab" + ("" if not inference_config(args).consensus else ", incl. consensus") + ")",
         "GFLOP/s": e2e_gflops, "% of peak": 100 * e2e_gflops / peak, "% range": None,
         "voxels/s": seg["voxels"] / seg["block_seconds"]},
        {"measurement": "watershed baseline end to end", "GFLOP/s": None, "% of peak": None, "% range": None,
         "voxels/s": seg["voxels"] / seg["ws_seconds"]},
    ]


def main(argv=None) -> None:
    from deepsci.core.bench import machine_info, table
    from deepsci.core.models.ffn import FFNConfig

    args = parse_args(argv)
    if args.fib25:
        return fib25_main(args, argv)
    work = Path(args.work)
    if work.exists() and not args.keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    img, lab, vs, origin = load_data(args)
    load_before = os.getloadavg()
    model_path, trained = train_model(args, img, lab, vs, work)
    if args.train_agglo:
        args.agglo_classifier = train_agglo(args, model_path, img, lab, vs, work)
    rows, seg, (ws_cfg, cc_cfg) = quality(args, model_path, img, lab, vs, work)
    perf = None if args.no_speed else speed(args, model_path, seg)
    k = args.train_slices
    scaling = (dask_scaling(model_path, img[k:, :args.scaling_crop, :args.scaling_crop], work,
                            block_size=args.scaling_block, workers=args.scaling_workers,
                            inference=inference_config(args))
               if args.scaling_workers else [])
    load_after = os.getloadavg()
    mc = FFNConfig(**model_card(model_path).extra["ffn"])
    cols = ["slab", "method", "vi_split", "vi_merge", "vi_total", "adapted_rand_error", "erl", "max_erl", "merges",
            "splits", "n_segments"]
    info = machine_info()
    icfg = inference_config(args)
    header = (f"## connectomics\n\n{dt.date.today().isoformat()}, {info['cores']} cores ({info['cpu']}), "
              f"TensorFlow {info.get('tensorflow')}, load average {load_before[0]:.1f} at the start and "
              f"{load_after[0]:.1f} at the end (cores shared with other jobs). Data: {origin}; validation slab "
              f"z {k - args.val_slices}-{k - 1}, test slab z >= {k} ({lab[k:].shape}).\n\n"
              f"FFN {mc.fov_size} FOV, deltas {mc.deltas}, depth {mc.depth}, {mc.features} features; {trained}. "
              f"Inference: seeds {icfg.seed_policy} (min distance {icfg.peak_min_distance}), move threshold "
              f"{icfg.move_threshold}, segment threshold {icfg.segment_threshold}, min segment "
              f"{icfg.min_segment_size}, boundary threshold {icfg.boundary_threshold} (sigma {icfg.boundary_sigma}), "
              f"fill unclaimed {icfg.fill_unclaimed}, reseed unclaimed {icfg.reseed_unclaimed}, "
              + (f"agglomeration ({icfg.agglomeration}), "
                 if icfg.agglomerate else "no agglomeration, ")
              + f"batch {icfg.batch_size}, "
              f"{'consensus of two seed orders' if icfg.consensus else 'no consensus'}; {seg['blocks']} block(s), "
              f"{seg['fov_evals']} FOV evaluations on the test slab. Watershed parameters tuned on the validation "
              f"slab: {ws_cfg}; {cc_cfg}. Command: `python bench/connectomics.py {' '.join(argv or sys.argv[1:])}`\n")
    test = [r for r in rows if r["slab"] == "test"]
    ffn_vi, ws_vi, cc_vi = test[0]["vi_total"], test[1]["vi_total"], test[2]["vi_total"]
    verdict = (f"\nTest slab: FFN total VI {ffn_vi:.3f} vs baseline {ws_vi:.3f} "
               f"({100 * (ws_vi - ffn_vi) / ws_vi:+.1f} % lower; goal >= 20 % lower); vs the component-marker "
               f"watershed {cc_vi:.3f} ({100 * (cc_vi - ffn_vi) / cc_vi:+.1f} % lower).")
    verdict += (f" FFN forward at {perf[1]['% of peak']:.0f} % of the matmul peak (goal >= 40 %).\n"
                if perf else " Throughput not measured in this run (--no-speed).\n")
    out = header + "\n### Segmentation quality (VI in bits; ERL in nm)\n\n" + table(rows, cols) + "\n"
    if perf:
        out += "\n### Throughput\n\n" + table(perf, ["measurement", "GFLOP/s", "% of peak", "% range", "voxels/s"]) + "\n"
    if scaling:
        out += (f"\n### Blockwise segment on a local Dask cluster (test slab, y, x < {args.scaling_crop}, "
                f"blocks {tuple(args.scaling_block)})\n\n"
                + table(scaling, ["workers", "blocks", "wall s", "block s (sum)", "voxels/s", "speed-up",
                                  "same labels"]) + "\n")
    out += verdict
    print(out)
    Path(args.results).write_text(out)


if __name__ == "__main__":
    main()
