"""Segmentation metrics: variation of information, adapted Rand error, ERL, merges/splits.

All pairwise metrics are computed from one sparse contingency table of
(ground truth, prediction) ids, so they scale to large volumes. Conventions
match ``skimage.metrics``: ``variation_of_information(gt, seg)`` returns
``(H(seg|gt), H(gt|seg))`` — the first is the *split* part (one true object
cut into several), the second the *merge* part — and ``adapted_rand_error``
ignores ground-truth label 0 by default.

Expected run length (ERL) follows Januszewski et al. (2018): the ground truth
is skeletonised, every skeleton edge whose two end voxels lie in the same
predicted segment is "correct", pieces of correct edges form runs, and
``ERL = sum(run_length**2) / total_skeleton_length``. A predicted segment that
touches the skeletons of two or more true objects is a merge and its runs
count zero, so merges are punished as in the paper.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

__all__ = [
    "contingency",
    "variation_of_information",
    "adapted_rand_error",
    "skeleton_graph",
    "expected_run_length",
    "count_merges_splits",
    "evaluate_segmentation",
    "SegmentationScores",
]


def contingency(gt: np.ndarray, seg: np.ndarray, *, ignore_gt=(), ignore_seg=()) -> sparse.csr_matrix:
    """Sparse voxel counts ``n[i, j]`` of ground-truth id ``i`` with predicted id ``j``.

    Voxels whose label is in ``ignore_gt`` / ``ignore_seg`` are left out. Ids
    are compacted: rows and columns follow ``np.unique`` order.
    """
    if gt.shape != seg.shape:
        raise ValueError(f"Expected arrays of one shape. Received: {gt.shape} and {seg.shape}")
    g, s = gt.ravel(), seg.ravel()
    keep = np.ones(g.shape, bool)
    for v in ignore_gt:
        keep &= g != v
    for v in ignore_seg:
        keep &= s != v
    g, s = g[keep], s[keep]
    _, gi = np.unique(g, return_inverse=True)
    _, si = np.unique(s, return_inverse=True)
    data = np.ones(gi.size, np.float64)
    shape = (int(gi.max()) + 1 if gi.size else 0, int(si.max()) + 1 if si.size else 0)
    return sparse.coo_matrix((data, (gi, si)), shape=shape).tocsr()


def _xlogx(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    out = np.zeros_like(v)
    nz = v > 0
    out[nz] = v[nz] * np.log2(v[nz])
    return out


def variation_of_information(gt: np.ndarray, seg: np.ndarray, *, ignore_labels=()) -> tuple[float, float]:
    """``(split, merge)`` = ``(H(seg|gt), H(gt|seg))`` in bits (skimage's order and units).

    ``ignore_labels`` drops voxels whose *ground-truth* label is one of them
    (skimage's semantics).
    """
    c = contingency(gt, seg, ignore_gt=ignore_labels)
    n = c.sum()
    if n == 0:
        return 0.0, 0.0
    p = c.data / n
    h_joint = -_xlogx(p).sum()
    h_gt = -_xlogx(np.asarray(c.sum(axis=1)).ravel() / n).sum()
    h_seg = -_xlogx(np.asarray(c.sum(axis=0)).ravel() / n).sum()
    return float(h_joint - h_gt), float(h_joint - h_seg)


def adapted_rand_error(gt: np.ndarray, seg: np.ndarray, *, ignore_labels=(0,)) -> tuple[float, float, float]:
    """``(error, precision, recall)`` of the adapted Rand index (as ``skimage.metrics``).

    Voxels whose *ground-truth* label is in ``ignore_labels`` are left out.
    """
    c = contingency(gt, seg, ignore_gt=ignore_labels)
    n = c.sum()
    if n == 0:
        return 0.0, 1.0, 1.0
    sum_p_ij2 = (c.data ** 2).sum() - n
    a = np.asarray(c.sum(axis=1)).ravel()
    b = np.asarray(c.sum(axis=0)).ravel()
    sum_a2 = (a ** 2).sum() - n
    sum_b2 = (b ** 2).sum() - n
    # skimage's naming: precision against the true sizes, recall against the predicted ones.
    precision = sum_p_ij2 / sum_a2 if sum_a2 else 1.0
    recall = sum_p_ij2 / sum_b2 if sum_b2 else 1.0
    f = 2.0 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(1.0 - f), float(precision), float(recall)


def skeleton_graph(gt: np.ndarray, *, voxel_size=(1.0, 1.0, 1.0), ignore_labels=(0,)) -> dict:
    """Skeletonise every ground-truth object and list its 26-connected edges.

    Returns
    -------
    dict
        ``nodes`` (K, 3) voxel coordinates, ``label`` (K,) their object,
        ``edges`` (E, 2) node indices, ``length`` (E,) Euclidean edge length
        in voxel-size units.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import skeletonize

    nodes, labels = [], []
    for i, box in enumerate(ndi.find_objects(gt.astype(np.int64)), start=1):
        if box is None or i in ignore_labels:
            continue
        pad = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
        mask = gt[pad] == i
        sk = skeletonize(mask) > 0
        if not sk.any():  # a tiny object still has one skeleton voxel
            sk = np.zeros_like(mask)
            sk[tuple(np.argwhere(mask)[0])] = True
        pts = np.argwhere(sk) + np.asarray([p.start for p in pad])
        nodes.append(pts)
        labels.append(np.full(len(pts), i))
    if not nodes:
        return {"nodes": np.zeros((0, 3), int), "label": np.zeros(0, int), "edges": np.zeros((0, 2), int),
                "length": np.zeros(0)}
    nodes, labels = np.concatenate(nodes), np.concatenate(labels)
    index = {tuple(p): k for k, p in enumerate(nodes)}
    edges = []
    offsets = [o for o in np.ndindex(3, 3, 3) if o > (1, 1, 1)]  # each undirected edge once
    for k, p in enumerate(nodes):
        for o in offsets:
            q = tuple(p + np.asarray(o) - 1)
            j = index.get(q)
            if j is not None and labels[j] == labels[k]:
                edges.append((k, j))
    edges = np.asarray(edges, int).reshape(-1, 2)
    vs = np.asarray(voxel_size, float)
    length = np.linalg.norm((nodes[edges[:, 0]] - nodes[edges[:, 1]]) * vs, axis=1) if len(edges) else np.zeros(0)
    return {"nodes": nodes, "label": labels, "edges": edges, "length": length}


def expected_run_length(graph: dict, seg: np.ndarray) -> dict:
    """ERL of a segmentation on ground-truth skeletons (see the module docstring).

    Returns
    -------
    dict
        ``erl`` (length units of the graph), ``max_erl`` (ERL of a perfect
        segmentation on these skeletons), ``merged_segments``.
    """
    nodes, lab, edges, length = graph["nodes"], graph["label"], graph["edges"], graph["length"]
    if len(edges) == 0:
        return {"erl": 0.0, "max_erl": 0.0, "merged_segments": 0}
    pred = seg[tuple(nodes.T)]
    # A segment touching skeleton nodes of two true objects is a merger.
    pairs = np.unique(np.stack([pred, lab], 1)[pred != 0], axis=0)
    seg_ids, n_obj = np.unique(pairs[:, 0], return_counts=True) if len(pairs) else (np.zeros(0), np.zeros(0))
    merged = set(seg_ids[n_obj > 1].tolist())
    a, b = edges[:, 0], edges[:, 1]
    ok = (pred[a] == pred[b]) & (pred[a] != 0) & ~np.isin(pred[a], list(merged))
    total = length.sum()
    # Runs: connected components of the correct edges, per object.
    n = len(nodes)
    g = sparse.coo_matrix((np.ones(ok.sum()), (a[ok], b[ok])), shape=(n, n))
    _, comp = sparse.csgraph.connected_components(g, directed=False)
    run = np.bincount(comp[a[ok]], weights=length[ok], minlength=n)
    full = np.bincount(lab[a], weights=length)
    return {"erl": float((run ** 2).sum() / total), "max_erl": float((full ** 2).sum() / total),
            "merged_segments": len(merged)}


def count_merges_splits(gt: np.ndarray, seg: np.ndarray, *, min_overlap: int = 100, ignore_labels=(0,)) -> dict:
    """Count merge and split errors from overlaps of at least ``min_overlap`` voxels.

    A *merge* is one extra true object inside a predicted segment (a segment
    overlapping k objects adds k - 1); a *split* is one extra segment inside a
    true object. Background (predicted 0) is neither.
    """
    c = contingency(gt, seg, ignore_gt=ignore_labels, ignore_seg=(0,)).tocoo()
    big = c.data >= min_overlap
    rows, cols = c.row[big], c.col[big]
    per_seg = np.bincount(cols) if len(cols) else np.zeros(0, int)
    per_gt = np.bincount(rows) if len(rows) else np.zeros(0, int)
    return {"merges": int(np.clip(per_seg - 1, 0, None).sum()), "splits": int(np.clip(per_gt - 1, 0, None).sum())}


@dataclass
class SegmentationScores:
    """Every score of one segmentation against one ground truth."""

    vi_split: float
    vi_merge: float
    vi_total: float
    adapted_rand_error: float
    rand_precision: float
    rand_recall: float
    erl: float
    max_erl: float
    merges: int
    splits: int
    n_segments: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def evaluate_segmentation(gt: np.ndarray, seg: np.ndarray, *, voxel_size=(1.0, 1.0, 1.0), min_overlap: int = 100,
                          graph: dict | None = None) -> SegmentationScores:
    """All metrics of ``seg`` against ``gt`` (ground-truth label 0 ignored).

    Parameters
    ----------
    gt, seg : ndarray of int, shape (Z, Y, X)
    voxel_size : sequence of 3 float
        ERL is reported in these units (nm for real data).
    graph : dict, optional
        Precomputed :func:`skeleton_graph` of ``gt`` (to score many segmentations).
    """
    vi_split, vi_merge = variation_of_information(gt, seg, ignore_labels=(0,))
    are, prec, rec = adapted_rand_error(gt, seg)
    graph = graph if graph is not None else skeleton_graph(gt, voxel_size=voxel_size)
    erl = expected_run_length(graph, seg)
    ms = count_merges_splits(gt, seg, min_overlap=min_overlap)
    return SegmentationScores(vi_split=vi_split, vi_merge=vi_merge, vi_total=vi_split + vi_merge,
                              adapted_rand_error=are, rand_precision=prec, rand_recall=rec,
                              erl=erl["erl"], max_erl=erl["max_erl"], merges=ms["merges"], splits=ms["splits"],
                              n_segments=int(len(np.unique(seg[seg != 0]))))
