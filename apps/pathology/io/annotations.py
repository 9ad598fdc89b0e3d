"""Annotations: ASAP XML (Camelyon16/17) and QuPath GeoJSON, rasterised to tumour masks.

GeoJSON point objects (QuPath detections) are read by :func:`read_geojson_points`.

Polygons are in level-0 pixels ``(x, y)``; masks are ``(H, W)`` bool at a
downsample (level-0 pixels per mask pixel).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepsci.core.errors import InputError
from deepsci.core.io import atomic_path

__all__ = ["Polygon", "PointObject", "TUMOUR_GROUPS", "EXCLUDE_GROUPS", "read_annotations", "read_asap_xml",
           "read_geojson", "read_geojson_points", "write_asap_xml", "rasterize", "resize_mask", "mask_to_polygons"]

TUMOUR_GROUPS = ("_0", "_1", "tumor", "tumour", "metastases", "metastasis")
EXCLUDE_GROUPS = ("_2", "exclusion", "exclude", "normal")


@dataclass
class Polygon:
    """One annotation polygon.

    Attributes
    ----------
    coords : ndarray, shape (K, 2)
        Vertices ``(x, y)`` in level-0 pixels.
    group : str
        The annotation group (ASAP ``PartOfGroup`` or QuPath class).
    exclude : bool
        True for holes / excluded regions (Camelyon16 group ``_2``).
    """

    coords: np.ndarray
    group: str = "Tumor"
    exclude: bool = False
    name: str = ""
    meta: dict = field(default_factory=dict)


def _group_kind(group: str, path) -> bool:
    """True if ``group`` marks an exclusion, False for tumour; error otherwise."""
    g = group.strip().lower()
    if g in TUMOUR_GROUPS:
        return False
    if g in EXCLUDE_GROUPS:
        return True
    raise InputError(
        f"expected annotation group one of {list(TUMOUR_GROUPS + EXCLUDE_GROUPS)}, found {group!r}", path)


def read_asap_xml(path: str | os.PathLike) -> list[Polygon]:
    """Read ASAP XML annotations (Camelyon16/17) safely with defusedxml.

    Raises
    ------
    InputError
        Malformed XML, entity tricks (XML bombs), no polygons, bad coordinates.
    """
    import defusedxml
    import defusedxml.ElementTree as ET

    path = Path(path)
    try:
        root = ET.parse(str(path)).getroot()
    except FileNotFoundError:
        raise InputError("expected an annotation file, found no file", path) from None
    except defusedxml.DefusedXmlException as e:
        raise InputError(f"expected plain ASAP XML, found forbidden XML constructs ({type(e).__name__})",
                         path) from None
    except ET.ParseError as e:
        raise InputError(f"expected well-formed XML, found a parse error ({e})", path) from None
    polys = []
    for ann in root.iter("Annotation"):
        group = ann.get("PartOfGroup") or ann.get("Name") or ""
        exclude = _group_kind(group, path)
        pts = []
        for c in ann.iter("Coordinate"):
            try:
                order = float(c.get("Order", len(pts)))
                pts.append((order, float(c.get("X").replace(",", ".")), float(c.get("Y").replace(",", "."))))
            except (TypeError, ValueError, AttributeError):
                raise InputError(
                    f"expected numeric Coordinate X/Y in annotation {ann.get('Name')!r}, found "
                    f"X={c.get('X')!r} Y={c.get('Y')!r}", path) from None
        if len(pts) < 3:
            continue
        pts.sort(key=lambda p: p[0])
        coords = np.array([(x, y) for _, x, y in pts], dtype=np.float64)
        polys.append(Polygon(coords, group=group, exclude=exclude, name=ann.get("Name", "")))
    if not polys:
        raise InputError("expected ASAP XML with at least one polygon of 3+ coordinates, found none", path)
    return polys


def write_asap_xml(path: str | os.PathLike, polygons: list[Polygon]) -> Path:
    """Write polygons as ASAP XML (atomically); tumour as ``_0``, holes as ``_2``."""
    from xml.etree.ElementTree import Element, SubElement, tostring

    root = Element("ASAP_Annotations")
    anns = SubElement(root, "Annotations")
    for i, poly in enumerate(polygons):
        group = "_2" if poly.exclude else (poly.group if poly.group in ("_0", "_1") else "_0")
        a = SubElement(anns, "Annotation", Name=poly.name or f"Annotation {i}", Type="Polygon",
                       PartOfGroup=group, Color="#F4FA58")
        cs = SubElement(a, "Coordinates")
        for k, (x, y) in enumerate(np.asarray(poly.coords)):
            SubElement(cs, "Coordinate", Order=str(k), X=f"{x:.2f}", Y=f"{y:.2f}")
    groups = SubElement(root, "AnnotationGroups")
    for name, color in (("_0", "#FF0000"), ("_1", "#FF0000"), ("_2", "#00FF00")):
        g = SubElement(groups, "Group", Name=name, PartOfGroup="None", Color=color)
        SubElement(g, "Attributes")
    text = '<?xml version="1.0"?>\n' + tostring(root, encoding="unicode")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def _geojson_features(path: Path) -> list:
    """The Features of a GeoJSON file: a FeatureCollection, one Feature or a list of them."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("expected an annotation file, found no file", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"expected GeoJSON, found invalid JSON ({e})", path) from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features", [])
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, list):
        features = data
    else:
        raise InputError("expected a GeoJSON FeatureCollection or list of Features, found "
                         f"{type(data).__name__}", path)
    if not isinstance(features, list):
        raise InputError(f"expected GeoJSON features as a list, found {type(features).__name__}", path)
    # every Feature, its geometry and properties are objects (or null): checked once, here
    for n, feat in enumerate(features):
        if feat is None:
            continue
        if not isinstance(feat, dict):
            raise InputError(f"expected GeoJSON feature {n} as an object, found {type(feat).__name__}", path)
        for key in ("geometry", "properties"):
            if feat.get(key) is not None and not isinstance(feat[key], dict):
                raise InputError(f"expected the {key} of GeoJSON feature {n} as an object, found "
                                 f"{type(feat[key]).__name__}", path)
    return features


