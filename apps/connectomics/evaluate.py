"""Segmentation metrics: variation of information, adapted Rand error, ERL, merges/splits.

One label-0 rule holds for every metric (:data:`CONVENTIONS`):

* ground-truth label 0 (background, unlabelled) is left out: its voxels are not scored, as
  in CREMI and SNEMI3D;
* predicted label 0 inside scored ground truth (voxels no segment claimed) is not one
  segment: each such voxel is a segment of its own (:func:`relabel_unclaimed`), as the
  SNEMI3D adapted-Rand script counts its predicted-0 column, so unclaimed voxels count as
  splits and can never merge two objects. The same holds here for VI, ERL and the counts.

The pairwise metrics come from one sparse contingency table of (ground truth,
prediction) ids, so they scale to large volumes. Orders and units are
``skimage.metrics``': :func:`variation_of_information` returns ``(H(seg|gt), H(gt|seg))``
in bits, the *split* then the *merge* part, and :func:`adapted_rand_error` returns
``(error, precision, recall)``; each equals skimage's on the relabelled arrays.

Expected run length (ERL) follows Januszewski et al. (2018): the ground truth is
skeletonised (TEASAR, :mod:`~deepsci.apps.connectomics.skeleton`), every skeleton edge
whose two end nodes lie in the same predicted segment is "correct", connected pieces of
correct edges form runs, and ``ERL = sum(run_length**2) / total_skeleton_length``. A
predicted segment holding skeleton nodes of two or more true objects is a merge and its
edges count zero, so merges are punished as in the paper.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse

from .skeleton import TeasarParams, teasar_graph

__all__ = [
    "CONVENTIONS",
    "LABEL_ZERO_RULE",
    "contingency",
    "relabel_unclaimed",
    "variation_of_information",
    "adapted_rand_error",
    "skeleton_graph",
    "expected_run_length",
    "count_merges_splits",
    "evaluate_segmentation",
    "SegmentationScores",
    "SEGMENT_COLUMNS",
    "segment_table",
]

#: The label-0 rule in one line (printed beside every score table).
LABEL_ZERO_RULE = ("label 0: ground-truth 0 is not scored; predicted 0 inside scored ground truth is one "
                   "segment per voxel (unclaimed voxels count as splits), for every metric")

#: How every number of :func:`evaluate_segmentation` is computed (written beside the scores).
CONVENTIONS = {
    "label_zero": LABEL_ZERO_RULE,
    "ground_truth_background": "voxels with ground-truth label 0 are left out of every metric",
    "unclaimed_prediction": "predicted label 0 inside scored ground truth: each voxel its own segment "
                            "(as SNEMI3D's adapted Rand counts it), in VI, adapted Rand, ERL and the "
                            "counts alike; they reach a merge/split overlap only when min_overlap is 1",
    "vi": "variation of information in bits (log2): vi_split = H(seg|gt), vi_merge = H(gt|seg)",
    "adapted_rand": "skimage.metrics.adapted_rand_error: 1 - F-score of Rand precision and recall",
    "erl": "expected run length (Januszewski et al. 2018) in voxel-size units on TEASAR skeletons of the "
           "ground-truth objects (deepsci.apps.connectomics.skeleton; tips pulled a voxel off the surface); "
           "a segment holding skeleton nodes of two true objects counts zero; max_erl is the ground truth's "
           "own ERL; merged_skeleton_fraction is the skeleton length in merged segments over the total",
    "merges_splits": "overlaps of at least min_overlap voxels: a segment overlapping k objects adds k - 1 "
                     "merges, an object overlapping k segments adds k - 1 splits",
}


def contingency(gt: np.ndarray, seg: np.ndarray, *, ignore_gt=(), ignore_seg=()) -> sparse.csr_matrix:
    """Sparse voxel counts ``n[i, j]`` of ground-truth id ``i`` with predicted id ``j``.

    A plain table of two labellings (no label-0 rule): voxels whose label is in
    ``ignore_gt`` / ``ignore_seg`` are left out. Ids are compacted: rows and columns
    follow ``np.unique`` order.

    Parameters
    ----------
    gt, seg : ndarray of int, shape (Z, Y, X)

    Returns
    -------
    scipy.sparse.csr_matrix of float64, shape (n_gt_ids, n_seg_ids)
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


