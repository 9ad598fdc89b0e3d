"""The flood fill of one in-memory block: seeds, the canvas, one object at a time.

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

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu

from .config import InferenceConfig
from .policy import SEED_IN, SEED_OUT, face_moves, logit
from .predict import FloodFiller

__all__ = ["peak_seeds", "membrane_seeds", "grid_seeds", "fill_object", "flood_fill", "fill_mask"]


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


def fill_object(image: np.ndarray, logits: np.ndarray, seed_pos, ff: FloodFiller, cfg: InferenceConfig,
                allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grow one object's logits in place from ``seed_pos``; return its bounding box (lo, hi).

    Parameters
    ----------
    image : ndarray of float32, shape (Z, Y, X)
        Normalised image.
    logits : ndarray of float32, shape (Z, Y, X)
        The canvas, updated in place.
    seed_pos : sequence of 3 int
    allowed : ndarray of bool, shape (Z, Y, X), optional
        Voxels a FOV may be centred on (``None``: all).
    """
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
        lo, hi = fill_object(image, logits, s, ff, cfg, allowed)
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


def fill_mask(image: np.ndarray, seed, ff: FloodFiller, icfg: InferenceConfig,
              allowed: np.ndarray | None) -> np.ndarray:
    """Voxels ``(Z, Y, X)`` above the segment threshold after one FFN run from ``seed`` on an empty canvas.

    Not only the seed's connected part: a neurite may leave the box and come back,
    and keeping the seed's component alone scored worse on the validation slab.
    """
    logits = np.full(image.shape, logit(SEED_OUT), np.float32)
    fill_object(image, logits, seed, ff, icfg, allowed)
    mask = logits >= logit(icfg.segment_threshold)
    return mask if allowed is None else mask & allowed
