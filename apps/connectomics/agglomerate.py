"""FFN agglomeration: merge adjacent segments when the FFN, seeded on both sides, agrees.

After Januszewski et al. (2018), "agglomeration": for every pair of touching
segments ``a`` and ``b`` a box is cut around the middle of their contact, the
FFN is run twice inside it with an empty canvas, once from the deepest voxel
of ``a`` and once from the deepest voxel of ``b``, and the two are joined when
each run recovers a large part of the *other* segment in the box:

    score(a, b) = min(|fill_a ∩ b| / |b|, |fill_b ∩ a| / |a|)   (within the box)

Requiring both directions is what keeps a leaky fill from joining everything
it floods: a fill that escapes ``a`` into ``b`` also has to be matched by a
fill from ``b`` reaching back into ``a``. The fills may be confined to voxels
below a (softer) boundary-map level, as in the flood fill itself.

This mainly repairs *splits*: a neurite cut by a dark organelle or a
thresholded boundary is seen again by the FFN in one field of view.
"""
from __future__ import annotations

import time

import numpy as np
from scipy import ndimage as ndi

from deepsci.core.errors import ConfigError

from .config import AgglomerationConfig, InferenceConfig
from .fill import fill_mask
from .labels import face_pairs, join_segments
from .predict import FloodFiller
from .rag import PairClassifier, rag_agglomerate, rag_stats

__all__ = ["contact_pairs", "pair_scores", "merge_pairs", "agglomerate"]


def contact_pairs(labels: np.ndarray, min_contact: int = 1) -> list[dict]:
    """Touching segment pairs with their contact size and a contact voxel near its centroid.

    Parameters
    ----------
    labels : ndarray of int, shape (Z, Y, X)
        Segments; 0 is background and touches nothing.

    Returns
    -------
    list of dict
        ``a`` < ``b`` (ids), ``contact`` (face-adjacent voxel pairs) and
        ``centre`` (z, y, x) — the contact voxel of ``a`` nearest to the mean
        contact position; largest contact first.
    """
    keys, pos = [], []
    for _, _, m, key in face_pairs(labels):
        if m.any():
            keys.append(key)
            pos.append(np.argwhere(m))
    if not keys:
        return []
    keys, pos = np.concatenate(keys), np.concatenate(pos)
    uniq, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    mean = np.zeros((len(uniq), 3))
    for d in range(3):
        mean[:, d] = np.bincount(inv, pos[:, d], len(uniq)) / counts
    dist = ((pos - mean[inv]) ** 2).sum(1)
    order = np.lexsort((dist, inv))
    first = order[np.r_[0, np.flatnonzero(np.diff(inv[order])) + 1]]
    out = []
    for k, i in zip(range(len(uniq)), first, strict=True):
        if counts[k] >= min_contact:
            out.append({"a": int(uniq[k] >> 32), "b": int(uniq[k] & 0xFFFFFFFF), "contact": int(counts[k]),
                        "centre": tuple(int(v) for v in pos[i])})
    out.sort(key=lambda p: -p["contact"])
    return out