def _class_name(props: dict) -> str:
    cls = props.get("classification") or {}
    name = cls.get("name", "Tumor") if isinstance(cls, dict) else cls
    return name if isinstance(name, str) else str(name)


def read_geojson(path: str | os.PathLike) -> list[Polygon]:
    """Read QuPath GeoJSON: Polygon / MultiPolygon features, interior rings as holes.

    The class comes from ``properties.classification.name`` (tumour names as in
    :data:`TUMOUR_GROUPS`; ``Exclusion``/``Normal`` mark excluded regions).
    Features of other geometries (points, lines) are skipped.
    """
    path = Path(path)
    polys: list[Polygon] = []
    for feat in _geojson_features(path):
        geom = (feat or {}).get("geometry") or {}
        props = (feat or {}).get("properties") or {}
        group = _class_name(props)
        exclude = _group_kind(group, path)
        if geom.get("type") == "Polygon":
            rings_list = [geom.get("coordinates")]
        elif geom.get("type") == "MultiPolygon":
            rings_list = geom.get("coordinates")
        else:
            continue
        if not isinstance(rings_list, list) or not all(isinstance(r, list) for r in rings_list):
            raise InputError(f"expected {geom['type']} coordinates as lists of rings, found "
                             f"{str(geom.get('coordinates'))[:40]}", path)
        for rings in rings_list:
            for r, ring in enumerate(rings):
                try:
                    coords = np.asarray(ring, dtype=np.float64)
                    if coords.ndim != 2 or coords.shape[1] < 2:
                        raise ValueError
                    coords = coords[:, :2]
                except (ValueError, IndexError, TypeError):
                    raise InputError("expected [x, y] coordinate pairs in GeoJSON rings, found "
                                     f"{str(ring)[:40]}", path) from None
                if not np.isfinite(coords).all():
                    raise InputError(f"expected finite GeoJSON coordinates, found {str(ring)[:40]}", path)
                if len(coords) < 3:
                    continue
                # An interior ring is a hole in its polygon: it flips inclusion.
                polys.append(Polygon(coords, group=group, exclude=exclude if r == 0 else not exclude))
    if not polys:
        raise InputError("expected GeoJSON with at least one Polygon or MultiPolygon, found none", path)
    return polys


@dataclass
class PointObject:
    """One point object of a GeoJSON file (a QuPath detection, say).

    Attributes
    ----------
    x, y : float
        Level-0 pixels.
    group : str
        The class (``properties.classification.name``).
    object_type : str
        QuPath's ``objectType`` (``"annotation"`` when absent, as QuPath reads it).
    measurements : dict
        ``properties.measurements`` (QuPath 0.4+: ``{name: value}``; the older
        list of ``{"name", "value"}`` is read too).
    """

    x: float
    y: float
    group: str = "Tumor"
    object_type: str = "annotation"
    measurements: dict = field(default_factory=dict)


def _measurements(props: dict, path: Path) -> dict:
    raw = props.get("measurements") or {}
    if isinstance(raw, list):  # QuPath before 0.4
        raw = {m.get("name"): m.get("value") for m in raw if isinstance(m, dict)}
    if not isinstance(raw, dict):
        raise InputError(f"expected GeoJSON measurements as an object, found {type(raw).__name__}", path)
    try:
        # bool is an int to Python, not a measurement; NaN is how QuPath writes a missing value
        if any(isinstance(v, (bool, str, list, dict)) for v in raw.values()):
            raise TypeError
        return {str(k): float(v) for k, v in raw.items() if v is not None}
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"expected numeric GeoJSON measurements, found {str(raw)[:60]}", path) from None


