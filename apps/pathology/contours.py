"""Tumour-probability contours of a heatmap: nested rings assembled into valid polygons.

:func:`contour_polygons` traces the iso-line ``p = level`` of a heatmap with
marching squares (:func:`skimage.measure.find_contours`) on the heatmap padded
with zeros, so every ring is closed. Heatmap cell ``(r, c)`` holds the
probability of the patch centred at level-0 ``((c + 0.5) s, (r + 0.5) s)``
(``s`` the stride, :mod:`.heatmap`); the rings are scaled to level-0 pixels
by that rule. Marching squares gives disjoint simple rings once no value sits
exactly on the level (values within 1e-6 of it are moved to ``level +- 1e-6``,
ties counting as inside), so each ring's depth in the nesting (how many other
rings contain it) says what it is: even depths are exteriors, odd depths the
holes of the ring just outside them. Exteriors are written counter-clockwise
and holes clockwise, RFC 7946's right-hand rule for ``(x, y)`` as given (with
y pointing down, as in the image, an exterior appears clockwise on screen).

:func:`write_contours` writes them as QuPath annotations (:mod:`.io.qupath`),
one Feature per polygon.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .io.qupath import contour_features, write_geojson

__all__ = ["TIE", "signed_area", "contour_rings", "contour_polygons", "write_contours"]

#: Heatmap values closer than this to a level are moved off it (ties count as inside).
TIE = 1e-6


def signed_area(ring: np.ndarray) -> float:
    """Shoelace area of a closed ring ``(K, 2)`` of ``(x, y)``: > 0 counter-clockwise."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def contour_rings(heatmap: np.ndarray, level: float, stride: float) -> list[np.ndarray]:
    """Closed rings ``(K, 2)`` (first = last vertex) of ``heatmap == level``, level-0 ``(x, y)``.

    Parameters
    ----------
    heatmap : ndarray, shape (H, W)
        Tumour probabilities (NaN counts as 0).
    level : float
        In (0, 1].
    stride : float
        Level-0 pixels per heatmap cell.
    """
    from skimage import measure

    a = np.nan_to_num(np.asarray(heatmap, np.float64), nan=0.0)
    if a.ndim != 2:
        raise ValueError(f"Expected a 2-D heatmap (H, W). Received: shape {a.shape}")
    near = np.abs(a - level) < TIE
    a[near] = np.where(a[near] >= level, level + TIE, level - TIE)
    rings = []
    for c in measure.find_contours(np.pad(a, 1), level):
        # padded (row, col) -> cell centre (col - 1 + 0.5, row - 1 + 0.5) * stride
        xy = (c[:, ::-1] - 0.5) * float(stride)
        xy[-1] = xy[0]  # closed (find_contours repeats the first point)
        rings.append(xy)
    return rings


def _parents(rings: list[np.ndarray], order: list[int]) -> dict[int, int | None]:
    """Each ring's innermost containing ring (``order``: largest area first)."""
    from skimage.measure import points_in_poly

    box = np.array([[r[:, 0].min(), r[:, 1].min(), r[:, 0].max(), r[:, 1].max()] for r in rings])
    parents: dict[int, int | None] = {}
    for k, i in enumerate(order):
        # rings are disjoint: one vertex of ring i tells whether another ring contains it
        x, y = rings[i][0]
        prev = np.asarray(order[:k], dtype=int)
        cand = prev[(box[prev, 0] <= x) & (box[prev, 2] >= x) & (box[prev, 1] <= y) & (box[prev, 3] >= y)]
        # the smallest of the larger rings first: the innermost that contains it
        parents[i] = next((int(j) for j in cand[::-1]
                           if points_in_poly(rings[i][:1], rings[j][:-1])[0]), None)
    return parents


def contour_polygons(heatmap: np.ndarray, level: float,
                     stride: float) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """The region ``heatmap >= level`` as polygons ``(exterior, [holes])`` in level-0 pixels.

    Rings are closed; exteriors counter-clockwise (positive :func:`signed_area`),
    holes clockwise. Largest polygon first.

    Returns
    -------
    list of (ndarray (K, 2), list of ndarray (K_i, 2))
    """
    rings = contour_rings(heatmap, level, stride)
    order = sorted(range(len(rings)), key=lambda i: -abs(signed_area(rings[i])))
    parents = _parents(rings, order)
    depth: dict[int, int] = {}
    owner: dict[int, int] = {}  # ring -> the exterior of its polygon
    for i in order:  # a parent is larger, so it comes first
        parent = parents[i]
        depth[i] = 0 if parent is None else depth[parent] + 1
        owner[i] = i if depth[i] % 2 == 0 else parent
    polygons: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}
    for i in order:
        ring = rings[i]
        if owner[i] == i:
            polygons[i] = (ring if signed_area(ring) > 0 else ring[::-1].copy(), [])
        else:
            polygons[owner[i]][1].append(ring if signed_area(ring) < 0 else ring[::-1].copy())
    return list(polygons.values())


def write_contours(path: str | os.PathLike, heatmap: np.ndarray, levels, stride: float) -> Path:
    """``heatmap``'s contours at each of ``levels`` as one QuPath GeoJSON file (atomically)."""
    features = []
    for level in levels:
        features += contour_features(contour_polygons(heatmap, float(level), stride), float(level))
    return write_geojson(path, features)
