"""``deepsci connectomics segment``: blockwise FFN inference with stitching.

A volume is cut into overlapping blocks (``block_size``, ``overlap``); each
block is flood-filled independently through :func:`deepsci.core.parallel.run_shards`
(a Dask cluster by default), writing its local labels atomically to
``blocks/<key>.npz``. A killed run restarted with the same output folder
skips finished blocks (their results and markers live in ``<out>/.state/``).

Stitching (what google/ffn leaves to its users, google/ffn#137): for every
pair of overlapping blocks the objects of both are compared on the shared
voxels; two objects are joined when they share at least
``stitch_min_overlap`` voxels and that is at least ``stitch_min_fraction`` of
the smaller one's part of the overlap. A union-find over all (block, object)
pairs yields one global id space; every voxel then takes its label from the
block that *owns* it (the overlap is split at its middle), so each block
contributes the part of its result that had the most context.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import atomic_dir, atomic_path, remove_stale_temporaries
from deepsci.core.parallel import run_shards, threads_per_worker
from deepsci.core.runs import RunDir

from .agglomerate import agglomerate
from .baseline import boundary_map, supervoxels
from .config import InferenceConfig, SegmentConfig, SegmentRun
from .fill import flood_fill, grid_seeds, membrane_seeds, peak_seeds
from .io import open_volume
from .labels import UnionFind, relabel, split_consensus
from .omezarr import LABELS_PATH, create_store, finish_store
from .predict import APP, TASK, FloodFiller, load_flood_filler, model_card, model_paths, normalise

__all__ = ["SegmentConfig", "SegmentRun", "segment_block", "plan_blocks", "stitch_blocks", "assemble_blocks",
           "segment_volume", "run_segment"]


# ------------------------------------------------------------------ one block


def segment_block(image: np.ndarray, ff: FloodFiller, cfg: InferenceConfig, *, mean: float, std: float,
                  voxel_size=(1.0, 1.0, 1.0), seeds: np.ndarray | None = None) -> dict:
    """Seeds -> flood fill (twice for consensus) on one block.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X)
        Raw intensities of the block.

    Returns
    -------
    dict
        ``labels`` (uint32), ``prob`` (uint8), ``seeds`` (K, 3), ``fov_evals``, ``seconds``.
    """
    cfg.validate()
    if np.any(np.asarray(image.shape) < np.asarray(ff.fov)):
        raise InputError(f"expected a block of at least the FOV {ff.fov}, found {image.shape}")
    t0 = time.perf_counter()
    img = normalise(image, mean, std)
    half = np.asarray(ff.fov) // 2
    bmap = allowed = None
    agg = cfg.agglomeration
    if (cfg.boundary_threshold is not None or cfg.seed_policy in ("membrane", "watershed") or cfg.fill_unclaimed
            or (cfg.agglomerate and (agg.boundary_threshold is not None or agg.classifier is not None))):
        bmap = boundary_map(image, sigma=cfg.boundary_sigma)
        if cfg.boundary_threshold is not None:
            allowed = bmap < cfg.boundary_threshold
    if seeds is None:
        # Seeds may lie anywhere: the first FOV is clipped into the block and still holds its seed,
        # so objects that only touch a face of the volume are segmented too.
        if cfg.seed_policy == "peaks":
            seeds = peak_seeds(image, min_distance=cfg.peak_min_distance, edge_sigma=cfg.edge_sigma,
                               voxel_size=voxel_size)
        elif cfg.seed_policy == "membrane":
            seeds = membrane_seeds(bmap, threshold=cfg.boundary_threshold, min_distance=cfg.peak_min_distance,
                                   voxel_size=voxel_size)
        elif cfg.seed_policy == "grid":
            step = cfg.grid_step or tuple(int(v) for v in half)
            seeds = grid_seeds(image.shape, step, tuple(s // 2 for s in step))
        else:
            seeds = np.zeros((0, 3), int)
    evals0 = ff.fov_evals
    if cfg.seed_policy == "watershed":
        seg, prob = supervoxels(image, bmap, cfg, voxel_size=voxel_size), np.zeros(image.shape, np.uint8)
    else:
        seg, prob = flood_fill(img, seeds, ff, cfg, allowed)
    if cfg.consensus and len(seeds) > 1:
        seg2, prob2 = flood_fill(img, seeds[::-1], ff, cfg, allowed)
        seg = split_consensus(seg, seg2, min_size=cfg.min_segment_size)
        prob = np.where(seg > 0, np.maximum(prob, prob2), 0).astype(np.uint8)
    if cfg.reseed_unclaimed and (seg.any() or cfg.seed_policy == "none"):
        seg = _reseed_unclaimed(seg, allowed, cfg.reseed_unclaimed)
    if cfg.fill_unclaimed and seg.any():
        seg = watershed(bmap, seg.astype(np.int64)).astype(np.uint32)
    merged = 0
    if cfg.agglomerate and seg.any():
        joined = agglomerate(seg, img, ff, cfg, agg, bmap)
        seg, merged = joined["labels"], joined["merged"]
        prob = np.where(seg > 0, prob, 0).astype(np.uint8)
    return {"labels": seg, "prob": prob, "seeds": np.asarray(seeds), "fov_evals": ff.fov_evals - evals0,
            "merged": merged, "seconds": time.perf_counter() - t0}


def _reseed_unclaimed(seg: np.ndarray, allowed: np.ndarray, min_size: int) -> np.ndarray:
    """Unclaimed regions of ``allowed`` with >= ``min_size`` voxels become objects after the existing ones."""
    comp, _ = ndi.label(allowed & (seg == 0))
    comp = relabel(comp, min_size=min_size)
    return np.where(comp > 0, comp + seg.max(), seg).astype(np.uint32)


# ------------------------------------------------------------------ blocks


def _origins(size: int, block: int, step: int) -> list[int]:
    if block >= size:
        return [0]
    starts = list(range(0, size - block, step)) + [size - block]
    return sorted(set(starts))


def plan_blocks(shape, block_size, overlap) -> list[dict]:
    """Overlapping blocks covering ``shape`` and the core box each one owns.

    Returns
    -------
    list of dict
        ``key`` ("z0-y0-x0"), ``lo``/``hi`` (block extent) and
        ``core_lo``/``core_hi`` (voxels whose output this block provides);
        the cores tile the volume exactly.
    """
    shape = [int(s) for s in shape]
    block = [min(int(b), s) for b, s in zip(block_size, shape, strict=True)]
    ov = [int(o) for o in overlap]
    if any(o >= b for o, b, s in zip(ov, block, shape, strict=True) if b < s):
        raise ConfigError(f"expected an overlap smaller than the block size, found overlap {tuple(ov)} for blocks {tuple(block)}")
    axes = []
    for s, b, o in zip(shape, block, ov, strict=True):
        starts = _origins(s, b, b - o)
        ends = [min(st + b, s) for st in starts]
        cuts = [0] + [(starts[i + 1] + ends[i]) // 2 for i in range(len(starts) - 1)] + [s]
        axes.append([(st, en, cuts[i], cuts[i + 1]) for i, (st, en) in enumerate(zip(starts, ends, strict=True))])
    blocks = []
    for z in axes[0]:
        for y in axes[1]:
            for x in axes[2]:
                lo = [z[0], y[0], x[0]]
                blocks.append({"key": "-".join(str(v) for v in lo), "lo": lo, "hi": [z[1], y[1], x[1]],
                               "core_lo": [z[2], y[2], x[2]], "core_hi": [z[3], y[3], x[3]]})
    return blocks


def run_block(task: dict) -> dict:
    """Flood-fill one block and write ``<block_dir>/<key>.npz`` (labels, prob) atomically."""
    ff, card = load_flood_filler(task["model"], threads=task.get("threads"))
    vol = open_volume(task["image"], voxel_size=task["voxel_size"])
    box = tuple(slice(a, b) for a, b in zip(task["lo"], task["hi"], strict=True))
    image = vol[box]
    icfg = InferenceConfig.from_dict(task["inference"])
    pre = card.preprocessing
    res = segment_block(image, ff, icfg, mean=pre["image_mean"], std=pre["image_stddev"],
                        voxel_size=vol.voxel_size)
    out = Path(task["block_dir"]) / f"{task['key']}.npz"
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, labels=res["labels"], prob=res["prob"])
    return {"objects": int(res["labels"].max()), "fov_evals": int(res["fov_evals"]),
            "seeds": int(len(res["seeds"])), "seconds": round(res["seconds"], 3)}


# ------------------------------------------------------------------ stitching


def _read_block(block_dir: Path, key: str) -> dict:
    with np.load(block_dir / f"{key}.npz") as z:
        return {"labels": z["labels"], "prob": z["prob"]}


def stitch_blocks(blocks: list[dict], block_dir: Path, *, min_overlap: int = 20,
                  min_fraction: float = 0.5) -> dict[tuple[int, int], int]:
    """Global ids for every (block index, local id), joining objects across overlaps.

    Returns
    -------
    dict
        ``(block index, local id) -> global id`` (ids ``1..n``, in block order).
    """
    uf = UnionFind()
    cache: dict[int, np.ndarray] = {}

    def labels(i):
        if i not in cache:
            if len(cache) > 8:
                cache.pop(next(iter(cache)))
            cache[i] = _read_block(block_dir, blocks[i]["key"])["labels"]
        return cache[i]

    for i, bi in enumerate(blocks):
        for lid in np.unique(labels(i)):
            if lid:
                uf.find((i, int(lid)))
        for j in range(i + 1, len(blocks)):
            bj = blocks[j]
            lo = np.maximum(bi["lo"], bj["lo"])
            hi = np.minimum(bi["hi"], bj["hi"])
            if np.any(hi <= lo):
                continue
            a = labels(i)[tuple(slice(l0 - o, h0 - o) for l0, h0, o in zip(lo, hi, bi["lo"], strict=True))]
            b = labels(j)[tuple(slice(l0 - o, h0 - o) for l0, h0, o in zip(lo, hi, bj["lo"], strict=True))]
            both = (a > 0) & (b > 0)
            if not both.any():
                continue
            pairs, counts = np.unique(np.stack([a[both], b[both]], 1), axis=0, return_counts=True)
            size_a = dict(zip(*np.unique(a[a > 0], return_counts=True), strict=True))
            size_b = dict(zip(*np.unique(b[b > 0], return_counts=True), strict=True))
            for (la, lb), n in zip(pairs, counts, strict=True):
                if n >= min_overlap and n >= min_fraction * min(size_a[la], size_b[lb]):
                    uf.union((i, int(la)), (j, int(lb)))
    mapping, ids = {}, {}
    for node in sorted(uf.parent):
        root = uf.find(node)
        if root not in ids:
            ids[root] = len(ids) + 1
        mapping[node] = ids[root]
    return mapping


def assemble_blocks(blocks: list[dict], block_dir: Path, mapping: dict, labels, prob=None) -> None:
    """Write every block's core, relabelled to global ids, into ``labels`` (and ``prob``).

    ``labels``/``prob`` are (Z, Y, X) array-likes supporting slice assignment (zarr arrays,
    numpy arrays); only one block is in memory at a time.
    """
    for i, b in enumerate(blocks):
        res = _read_block(block_dir, b["key"])
        lut = np.zeros(int(res["labels"].max()) + 1, np.uint32)
        for lid in range(1, len(lut)):
            lut[lid] = mapping.get((i, lid), 0)
        local = tuple(slice(c0 - o, c1 - o) for c0, c1, o in zip(b["core_lo"], b["core_hi"], b["lo"], strict=True))
        dest = tuple(slice(c0, c1) for c0, c1 in zip(b["core_lo"], b["core_hi"], strict=True))
        labels[dest] = lut[res["labels"][local]]
        if prob is not None:
            prob[dest] = res["prob"][local]


def _fingerprint(model: str, image: str, cfg: SegmentConfig) -> str:
    files = [(os.path.abspath(m), os.stat(m).st_size, os.stat(m).st_mtime_ns) for m in model_paths(model)]
    # Where blocks run (scheduler, workers) does not change their results, so it may differ on resume.
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("scheduler", "workers")}
    head = list(files[0]) if len(files) == 1 else [files]  # one model: the fingerprint of earlier versions
    text = json.dumps([*head, image, settings], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def segment_volume(model: str | Path, image: str | Path, out_dir: str | Path, cfg: SegmentConfig, *,
                   voxel_size=None, preset: str = "ffn", progress: bool = True, overwrite: bool = False) -> dict:
    """Segment a volume with a trained FFN, block by block, and stitch (:func:`run_segment` of these settings).

    Parameters
    ----------
    model : path
        ``model.keras`` written by ``deepsci connectomics train``.
    image : str
        Volume spec (``PATH[:INNER]``, see :mod:`deepsci.apps.connectomics.io`).
    out_dir : path
        Receives ``segmentation.zarr`` and ``run.json``.
    cfg : SegmentConfig
    preset : str
        Applied to the options of ``cfg.inference`` left at their defaults.

    Returns
    -------
    dict
        See :func:`run_segment`.
    """
    run = SegmentRun(model=str(model), image=str(image), out=str(out_dir), preset=preset,
                     voxel_size=None if voxel_size is None else tuple(voxel_size), segment=cfg)
    return run_segment(run.validate(), progress=progress, overwrite=overwrite)


def _check_inputs(cfg: SegmentRun, vol, blocks: list[dict]) -> None:
    """The user's mistakes that workers would meet only after the run started, found before it starts.

    The pair classifier is read, and every chunk of the image decoded once (tile by tile, the blocks'
    cores, so no more is in memory than a worker holds): a damaged chunk is then one line naming
    the store, and the output folder is never made for a run that cannot finish.
    """
    from .rag import PairClassifier

    classifier = cfg.segment.inference.agglomeration.classifier
    if classifier is not None:
        PairClassifier.load(classifier)
    for b in blocks:
        vol[tuple(slice(lo, hi) for lo, hi in zip(b["core_lo"], b["core_hi"], strict=True))]


def run_segment(cfg: SegmentRun, *, progress: bool = True, overwrite: bool = False) -> dict:
    """``deepsci connectomics segment``: blocks flood-filled on Dask, stitched into one id space.

    Parameters
    ----------
    cfg : SegmentRun
        Its preset is resolved first; the resolved run is what ``run.json`` records.

    Returns
    -------
    dict
        ``segmentation`` (path of the OME-Zarr store, :mod:`~.omezarr`), ``objects``, ``blocks``,
        ``levels`` (of its pyramids), ``fov_evals``, ``block_seconds``, ``seconds`` and ``voxels``.
        Also in ``run.json["results"]``. The block results and their completion markers stay in
        ``<out>/.state/`` so a killed run resumes.
    """
    t0 = time.perf_counter()
    cfg = cfg.resolved()
    seg = cfg.segment
    card = model_card(cfg.model)
    vol = open_volume(cfg.image, voxel_size=cfg.voxel_size)
    fov = tuple(card.extra["ffn"]["fov_size"])
    block = tuple(seg.block_size) if seg.block_size else tuple(vol.shape)
    if any(b < f for b, f in zip(block, fov, strict=True)):
        raise ConfigError(f"expected a --block-size of at least the model's FOV {fov}, found {block}")
    if any(s < f for s, f in zip(vol.shape, fov, strict=True)):
        raise InputError(f"expected a volume of at least the model's FOV {fov}, found {vol.shape}", vol.spec)
    blocks = plan_blocks(vol.shape, block, tuple(seg.overlap) if seg.overlap else fov)
    _check_inputs(cfg, vol, blocks)
    for member in model_paths(cfg.model):
        if Path(member).suffix == ".tflite":
            # A broken file is the user's one-line error here, not a failure inside a worker.
            from deepsci.core.litert import LiteRTModel

            LiteRTModel.load(member, expect=APP, task=TASK, threads=1)
    with RunDir(cfg.out, command="connectomics segment", config=cfg, overwrite=overwrite,
                inputs=[*model_paths(cfg.model), vol.spec.split(":")[0] if ":" in vol.spec else vol.spec]) as run:
        work = run.state_dir / "blocks" / _fingerprint(cfg.model, vol.spec, seg)
        work.mkdir(parents=True, exist_ok=True)
        # A killed attempt's half-written block results and markers (finished ones are kept).
        remove_stale_temporaries(work)
        workers = min(seg.workers or os.cpu_count() or 1, len(blocks))
        threads = threads_per_worker(seg.scheduler, workers)
        tasks = [{**b, "model": cfg.model, "image": vol.spec, "voxel_size": list(vol.voxel_size),
                  "inference": asdict(seg.inference), "block_dir": str(work), "threads": threads} for b in blocks]
        results = run_shards(run_block, tasks, key=lambda t: t["key"], state_dir=work, scheduler=seg.scheduler,
                             workers=workers, progress=progress, desc="blocks")
        mapping = stitch_blocks(blocks, work, min_overlap=seg.stitch_min_overlap,
                                min_fraction=seg.stitch_min_fraction)
        seg_path = run.file("segmentation.zarr")
        with atomic_dir(seg_path) as tmp:  # OME-Zarr: the image, labels/segmentation and probability
            group = create_store(tmp, vol.shape, image_dtype=vol.dtype, label_dtype=np.uint32,
                                 voxel_size=vol.voxel_size, chunks=seg.chunks,
                                 attrs={"source": vol.spec, "model": cfg.model}, extra={"probability": np.uint8})
            assemble_blocks(blocks, work, mapping, group[LABELS_PATH], group["probability"])
            levels = finish_store(group, image=vol, progress=progress)["levels"]
        summary = {"segmentation": str(seg_path), "objects": len(set(mapping.values())), "blocks": len(blocks),
                   "levels": levels,
                   "fov_evals": int(sum(r["fov_evals"] for r in results.values())),
                   "block_seconds": round(sum(r["seconds"] for r in results.values()), 2),
                   "seconds": round(time.perf_counter() - t0, 2), "voxels": vol.size}
        run.record(**summary)
    return summary