def read_geojson_points(path: str | os.PathLike) -> list[PointObject]:
    """Read the Point / MultiPoint features of a GeoJSON file (e.g. ``detect``'s detections).

    Returns
    -------
    list of PointObject
        In file order; features of other geometries are skipped.
    """
    path = Path(path)
    out: list[PointObject] = []
    for feat in _geojson_features(path):
        geom = (feat or {}).get("geometry") or {}
        props = (feat or {}).get("properties") or {}
        if geom.get("type") not in ("Point", "MultiPoint"):
            continue
        coords = geom.get("coordinates", [])
        try:
            xy = np.asarray([coords] if geom["type"] == "Point" else coords, dtype=np.float64)
            if xy.ndim != 2 or xy.shape[1] not in (2, 3) or not np.isfinite(xy).all():
                raise ValueError  # [x, y] or [x, y, z] per point, as GeoJSON allows
            xy = xy[:, :2]
        except (ValueError, TypeError):
            raise InputError(f"expected [x, y] GeoJSON point coordinates, found {str(coords)[:40]}", path) from None
        kind, values = str(props.get("objectType") or "annotation"), _measurements(props, path)
        out += [PointObject(float(x), float(y), _class_name(props), kind, dict(values)) for x, y in xy]
    return out


def read_annotations(path: str | os.PathLike, *, dimensions: tuple[int, int] | None = None) -> list[Polygon]:
    """Read ASAP XML or GeoJSON (by suffix) and check coordinates lie on the slide.

    Parameters
    ----------
    dimensions : (width, height), optional
        Level-0 slide size; vertices further than 1 % outside raise InputError.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".json", ".geojson"):
        polys = read_geojson(path)
    elif suffix == ".xml":
        polys = read_asap_xml(path)
    else:
        raise InputError(f"expected annotations as .xml (ASAP) or .geojson, found {suffix or 'no suffix'}",
                         path)
    if dimensions is not None:
        w, h = dimensions
        tol_x, tol_y = 0.01 * w + 1, 0.01 * h + 1
        for poly in polys:
            c = poly.coords
            if (c[:, 0].min() < -tol_x or c[:, 1].min() < -tol_y or c[:, 0].max() > w + tol_x
                    or c[:, 1].max() > h + tol_y):
                raise InputError(
                    f"expected annotation coordinates inside the {w}x{h} slide, found polygon "
                    f"{poly.name or poly.group!r} spanning x {c[:, 0].min():.0f}..{c[:, 0].max():.0f}, "
                    f"y {c[:, 1].min():.0f}..{c[:, 1].max():.0f}", path)
    return polys


def rasterize(polygons: list[Polygon], shape: tuple[int, int], downsample: float) -> np.ndarray:
    """Tumour mask ``(H, W)`` bool at ``downsample`` (level-0 pixels per mask pixel).

    Tumour polygons are filled first, then excluded regions (holes) are cleared,
    which is how ASAP converts Camelyon16 XML to masks.
    """
    from PIL import Image, ImageDraw

    h, w = shape
    canvas = Image.new("1", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for value, polys in ((1, [p for p in polygons if not p.exclude]),
                         (0, [p for p in polygons if p.exclude])):
        for poly in polys:
            # Pixel i's centre is level-0 (i + 0.5) * downsample; PIL fills by centre.
            xy = np.asarray(poly.coords, dtype=np.float64) / downsample - 0.5
            draw.polygon([tuple(p) for p in xy.tolist()], fill=value, outline=value)
    mask = np.array(canvas, dtype=bool)
    return mask


def mask_to_polygons(mask: np.ndarray, downsample: float, *, min_vertices: int = 3,
                     tolerance: float = 0.5) -> list[Polygon]:
    """Trace a boolean mask ``(H, W)`` into tumour polygons and hole polygons.

    Outer boundaries become tumour (``_0``), boundaries of holes inside tumour
    become exclusions (``_2``); coordinates are level-0 pixels.
    """
    from scipy import ndimage as ndi

    mask = np.asarray(mask, dtype=bool)
    polys: list[Polygon] = []
    labels, n = ndi.label(mask)
    for i in range(1, n + 1):
        region = labels == i
        filled = ndi.binary_fill_holes(region)
        polys += _trace(filled, downsample, exclude=False, min_vertices=min_vertices, tolerance=tolerance)
        holes, nh = ndi.label(filled & ~region)
        for j in range(1, nh + 1):
            polys += _trace(holes == j, downsample, exclude=True, min_vertices=min_vertices,
                            tolerance=tolerance)
    return polys


def _trace(region: np.ndarray, downsample: float, *, exclude: bool, min_vertices: int,
           tolerance: float) -> list[Polygon]:
    from skimage import measure

    padded = np.pad(region, 1).astype(np.float32)
    out = []
    for contour in measure.find_contours(padded, 0.5):
        contour = measure.approximate_polygon(contour, tolerance=tolerance)
        if len(contour) < min_vertices + 1:
            continue
        # find_contours gives (row, col) of the padded image, at pixel centres.
        xy = (contour[:, ::-1] - 1 + 0.5) * downsample
        out.append(Polygon(xy, group="_2" if exclude else "_0", exclude=exclude))
    return out


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask ``(h, w)`` to ``shape`` (pixel centres sampled)."""
    rows = np.minimum((np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0], mask.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1], mask.shape[1] - 1)
    return mask[rows.astype(int)[:, None], cols.astype(int)[None, :]]
