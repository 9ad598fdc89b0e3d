"""QuPath objects as GeoJSON: lesion detections (points) and probability contours (polygons).

The shape is the one QuPath (0.4 and later) writes in its own GeoJSON export
and reads back with *File > Import objects from file* or a file dropped on the
slide's viewer: a ``FeatureCollection`` whose Features carry, in
``properties``, ``objectType`` (``"detection"`` or ``"annotation"``),
``classification`` ``{"name": "Tumor", "color": [r, g, b]}`` and
``measurements`` ``{name: number}``. Coordinates are level-0 (full
resolution) pixels with the origin at the top-left, x right and y down, as
QuPath's own. Deepsci's readers take these files back:
:func:`~.annotations.read_geojson` the polygons, :func:`read_detections_geojson`
the points.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from deepsci.core.io import atomic_path

from .annotations import read_geojson_points
from .submission import submission_rows

__all__ = ["TUMOUR_CLASS", "PROBABILITY", "LEVEL", "detection_features", "contour_features",
           "write_geojson", "read_detections_geojson"]

#: QuPath's built-in "Tumor" class and its default colour.
TUMOUR_CLASS = {"name": "Tumor", "color": [200, 0, 0]}
#: Measurement of a detection: the heatmap's tumour probability at the lesion.
PROBABILITY = "tumour probability"
#: Measurement of a contour: the probability level it traces.
LEVEL = "tumour probability level"


def _feature(geometry: dict, object_type: str, measurements: dict, name: str | None = None) -> dict:
    props = {"objectType": object_type}
    if name:
        props["name"] = name
    props.update(classification=dict(TUMOUR_CLASS), measurements=measurements)
    return {"type": "Feature", "geometry": geometry, "properties": props}


def detection_features(probs, xs, ys) -> list[dict]:
    """One ``detection`` Point per lesion, with the CSV's exact values (:func:`.submission_rows`)."""
    return [_feature({"type": "Point", "coordinates": [x, y]}, "detection", {PROBABILITY: p})
            for p, x, y in submission_rows(probs, xs, ys)]


def _ring(coords: np.ndarray) -> list[list[float]]:
    return [[float(x), float(y)] for x, y in np.asarray(coords, np.float64)]


def contour_features(polygons, level: float) -> list[dict]:
    """One ``annotation`` Polygon per ``(exterior, [holes])`` of :func:`..contours.contour_polygons`."""
    return [_feature({"type": "Polygon", "coordinates": [_ring(ext)] + [_ring(h) for h in holes]},
                     "annotation", {LEVEL: float(level)}, name=f"tumour probability >= {level:g}")
            for ext, holes in polygons]


def write_geojson(path: str | os.PathLike, features: list[dict]) -> Path:
    """Write ``features`` as one GeoJSON FeatureCollection (atomically)."""
    path = Path(path)
    text = json.dumps({"type": "FeatureCollection", "features": features}, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return path


def read_detections_geojson(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(probs, xs, ys)`` of a detections file, as :func:`.read_detections_csv` returns them.

    Point features with a ``tumour probability`` measurement, in file order (coordinates
    rounded to level-0 pixels as the CSV's).
    """
    points = [p for p in read_geojson_points(path) if PROBABILITY in p.measurements]
    return (np.asarray([p.measurements[PROBABILITY] for p in points], float),
            np.rint([p.x for p in points]).astype(np.int64), np.rint([p.y for p in points]).astype(np.int64))