def _check_labels(a: np.ndarray, name: str) -> None:
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise TypeError(f"Expected integer labels for {name}. Received dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.signedinteger) and a.size and a.min() < 0:
        raise ValueError(f"Expected non-negative labels for {name}. Received minimum {a.min()}")


def relabel_unclaimed(gt: np.ndarray, seg: np.ndarray, *, ignore_labels=(0,)) -> np.ndarray:
    """``seg`` with every predicted-0 voxel inside scored ground truth given an id of its own.

    Parameters
    ----------
    gt, seg : ndarray of non-negative int, shape (Z, Y, X)
        Any integer dtypes; ``gt`` voxels with a label in ``ignore_labels`` are not scored,
        and predicted 0 there stays 0.
    ignore_labels : sequence of int

    Returns
    -------
    ndarray of uint64, shape (Z, Y, X)
        Claimed voxels keep their id; the ``n`` unclaimed ones get ``m + 1 .. m + n`` with
        ``m`` the largest id (ids are first compacted in order if that would overflow).
    """
    if gt.shape != seg.shape:
        raise ValueError(f"Expected arrays of one shape. Received: {gt.shape} and {seg.shape}")
    _check_labels(gt, "gt")
    _check_labels(seg, "seg")
    unclaimed = seg == 0
    if len(ignore_labels):
        unclaimed &= ~np.isin(gt, np.asarray(ignore_labels))
    out = seg.astype(np.uint64)  # a copy: the caller's array is never changed
    n = int(np.count_nonzero(unclaimed))
    if n == 0:
        return out
    top = int(out.max())
    if top > np.iinfo(np.uint64).max - n:
        _, inv = np.unique(out, return_inverse=True)  # 0 is present, so it stays 0
        out = inv.reshape(out.shape).astype(np.uint64)
        top = int(out.max())
    out[unclaimed] = np.arange(top + 1, top + 1 + n, dtype=np.uint64)
    return out


def _scored_table(gt: np.ndarray, seg: np.ndarray, ignore_labels) -> sparse.csr_matrix:
    """Contingency table under the label-0 rule (see the module docstring)."""
    return contingency(gt, relabel_unclaimed(gt, seg, ignore_labels=ignore_labels), ignore_gt=ignore_labels)


def _xlogx(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    out = np.zeros_like(v)
    nz = v > 0
    out[nz] = v[nz] * np.log2(v[nz])
    return out


def _vi(c: sparse.csr_matrix) -> tuple[float, float]:
    n = c.sum()
    if n == 0:
        return 0.0, 0.0
    h_joint = -_xlogx(c.data / n).sum()
    h_gt = -_xlogx(np.asarray(c.sum(axis=1)).ravel() / n).sum()
    h_seg = -_xlogx(np.asarray(c.sum(axis=0)).ravel() / n).sum()
    return float(h_joint - h_gt), float(h_joint - h_seg)


def _rand(c: sparse.csr_matrix) -> tuple[float, float, float]:
    n = c.sum()
    if n == 0:
        return 0.0, 1.0, 1.0
    sum_p_ij2 = (c.data ** 2).sum() - n
    sum_a2 = (np.asarray(c.sum(axis=1)).ravel() ** 2).sum() - n
    sum_b2 = (np.asarray(c.sum(axis=0)).ravel() ** 2).sum() - n
    # skimage's naming: precision against the true sizes, recall against the predicted ones.
    precision = sum_p_ij2 / sum_a2 if sum_a2 else 1.0
    recall = sum_p_ij2 / sum_b2 if sum_b2 else 1.0
    f = 2.0 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(1.0 - f), float(precision), float(recall)


def _merges_splits(c: sparse.csr_matrix, min_overlap: int) -> dict:
    c = c.tocoo()
    big = c.data >= min_overlap
    per_seg = np.bincount(c.col[big], minlength=c.shape[1])
    per_gt = np.bincount(c.row[big], minlength=c.shape[0])
    return {"merges": int(np.clip(per_seg - 1, 0, None).sum()), "splits": int(np.clip(per_gt - 1, 0, None).sum())}


def variation_of_information(gt: np.ndarray, seg: np.ndarray, *, ignore_labels=(0,)) -> tuple[float, float]:
    """``(split, merge)`` = ``(H(seg|gt), H(gt|seg))`` in bits, under the label-0 rule.

    Parameters
    ----------
    gt, seg : ndarray of non-negative int, shape (Z, Y, X)
    ignore_labels : sequence of int
        Ground-truth labels left out (skimage's semantics); predicted 0 inside the rest is
        one segment per voxel.

    Returns
    -------
    (float, float)
        ``skimage.metrics.variation_of_information(gt, relabel_unclaimed(gt, seg), ignore_labels=...)``.
    """
    return _vi(_scored_table(gt, seg, ignore_labels))


def adapted_rand_error(gt: np.ndarray, seg: np.ndarray, *, ignore_labels=(0,)) -> tuple[float, float, float]:
    """``(error, precision, recall)`` of the adapted Rand index, under the label-0 rule.

    Parameters
    ----------
    gt, seg : ndarray of non-negative int, shape (Z, Y, X)
    ignore_labels : sequence of int
        Ground-truth labels left out.

    Returns
    -------
    (float, float, float)
        ``skimage.metrics.adapted_rand_error(gt, relabel_unclaimed(gt, seg), ignore_labels=...)``.
    """
    return _rand(_scored_table(gt, seg, ignore_labels))


def skeleton_graph(gt: np.ndarray, *, voxel_size=(1.0, 1.0, 1.0), ignore_labels=(0,),
                   params: TeasarParams | None = None) -> dict:
    """TEASAR skeleton of every ground-truth object, as one graph of voxel nodes.

    Parameters
    ----------
    gt : ndarray of non-negative int, shape (Z, Y, X)
    voxel_size : sequence of 3 float
        (z, y, x); lengths and ``params`` are in its units (nm).
    params : TeasarParams, optional
        Skeletonisation knobs (:class:`~deepsci.apps.connectomics.skeleton.TeasarParams`).

    Returns
    -------
    dict
        ``nodes`` (K, 3) voxel coordinates, ``label`` (K,) their object, ``edges`` (E, 2)
        node indices, ``length`` (E,) edge length in voxel-size units, ``radius`` (K,)
        distance to the object's boundary.
    """
    _check_labels(gt, "gt")
    return teasar_graph(gt, voxel_size=voxel_size, ignore_labels=ignore_labels, params=params)


def _runs_erl(comp_edges: np.ndarray, ok: np.ndarray, length: np.ndarray, n: int, total: float) -> float:
    """``sum(run**2) / total`` over the connected pieces of the edges where ``ok``."""
    a, b = comp_edges[ok, 0], comp_edges[ok, 1]
    g = sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, comp = sparse.csgraph.connected_components(g, directed=False)
    run = np.bincount(comp[a], weights=length[ok], minlength=n)
    return float((run ** 2).sum() / total)


def expected_run_length(graph: dict, seg: np.ndarray) -> dict:
    """ERL of a segmentation on ground-truth skeletons (see the module docstring).

    Parameters
    ----------
    graph : dict
        :func:`skeleton_graph` of the ground truth.
    seg : ndarray of non-negative int, shape (Z, Y, X)
        Predicted label 0 at a skeleton node is a segment of that node alone.

    Returns
    -------
    dict
        ``erl`` (length units of the graph), ``max_erl`` (the ERL of the ground truth
        itself), ``merged_segments`` (segments holding nodes of two or more objects),
        ``merged_skeleton_fraction`` (skeleton length in those segments, each edge's length
        split evenly between its end nodes, over the total) and ``skeleton_length``.
    """
    nodes, lab, edges, length = graph["nodes"], graph["label"], graph["edges"], graph["length"]
    total = float(length.sum())
    if len(edges) == 0 or total == 0:
        return {"erl": 0.0, "max_erl": 0.0, "merged_segments": 0, "merged_skeleton_fraction": 0.0,
                "skeleton_length": total}
    _check_labels(seg, "seg")
    pred = seg[tuple(nodes.T)]
    _, pi = np.unique(pred, return_inverse=True)
    zero = pred == 0
    pi[zero] = pi.max() + 1 + np.arange(int(zero.sum()))  # the label-0 rule: one segment per node
    _, li = np.unique(lab, return_inverse=True)
    # A segment holding skeleton nodes of two true objects is a merger.
    pairs = np.unique(pi.astype(np.int64) * (int(li.max()) + 1) + li)
    per_seg = np.bincount(pairs // (int(li.max()) + 1), minlength=int(pi.max()) + 1)
    merged = per_seg[pi] > 1
    a, b = edges[:, 0], edges[:, 1]
    ok = (pi[a] == pi[b]) & ~merged[a]
    n = len(nodes)
    merged_len = float((0.5 * length * (merged[a].astype(float) + merged[b])).sum())
    return {"erl": _runs_erl(edges, ok, length, n, total),
            "max_erl": _runs_erl(edges, li[a] == li[b], length, n, total),
            "merged_segments": int((per_seg > 1).sum()), "merged_skeleton_fraction": merged_len / total,
            "skeleton_length": total}


def count_merges_splits(gt: np.ndarray, seg: np.ndarray, *, min_overlap: int = 100, ignore_labels=(0,)) -> dict:
    """Count merge and split errors from overlaps of at least ``min_overlap`` voxels.

    A *merge* is one extra true object inside a predicted segment (a segment overlapping
    k objects adds k - 1); a *split* is one extra segment inside a true object. Under the
    label-0 rule an unclaimed voxel is a one-voxel segment, so it counts as a split only
    when ``min_overlap`` is 1.

    Returns
    -------
    dict
        ``merges`` and ``splits`` (int).
    """
    return _merges_splits(_scored_table(gt, seg, ignore_labels), min_overlap)


@dataclass
class SegmentationScores:
    """Every score of one segmentation against one ground truth (see :data:`CONVENTIONS`)."""

    vi_split: float
    vi_merge: float
    vi_total: float
    adapted_rand_error: float
    rand_precision: float
    rand_recall: float
    erl: float
    max_erl: float
    merged_skeleton_fraction: float
    merges: int
    splits: int
    n_segments: int
    unclaimed_voxels: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def evaluate_segmentation(gt: np.ndarray, seg: np.ndarray, *, voxel_size=(1.0, 1.0, 1.0), min_overlap: int = 100,
                          graph: dict | None = None) -> SegmentationScores:
    """All metrics of ``seg`` against ``gt`` under one label-0 rule (see :data:`CONVENTIONS`).

    Parameters
    ----------
    gt, seg : ndarray of non-negative int, shape (Z, Y, X)
    voxel_size : sequence of 3 float
        ERL is reported in these units (nm for real data).
    min_overlap : int
        Voxels for an overlap to count as a merge or split.
    graph : dict, optional
        Precomputed :func:`skeleton_graph` of ``gt`` (to score many segmentations).

    Returns
    -------
    SegmentationScores
        ``n_segments`` counts the predicted ids other than 0; ``unclaimed_voxels`` the
        predicted-0 voxels inside scored ground truth (each scored as its own segment).
    """
    scored = relabel_unclaimed(gt, seg, ignore_labels=(0,))
    c = contingency(gt, scored, ignore_gt=(0,))
    vi_split, vi_merge = _vi(c)
    are, prec, rec = _rand(c)
    graph = graph if graph is not None else skeleton_graph(gt, voxel_size=voxel_size)
    erl = expected_run_length(graph, scored)
    ms = _merges_splits(c, min_overlap)
    claimed = seg[seg != 0]
    return SegmentationScores(vi_split=vi_split, vi_merge=vi_merge, vi_total=vi_split + vi_merge,
                              adapted_rand_error=are, rand_precision=prec, rand_recall=rec,
                              erl=erl["erl"], max_erl=erl["max_erl"],
                              merged_skeleton_fraction=erl["merged_skeleton_fraction"],
                              merges=ms["merges"], splits=ms["splits"], n_segments=int(len(np.unique(claimed))),
                              unclaimed_voxels=int(np.count_nonzero((seg == 0) & (gt != 0))))


#: Columns of :func:`segment_table` (``segments.csv`` of ``deepsci connectomics evaluate``).
SEGMENT_COLUMNS = ("segment", "voxels", "z0", "y0", "x0", "z1", "y1", "x1", "unlabelled_voxels",
                   "gt_1", "overlap_1", "gt_2", "overlap_2", "gt_3", "overlap_3", "merged_objects", "split_partners")


def _partners(cols, vals, gid, top: int) -> list[tuple[int, int]]:
    """(ground-truth id, overlap) of one segment's row, id 0 left out, most first, ties to the smaller id."""
    pairs = [(int(gid[j]), int(v)) for j, v in zip(cols, vals, strict=True) if gid[j] != 0]
    return sorted(pairs, key=lambda p: (-p[1], p[0]))[:top]


def segment_table(gt: np.ndarray, seg: np.ndarray, *, min_overlap: int = 100) -> list[dict]:
    """One row per predicted segment (id other than 0): size, bounding box, ground-truth partners.

    Parameters
    ----------
    gt, seg : ndarray of non-negative int, shape (Z, Y, X)
    min_overlap : int
        Voxels for an overlap to count as a merge or split (as :func:`count_merges_splits`).

    Returns
    -------
    list of dict
        Keys :data:`SEGMENT_COLUMNS`, by ascending segment id: ``voxels``; the bounding box
        ``z0, y0, x0`` (first voxel) to ``z1, y1, x1`` (one past the last, as slice bounds);
        ``unlabelled_voxels`` over ground-truth 0 (not scored); ``gt_k`` and ``overlap_k``, the
        k-th most overlapped ground-truth object (k = 1, 2, 3) and the voxels shared (ties to the smaller id,
        ``""`` past the last); ``merged_objects``, the objects it overlaps by at least
        ``min_overlap`` (2 or more: a merge); ``split_partners``, the other segments overlapping
        its ``gt_1`` by at least ``min_overlap`` when it does too (``;``-separated, ascending: that
        object is split between them).
    """
    if gt.shape != seg.shape:
        raise ValueError(f"Expected arrays of one shape. Received: {gt.shape} and {seg.shape}")
    _check_labels(gt, "gt")
    _check_labels(seg, "seg")
    sid, si = np.unique(seg.ravel(), return_inverse=True)
    gid, gi = np.unique(gt.ravel(), return_inverse=True)
    c = sparse.coo_matrix((np.ones(si.size, np.int64), (si, gi)), shape=(len(sid), len(gid))).tocsr()
    c.sum_duplicates()
    cc = c.tocsc()
    voxels = np.bincount(si, minlength=len(sid))
    boxes = ndi.find_objects(si.reshape(seg.shape) + 1)
    rows = []
    for k, s in enumerate(sid):
        if s == 0:
            continue
        cols, vals = c.indices[c.indptr[k]:c.indptr[k + 1]], c.data[c.indptr[k]:c.indptr[k + 1]]
        pairs = _partners(cols, vals, gid, 3)
        row = {"segment": int(s), "voxels": int(voxels[k]),
               **{a: int(sl.start) for a, sl in zip(("z0", "y0", "x0"), boxes[k], strict=True)},
               **{a: int(sl.stop) for a, sl in zip(("z1", "y1", "x1"), boxes[k], strict=True)},
               "unlabelled_voxels": int(sum(v for j, v in zip(cols, vals, strict=True) if gid[j] == 0))}
        for i in range(3):
            row[f"gt_{i + 1}"], row[f"overlap_{i + 1}"] = pairs[i] if i < len(pairs) else ("", "")
        row["merged_objects"] = int(sum(1 for j, v in zip(cols, vals, strict=True)
                                        if gid[j] != 0 and v >= min_overlap))
        partners = []
        if pairs and pairs[0][1] >= min_overlap:
            j = int(np.searchsorted(gid, pairs[0][0]))
            r, v = cc.indices[cc.indptr[j]:cc.indptr[j + 1]], cc.data[cc.indptr[j]:cc.indptr[j + 1]]
            partners = sorted(int(sid[i]) for i, n in zip(r, v, strict=True)
                              if n >= min_overlap and sid[i] not in (0, s))
        row["split_partners"] = ";".join(str(p) for p in partners)
        rows.append(row)
    return rows
