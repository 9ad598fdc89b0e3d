"""Label volumes: sequential relabelling, one union-find, face contacts and split consensus.

The bottom of the app: every other module that joins, renumbers or compares
segments uses these (the threshold and learned agglomerations and the block
stitching share :class:`UnionFind`).
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential

__all__ = ["relabel", "UnionFind", "join_segments", "face_pairs", "split_consensus"]


def relabel(labels: np.ndarray, *, min_size: int = 0) -> np.ndarray:
    """Ids ``1..n`` in the order of the old ids; objects under ``min_size`` voxels become 0.

    Parameters
    ----------
    labels : ndarray of int, shape (Z, Y, X)
        Any non-negative integer ids (also 64-bit pair ids); 0 is background.

    Returns
    -------
    ndarray of uint32, shape (Z, Y, X)
    """
    lab = np.asarray(labels)
    if min_size > 1:
        _, inverse, counts = np.unique(lab.ravel(), return_inverse=True, return_counts=True)
        lab = np.where((counts < min_size)[inverse].reshape(lab.shape), 0, lab)
    return relabel_sequential(lab)[0].astype(np.uint32)


class UnionFind:
    """Disjoint sets of ordered keys; a set's root is its smallest key, whatever the order of the unions."""

    def __init__(self, keys: Iterable[Hashable] = ()):
        self.parent: dict = {}
        for k in keys:
            self.parent.setdefault(k, k)

    def find(self, a):
        """The root of ``a``'s set (``a`` is added as a set of its own when new)."""
        self.parent.setdefault(a, a)
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:  # path compression keeps later finds short
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a, b) -> bool:
        """Join the sets of ``a`` and ``b``; True when they were apart."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        lo, hi = (ra, rb) if ra < rb else (rb, ra)
        self.parent[hi] = lo
        return True

    def __iter__(self) -> Iterator:
        return iter(self.parent)


def join_segments(labels: np.ndarray, joins: Iterable[tuple[int, int]]) -> np.ndarray:
    """Labels with every ``(a, b)`` of ``joins`` made one segment (transitively); ids relabelled 1..n.

    Parameters
    ----------
    labels : ndarray of int, shape (Z, Y, X)
    joins : iterable of (int, int)

    Returns
    -------
    ndarray of uint32, shape (Z, Y, X)
    """
    uf = UnionFind()
    for a, b in joins:
        uf.union(int(a), int(b))
    lut = np.arange(int(labels.max()) + 1)
    for k in uf:
        lut[k] = uf.find(k)
    return relabel(lut[labels])


def face_pairs(labels: np.ndarray):
    """Per axis, the face-adjacent voxel pairs of two different non-zero segments.

    Yields
    ------
    (lo, hi, m, key)
        Index tuples of the lower and upper voxel of each pair along the axis, the
        mask of touching pairs within them, and the pair keys ``a << 32 | b`` (a < b).
    """
    lab = labels.astype(np.int64)
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        u, v = lab[lo], lab[hi]
        m = (u != v) & (u > 0) & (v > 0)
        yield lo, hi, m, np.minimum(u[m], v[m]) << np.int64(32) | np.maximum(u[m], v[m])


def split_consensus(a: np.ndarray, b: np.ndarray, *, min_size: int = 1) -> np.ndarray:
    """Split consensus of two segmentations: one object per co-occurring pair of ids.

    Where one run merged two objects that the other kept apart, the pair ids
    differ and the merge is cut. Voxels claimed by only one run keep that
    run's object; pieces under ``min_size`` voxels are dropped.

    Parameters
    ----------
    a, b : ndarray of int, shape (Z, Y, X)

    Returns
    -------
    ndarray of uint32, shape (Z, Y, X)
    """
    if a.shape != b.shape:
        raise ValueError(f"Expected two segmentations of one shape. Received: {a.shape} and {b.shape}")
    pair = a.astype(np.uint64) << np.uint64(32) | b.astype(np.uint64)
    out = relabel(pair)
    # Connected pieces, so that one pair id split in space is not one object.
    pieces = np.zeros(out.shape, np.uint32)
    n = 0
    for i, box in enumerate(ndi.find_objects(out), start=1):
        if box is None:
            continue
        comp, k = ndi.label(out[box] == i)
        pieces[box][comp > 0] = comp[comp > 0] + n
        n += k
    return relabel(pieces, min_size=min_size)
