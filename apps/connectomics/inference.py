"""Flood-filling inference on one in-memory block: seeds, canvas, consensus.

The canvas follows Januszewski et al. (2018): for every seed the object-mask
logits start at logit(0.05) with logit(0.95) at the seed; the FFN is applied
at the seed and then wherever the *face-max movement policy* finds a face of
the current FOV whose probability reaches ``move_threshold``; positions are
visited in order of that score (a priority queue) and never twice (positions
are quantised by the FOV step ``deltas``). When the queue is empty the voxels
above ``segment_threshold`` connected to the seed and not yet claimed become
an object if they hold at least ``min_segment_size`` voxels.

Batching: the queue is popped ``batch_size`` positions at a time and the FFN
evaluates them in one call. With ``batch_size=1`` this is exactly the serial
policy; larger batches let neighbouring FOVs of the same object be evaluated
before each other's updates are visible (what the throughput goal needs).
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from deepsci.core.errors import ConfigError, InputError

from .train import SEED_IN, SEED_OUT, face_moves, logit

__all__ = [
    "AgglomerationConfig",
    "InferenceConfig",
    "FloodFiller",
    "peak_seeds",
    "membrane_seeds",
    "grid_seeds",
    "split_consensus",
    "segment_block",
]


@dataclass
class AgglomerationConfig:
    """Options of the agglomeration of touching segments (one source of defaults: the CLI's ``--agglo-*``).

    Attributes
    ----------
    radius : tuple of int
        Half-size (z, y, x) of the box around each contact for the FFN pair runs
        (clipped to the volume, never smaller than the FOV).
    min_contact : int
        Pairs touching on fewer face-adjacent voxel pairs get no FFN runs (and are
        never joined by the threshold rule; the classifier still scores them).
    threshold : float
        Threshold rule: join when both directed FFN recoveries reach this fraction.
        With a ``classifier``: join while the best pair's probability reaches it.
    boundary_threshold : float, optional
        The agglomeration fills never enter voxels at or above this boundary-map
        level; ``None``: no limit (the FFN alone decides).
    max_pairs : int
        At most this many pairs (largest contacts first) get FFN runs per round.
    rounds : int
        Threshold rule: after a round that joined segments, the pairs touching a joined
        segment are tested again (its shape near each contact changed), up to this many rounds.
    classifier : str, optional
        Pair-classifier JSON (``deepsci connectomics train-agglo``): greedy agglomeration
        on the region adjacency graph, the FFN recoveries being two of its features
        (:mod:`~deepsci.apps.connectomics.rag`); ``None``: the threshold rule.
    """

    radius: tuple[int, int, int] = (12, 12, 12)
    min_contact: int = 100
    threshold: float = 0.8
    boundary_threshold: float | None = None
    max_pairs: int = 10000
    rounds: int = 1
    classifier: str | None = None

    @classmethod
    def from_options(cls, *, radius: int | None = None, **given) -> AgglomerationConfig:
        """From command-line options: ``radius`` one int for all axes; ``None`` (unset) keeps the default."""
        if radius is not None:
            given["radius"] = (radius,) * 3
        return cls(**{k: v for k, v in given.items() if v is not None})

    def validate(self) -> AgglomerationConfig:
        if min(self.radius) < 1 or self.min_contact < 1 or self.max_pairs < 1 or self.rounds < 1:
            raise ConfigError(f"expected radius, min_contact, max_pairs, rounds >= 1, found {self.radius}, "
                              f"{self.min_contact}, {self.max_pairs}, {self.rounds}")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"expected 0 < threshold <= 1, found {self.threshold}")
        if self.boundary_threshold is not None and not 0 < self.boundary_threshold < 1:
            raise ConfigError(f"expected 0 < boundary_threshold < 1, found {self.boundary_threshold}")
        return self


@dataclass
class InferenceConfig:
    """Options of the flood fill (shared by every block).

    Attributes
    ----------
    seed_policy : {"peaks", "membrane", "grid", "none", "watershed"}
        ``peaks``: maxima of the distance transform of a Sobel edge map;
        ``membrane``: maxima of the distance transform of the cell interior of
        the boundary map (below ``boundary_threshold``, or Otsu's level);
        ``grid``: a regular grid with step ``grid_step``; ``none``: no flood fill at
        all, the segments are the interior regions of ``reseed_unclaimed`` (a
        component-marker watershed) for the FFN agglomeration to join; ``watershed``:
        no flood fill, the segments are the supervoxels of a peak-marker watershed of
        the boundary map (interior below ``boundary_threshold`` or Otsu's level, peaks
        ``peak_min_distance`` apart, every voxel kept) for the learned agglomeration.
    move_threshold : float
        Face probability needed to move the FOV there.
    segment_threshold : float
        Probability above which a voxel joins the object.
    min_segment_size : int
        Smaller objects are dropped (their voxels may be claimed later).
    min_boundary_dist : tuple of int
        No seed closer than this (z, y, x) to a voxel of an existing object.
    batch_size : int
        FOVs evaluated per FFN call.
    consensus : bool
        Run twice (seeds forward and reversed) and split where the runs disagree.
    max_fovs_per_object : int
        Safety bound on the FOV evaluations of one object.
    boundary_threshold : float, optional
        Boundary-map level (0-1, see :func:`~deepsci.apps.connectomics.baseline.boundary_map`)
        at or above which a voxel never joins an object and no FOV is centred,
        so an FFN that leaks across a membrane is stopped there; ``None``: no limit.
    boundary_sigma : float
        Gaussian smoothing (voxels) of the boundary map.
    fill_unclaimed : bool
        Give every voxel no object claimed to an object by a watershed of the
        boundary map seeded with the objects (VI counts unclaimed voxels as
        one segment, which merges everything they touch).
    reseed_unclaimed : int
        Before the fill, every connected region of at least this many voxels
        below ``boundary_threshold`` that no object claimed becomes an object
        of its own, instead of being shared out among its neighbours by the
        fill (0: off). Splits it causes are for the agglomeration to repair.
    agglomerate : bool
        Join touching segments the FFN, seeded on both sides, finds to be one
        (:mod:`~deepsci.apps.connectomics.agglomerate`).
    agglomeration : AgglomerationConfig
        Its options.
    """

    seed_policy: str = "peaks"
    grid_step: tuple[int, int, int] | None = None
    peak_min_distance: int = 3
    edge_sigma: float = 8.0
    move_threshold: float = 0.9
    segment_threshold: float = 0.6
    min_segment_size: int = 100
    min_boundary_dist: tuple[int, int, int] = (1, 1, 1)
    batch_size: int = 8
    consensus: bool = True
    max_fovs_per_object: int = 20000
    boundary_threshold: float | None = None
    boundary_sigma: float = 1.0
    fill_unclaimed: bool = False
    reseed_unclaimed: int = 0
    agglomerate: bool = False
    agglomeration: AgglomerationConfig = field(default_factory=AgglomerationConfig)

    @classmethod
    def from_dict(cls, d: dict) -> InferenceConfig:
        """Rebuild from :func:`dataclasses.asdict` output (JSON lists back to tuples)."""
        d = dict(d)
        agg = dict(d.pop("agglomeration", None) or {})
        if "radius" in agg:
            agg["radius"] = tuple(agg["radius"])
        for key in ("min_boundary_dist", "grid_step"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d, agglomeration=AgglomerationConfig(**agg))

    def validate(self) -> InferenceConfig:
        checks = [
            (self.seed_policy in ("peaks", "membrane", "grid", "none", "watershed"),
             "seed_policy 'peaks', 'membrane', 'grid', 'none' or 'watershed'", self.seed_policy),
            (self.seed_policy != "none" or self.reseed_unclaimed > 0, "reseed_unclaimed > 0 with seed_policy 'none'",
             self.reseed_unclaimed),
            (self.boundary_threshold is None or 0 < self.boundary_threshold < 1, "0 < boundary_threshold < 1",
             self.boundary_threshold),
            (self.boundary_sigma >= 0, "boundary_sigma >= 0", self.boundary_sigma),
            (0 < self.move_threshold < 1, "0 < move_threshold < 1", self.move_threshold),
            (0 < self.segment_threshold < 1, "0 < segment_threshold < 1", self.segment_threshold),
            (self.min_segment_size >= 1, "min_segment_size >= 1", self.min_segment_size),
            (self.batch_size >= 1, "batch_size >= 1", self.batch_size),
            (self.peak_min_distance >= 1, "peak_min_distance >= 1", self.peak_min_distance),
            (self.max_fovs_per_object >= 1, "max_fovs_per_object >= 1", self.max_fovs_per_object),
            (self.reseed_unclaimed >= 0, "reseed_unclaimed >= 0", self.reseed_unclaimed),
            (not self.reseed_unclaimed or self.boundary_threshold is not None,
             "boundary_threshold with reseed_unclaimed", self.boundary_threshold),
        ]
        for ok, what, found in checks:
            if not ok:
                raise ConfigError(f"expected {what}, found {found!r}")
        if self.agglomerate:
            self.agglomeration.validate()
        return self


# ------------------------------------------------------------------ seeds


def peak_seeds(image: np.ndarray, *, min_distance: int = 3, edge_sigma: float = 8.0,
               voxel_size=(1.0, 1.0, 1.0), margin=(0, 0, 0), seed: int = 0) -> np.ndarray:
    """Seeds at maxima of the distance to the nearest edge.

    Edges are voxels whose Sobel gradient magnitude exceeds its own Gaussian
    local mean (``edge_sigma``); the distance transform of the non-edge space
    peaks in the middle of neurites, far from membranes.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X)
    margin : sequence of 3 int
        Peaks closer than this to a face are dropped.

    Returns
    -------
    ndarray of int, shape (K, 3)
        (z, y, x) seeds, farthest from any edge first.
    """
    from skimage.feature import peak_local_max

    img = ndi.gaussian_filter(image.astype(np.float32), 0.5)
    edges = ndi.generic_gradient_magnitude(img, ndi.sobel)
    local = ndi.gaussian_filter(edges, edge_sigma, mode="reflect")
    dt = ndi.distance_transform_edt(edges <= local, sampling=voxel_size).astype(np.float32)
    # Tiny noise breaks ties on plateaus so that each plateau yields one peak.
    dt += np.random.default_rng(seed).uniform(0, 1e-3, dt.shape).astype(np.float32)
    lo = np.asarray(margin, int)
    hi = np.asarray(image.shape) - lo
    sub = dt[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    peaks = peak_local_max(sub, min_distance=min_distance, threshold_abs=0.5, exclude_border=False) + lo
    order = np.argsort(-dt[tuple(peaks.T)], kind="stable")
    return peaks[order]


def membrane_seeds(bmap: np.ndarray, *, threshold: float | None = None, min_distance: int = 3,
                   voxel_size=(1.0, 1.0, 1.0), seed: int = 0) -> np.ndarray:
    """Seeds at maxima of the distance to the nearest membrane voxel of a boundary map.

    Parameters
    ----------
    bmap : ndarray of float, shape (Z, Y, X)
        Boundary map in [0, 1] (membranes high).
    threshold : float, optional
        Level separating interior (below) from membrane; ``None``: Otsu's.

    Returns
    -------
    ndarray of int, shape (K, 3)
        (z, y, x) seeds, deepest inside a cell first.
    """
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu

    thr = threshold if threshold is not None else float(threshold_otsu(bmap))
    dt = ndi.distance_transform_edt(bmap < thr, sampling=voxel_size).astype(np.float32)
    dt += np.random.default_rng(seed).uniform(0, 1e-3, dt.shape).astype(np.float32)
    peaks = peak_local_max(dt, min_distance=min_distance, threshold_abs=0.5, exclude_border=False)
    return peaks[np.argsort(-dt[tuple(peaks.T)], kind="stable")]


def grid_seeds(shape, step, margin=(0, 0, 0)) -> np.ndarray:
    """Seeds on a regular (z, y, x) grid of ``step``, ``margin`` away from the faces."""
    axes = [np.arange(m, max(s - m, m + 1), st) for s, st, m in zip(shape, step, margin, strict=True)]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    return g.astype(int)


# ------------------------------------------------------------------ canvas


class FloodFiller:
    """Runs an FFN model on batches of FOVs with one fixed-signature ``tf.function``.

    Parameters
    ----------
    model : keras.Model
        ``(N, Z, Y, X, 2) -> (N, Z, Y, X, 1)`` FFN.
    deltas : sequence of 3 int
        FOV movement step.
    """

    def __init__(self, model, deltas):
        import tensorflow as tf

        self.fov = tuple(int(v) for v in model.input_shape[1:4])
        self.deltas = tuple(int(v) for v in deltas)
        spec = tf.TensorSpec((None, *self.fov, 2), tf.float32)
        self._predict = tf.function(lambda x: model(x, training=False), input_signature=[spec],
                                    reduce_retracing=True)
        self.fov_evals = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.fov_evals += len(batch)
        return self._predict(batch).numpy()[..., 0]


def _fill_object(image, logits, seed_pos, ff: FloodFiller, cfg: InferenceConfig, allowed=None):
    """Grow one object's logits from ``seed_pos``; return its bounding box (lo, hi)."""
    fov = np.asarray(ff.fov)
    half = fov // 2
    d = np.asarray(ff.deltas)
    lo_c, hi_c = half, np.asarray(image.shape) - half - 1
    start = np.clip(seed_pos, lo_c, hi_c)
    logits[tuple(seed_pos)] = logit(SEED_IN)
    t_move = logit(cfg.move_threshold)
    heap = [(-np.inf, tuple(start))]
    seen: set[tuple[int, ...]] = set()
    box_lo, box_hi = start - half, start + half + 1
    n = 0
    while heap and n < cfg.max_fovs_per_object:
        batch = []
        while heap and len(batch) < cfg.batch_size:
            _, pos = heapq.heappop(heap)
            key = tuple(np.round((np.asarray(pos) - start) / d).astype(int))
            if key in seen:
                continue
            seen.add(key)
            batch.append(np.asarray(pos))
        if not batch:
            break
        sl = [tuple(slice(p - h, p + h + 1) for p, h in zip(pos, half, strict=True)) for pos in batch]
        x = np.stack([np.stack([image[s], logits[s]], -1) for s in sl]).astype(np.float32)
        out = ff(x)
        n += len(batch)
        for pos, s, o in zip(batch, sl, out, strict=True):
            logits[s] = o
            box_lo, box_hi = np.minimum(box_lo, pos - half), np.maximum(box_hi, pos + half + 1)
            for score, off in face_moves(o, d, t_move):
                new = np.clip(pos + np.asarray(off), lo_c, hi_c)
                if allowed is not None and not allowed[tuple(new)]:
                    continue  # never centre a FOV on a membrane
                if tuple(np.round((new - start) / d).astype(int)) not in seen:
                    heapq.heappush(heap, (-score, tuple(int(v) for v in new)))
    return box_lo, box_hi


def flood_fill(image: np.ndarray, seeds: np.ndarray, ff: FloodFiller, cfg: InferenceConfig,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Segment objects seed by seed on one normalised image block.

    Parameters
    ----------
    image : ndarray of float32, shape (Z, Y, X)
        Normalised with the training mean and standard deviation.
    seeds : ndarray of int, shape (K, 3)
        Tried in this order.
    allowed : ndarray of bool, shape (Z, Y, X), optional
        Voxels that may join an object and carry a FOV centre (``None``: all).

    Returns
    -------
    labels : ndarray of uint32, shape (Z, Y, X)
        Objects ``1..n`` in order of creation.
    prob : ndarray of uint8, shape (Z, Y, X)
        The object probability of every claimed voxel, times 255.
    """
    seg = np.zeros(image.shape, np.uint32)
    prob = np.zeros(image.shape, np.uint8)
    base = logit(SEED_OUT)
    logits = np.full(image.shape, base, np.float32)
    t_seg = logit(cfg.segment_threshold)
    r = np.asarray(cfg.min_boundary_dist, int)
    next_id = 1
    for s in np.asarray(seeds, int):
        near = tuple(slice(max(v - rr, 0), v + rr + 1) for v, rr in zip(s, r, strict=True))
        if seg[tuple(s)] or seg[near].any() or (allowed is not None and not allowed[tuple(s)]):
            continue  # do not reseed inside or next to an existing object, nor on a membrane
        lo, hi = _fill_object(image, logits, s, ff, cfg, allowed)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        local = logits[box]
        mask = (local >= t_seg) & (seg[box] == 0)
        if allowed is not None:
            mask &= allowed[box]
        comp, _ = ndi.label(mask)
        seed_comp = comp[tuple(s - lo)]
        if seed_comp:
            obj = comp == seed_comp
            if obj.sum() >= cfg.min_segment_size:
                seg[box][obj] = next_id
                p = 1.0 / (1.0 + np.exp(-local[obj]))
                prob[box][obj] = np.round(p * 255).astype(np.uint8)
                next_id += 1
        logits[box] = base  # reset only what this object touched
    return seg, prob


def relabel_sequential(labels: np.ndarray, min_size: int = 0) -> np.ndarray:
    """Ids ``1..n`` in order of first appearance; objects under ``min_size`` voxels become 0."""
    flat = labels.ravel()
    uniq, first, inverse, counts = np.unique(flat, return_index=True, return_inverse=True, return_counts=True)
    keep = (uniq != 0) & (counts >= max(min_size, 1))
    order = np.argsort(first[keep], kind="stable")
    new = np.zeros(len(uniq), np.uint32)
    new[np.flatnonzero(keep)[order]] = np.arange(1, keep.sum() + 1, dtype=np.uint32)
    return new[inverse].reshape(labels.shape)


def split_consensus(a: np.ndarray, b: np.ndarray, *, min_size: int = 1) -> np.ndarray:
    """Split consensus of two segmentations: one object per co-occurring pair of ids.

    Where one run merged two objects that the other kept apart, the pair ids
    differ and the merge is cut. Voxels claimed by only one run keep that
    run's object; pieces under ``min_size`` voxels are dropped.
    """
    if a.shape != b.shape:
        raise ValueError(f"Expected two segmentations of one shape. Received: {a.shape} and {b.shape}")
    pair = a.astype(np.uint64) << np.uint64(32) | b.astype(np.uint64)
    out = relabel_sequential(pair, min_size=0)
    # Connected pieces, so that one pair id split in space is not one object.
    pieces = np.zeros(out.shape, np.uint32)
    n = 0
    for i, box in enumerate(ndi.find_objects(out), start=1):
        if box is None:
            continue
        comp, k = ndi.label(out[box] == i)
        pieces[box][comp > 0] = comp[comp > 0] + n
        n += k
    return relabel_sequential(pieces, min_size=min_size)


def normalise(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(image - mean) / std`` as float32 (the training preprocessing)."""
    return ((image.astype(np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32)


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
        from .baseline import boundary_map  # the baseline imports this module

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
        seg, prob = _supervoxels(image, bmap, cfg, voxel_size), np.zeros(image.shape, np.uint8)
    else:
        seg, prob = flood_fill(img, seeds, ff, cfg, allowed)
    if cfg.consensus and len(seeds) > 1:
        seg2, prob2 = flood_fill(img, seeds[::-1], ff, cfg, allowed)
        seg = split_consensus(seg, seg2, min_size=cfg.min_segment_size)
        prob = np.where(seg > 0, np.maximum(prob, prob2), 0).astype(np.uint8)
    if cfg.reseed_unclaimed and (seg.any() or cfg.seed_policy == "none"):
        seg = _reseed_unclaimed(seg, allowed, cfg.reseed_unclaimed)
    if cfg.fill_unclaimed and seg.any():
        from skimage.segmentation import watershed

        seg = watershed(bmap, seg.astype(np.int64)).astype(np.uint32)
    merged = 0
    if cfg.agglomerate and seg.any():
        from .agglomerate import agglomerate

        joined = agglomerate(seg, img, ff, cfg, agg, bmap)
        seg, merged = joined["labels"], joined["merged"]
        prob = np.where(seg > 0, prob, 0).astype(np.uint8)
    return {"labels": seg, "prob": prob, "seeds": np.asarray(seeds), "fov_evals": ff.fov_evals - evals0,
            "merged": merged, "seconds": time.perf_counter() - t0}


def _reseed_unclaimed(seg: np.ndarray, allowed: np.ndarray, min_size: int) -> np.ndarray:
    """Unclaimed regions of ``allowed`` with >= ``min_size`` voxels become objects after the existing ones."""
    comp, _ = ndi.label(allowed & (seg == 0))
    comp = relabel_sequential(comp, min_size=min_size)
    return np.where(comp > 0, comp + seg.max(), seg).astype(np.uint32)


def _supervoxels(image: np.ndarray, bmap: np.ndarray, cfg: InferenceConfig, voxel_size) -> np.ndarray:
    """Peak-marker watershed of the boundary map, no size filter (a removed piece would be background)."""
    from .baseline import BaselineConfig, watershed_baseline

    ws = BaselineConfig(sigma=cfg.boundary_sigma, threshold=cfg.boundary_threshold,
                        min_distance=cfg.peak_min_distance, min_size=0, markers="peaks")
    return watershed_baseline(image, ws, voxel_size=voxel_size, bmap=bmap).astype(np.uint32)