def _box(centre, radius, fov, shape) -> tuple[slice, ...]:
    sl = []
    for c, r, f, s in zip(centre, radius, fov, shape, strict=True):
        r = max(r, f // 2)
        lo = min(max(c - r, 0), max(s - (2 * r + 1), 0))
        sl.append(slice(lo, min(lo + 2 * r + 1, s)))
    return tuple(sl)


def _deepest(mask: np.ndarray) -> np.ndarray | None:
    if not mask.any():
        return None
    dt = ndi.distance_transform_edt(mask)
    return np.asarray(np.unravel_index(int(np.argmax(dt)), mask.shape))


def pair_scores(labels: np.ndarray, image: np.ndarray, ff: FloodFiller, icfg: InferenceConfig,
                cfg: AgglomerationConfig, bmap: np.ndarray | None = None, only=None) -> list[dict]:
    """The two directed recoveries of every touching pair (see the module docstring).

    Parameters
    ----------
    labels : ndarray of int, shape (Z, Y, X)
    image : ndarray of float32, shape (Z, Y, X)
        Normalised like the training data.
    icfg : InferenceConfig
        Movement and segment thresholds and batch size of the fills.
    bmap : ndarray of float, shape (Z, Y, X), optional
        Boundary map; needed when ``cfg.boundary_threshold`` is set.
    only : set of int, optional
        Test only pairs with at least one segment in this set.

    Returns
    -------
    list of dict
        :func:`contact_pairs` entries plus ``a_to_b``, ``b_to_a``, ``score`` and ``leak``
        (the share of both fills that lies outside ``a`` and ``b``).
    """
    cfg.validate()
    if cfg.boundary_threshold is not None and bmap is None:
        raise ConfigError("expected a boundary map for the agglomeration's boundary_threshold, found none")
    pairs = contact_pairs(labels, cfg.min_contact)
    if only is not None:
        pairs = [p for p in pairs if p["a"] in only or p["b"] in only]
    pairs = pairs[:cfg.max_pairs]
    for p in pairs:
        box = _box(p["centre"], cfg.box_radius(), ff.fov, labels.shape)
        sub = labels[box]
        a, b = sub == p["a"], sub == p["b"]
        allowed = None if cfg.boundary_threshold is None else bmap[box] < cfg.boundary_threshold
        sa, sb = _deepest(a), _deepest(b)
        if sa is None or sb is None or np.any(np.asarray(sub.shape) < np.asarray(ff.fov)):
            p.update(a_to_b=0.0, b_to_a=0.0, score=0.0, leak=0.0)
            continue
        fa = fill_mask(image[box], sa, ff, icfg, allowed)
        fb = fill_mask(image[box], sb, ff, icfg, allowed)
        p["a_to_b"] = float((fa & b).sum() / b.sum())
        p["b_to_a"] = float((fb & a).sum() / a.sum())
        p["score"] = min(p["a_to_b"], p["b_to_a"])
        # Share of both fills outside the pair: an FFN that floods every neighbour is no evidence.
        both = a | b
        p["leak"] = float(((fa & ~both).sum() + (fb & ~both).sum()) / max(fa.sum() + fb.sum(), 1))
    return pairs


def merge_pairs(labels: np.ndarray, pairs: list[dict], threshold: float) -> np.ndarray:
    """Join every pair whose ``score`` reaches ``threshold`` (transitively); ids relabelled 1..n."""
    return join_segments(labels, [(p["a"], p["b"]) for p in pairs if p["score"] >= threshold])


def agglomerate(labels: np.ndarray, image: np.ndarray, ff: FloodFiller, icfg: InferenceConfig,
                cfg: AgglomerationConfig, bmap: np.ndarray | None = None) -> dict:
    """Score all touching pairs with the FFN and merge those that reach ``cfg.threshold``.

    With ``cfg.classifier`` the scores are features of the learned greedy agglomeration
    (:func:`~deepsci.apps.connectomics.rag.rag_agglomerate`) instead.

    Returns
    -------
    dict
        ``labels`` (uint32, shape of ``labels``), ``pairs`` (scored), ``merged`` (joins made),
        ``fov_evals`` and ``seconds``.
    """
    t0, evals0 = time.perf_counter(), ff.fov_evals
    if cfg.classifier is not None:
        return _agglomerate_rag(labels, image, ff, icfg, cfg, bmap, t0, evals0)
    out, scored, merged, only = labels, [], 0, None
    for _ in range(cfg.rounds):
        pairs = pair_scores(out, image, ff, icfg, cfg, bmap, only)
        joined = [p for p in pairs if p["score"] >= cfg.threshold]
        scored += pairs
        if not joined:
            break
        merged += len(joined)
        new = merge_pairs(out, pairs, cfg.threshold)
        # Ids of the segments that grew this round, in the new numbering.
        only = {int(new[p["centre"]]) for p in joined}
        out = new
    return {"labels": out.astype(np.uint32), "pairs": scored, "merged": merged,
            "fov_evals": ff.fov_evals - evals0, "seconds": time.perf_counter() - t0}


def _agglomerate_rag(labels, image, ff, icfg, cfg, bmap, t0, evals0) -> dict:
    """FFN recoveries of the initial pairs as features of the learned greedy agglomeration."""
    if bmap is None:
        raise ConfigError("expected a boundary map for the agglomeration classifier, found none")
    clf = PairClassifier.load(cfg.classifier)
    # A classifier fitted without a model (boundary and size features only) needs no FFN runs.
    uses_ffn = any(f.startswith("ffn") for f in clf.features)
    pairs = pair_scores(labels, image, ff, icfg, cfg, bmap) if uses_ffn else None
    out, merged = rag_agglomerate(labels, rag_stats(labels, bmap, ffn_pairs=pairs), clf, cfg.threshold)
    return {"labels": out, "pairs": pairs or [], "merged": merged, "fov_evals": ff.fov_evals - evals0,
            "seconds": time.perf_counter() - t0}
