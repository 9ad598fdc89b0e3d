"""Whole-slide images, annotations and result files of the pathology app.

Slides are read with OpenSlide (generic tiled TIFF as Camelyon16 ships it, SVS,
MRXS, NDPI, ...), or with tiffslide when OpenSlide cannot open a file. Levels
are chosen by magnification through the slide's microns-per-pixel, never by a
hard-coded level index. Annotations are ASAP XML
(Camelyon16/17) or GeoJSON (QuPath), rasterised to tumour masks at any
downsample. Heatmaps and synthetic slides are written as tiled pyramidal TIFFs
(every level a top-level page flagged reduced-resolution, which is what
OpenSlide's generic-tiff reader expects).

Coordinates are ``(x, y)`` in level-0 pixels unless a name says otherwise;
arrays are ``(H, W)`` or ``(H, W, C)``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepsci.core.errors import InputError
from deepsci.core.io import atomic_path

__all__ = [
    "Slide",
    "LevelChoice",
    "Polygon",
    "open_slide",
    "mpp_for_magnification",
    "read_annotations",
    "read_asap_xml",
    "read_geojson",
    "write_asap_xml",
    "rasterize",
    "mask_to_polygons",
    "write_pyramid_tiff",
    "read_heatmap",
    "write_detections_csv",
    "read_detections_csv",
    "SLIDE_SUFFIXES",
    "list_slides",
]

#: File endings OpenSlide opens (the ones a folder scan picks up).
SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")

#: Objective power -> microns per pixel, by the convention 40x ~ 0.25 um/px.
_MPP_AT_1X = 10.0

#: Largest level (pixels) read whole for a thumbnail or tissue mask; a slide
#: whose coarsest level is bigger is not usefully pyramidal.
MAX_WHOLE_LEVEL_PIXELS = 16384 * 16384

#: Requested and available resolution may differ this much and still count
#: as the same magnification (Camelyon16's 0.243 um/px is "40x").
_MAG_TOLERANCE = 1.25

TUMOUR_GROUPS = ("_0", "_1", "tumor", "tumour", "metastases", "metastasis")
EXCLUDE_GROUPS = ("_2", "exclusion", "exclude", "normal")


def list_slides(folder: str | Path) -> list[Path]:
    """Slide files in ``folder`` (masks ``*_Mask.tif`` and ``*.heatmap.tif`` excluded)."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    out = [p for p in sorted(folder.iterdir())
           if p.suffix.lower() in SLIDE_SUFFIXES and not p.stem.endswith("_Mask")
           and ".heatmap" not in p.name and not p.name.startswith(".")]
    if not out:
        raise InputError(f"expected slide files ({', '.join(SLIDE_SUFFIXES[:4])} ...), found none", folder)
    return out


def mpp_for_magnification(magnification: float) -> float:
    """Microns per pixel of an objective power, e.g. ``40 -> 0.25``."""
    return _MPP_AT_1X / float(magnification)


@dataclass(frozen=True)
class LevelChoice:
    """Where to read a magnification from.

    ``scale`` is target-mpp / level-mpp: read ``round(size * scale)`` pixels at
    ``level`` and resize to ``size`` (1.0 means read directly).
    """

    level: int
    level_mpp: float
    scale: float


class Slide:
    """A whole-slide image (OpenSlide, or tiffslide as fallback) with its microns per pixel.

    Parameters
    ----------
    path : path
        Slide file.
    mpp : float, optional
        Microns per pixel at level 0; required when the file does not record it.

    backend : {"auto", "openslide", "tiffslide"}, optional
        Which library reads the file (default: ``$DEEPSCI_SLIDE_BACKEND`` or
        ``auto``: OpenSlide, falling back to tiffslide; see :mod:`.backends`).

    Raises
    ------
    InputError
        When neither library can read the file or no microns-per-pixel is known.
    """

    def __init__(self, path: str | os.PathLike, *, mpp: float | None = None, backend: str | None = None):
        from .backends import open_reader

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("expected a slide file, found no file", self.path)
        self._reader = open_reader(self.path, backend)
        if mpp is None:
            mpp = self._reader.mpp
        if mpp is None or not math.isfinite(mpp) or mpp <= 0:
            self._reader.close()
            raise InputError(
                "expected microns-per-pixel in the slide's metadata, found none; pass --mpp",
                self.path)
        self.mpp = float(mpp)

    @property
    def backend(self) -> str:
        """``"openslide"`` or ``"tiffslide"``: which library reads this slide."""
        return self._reader.name

    # -- geometry -----------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return tuple(self._reader.dimensions)

    @property
    def level_count(self) -> int:
        return len(self._reader.level_dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._reader.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._reader.level_downsamples

    def level_mpp(self, level: int) -> float:
        """Microns per pixel at ``level``."""
        return self.mpp * float(self.level_downsamples[level])

    @property
    def magnifications(self) -> list[float]:
        """Objective power of each level (by the 40x ~ 0.25 um/px convention)."""
        return [_MPP_AT_1X / self.level_mpp(i) for i in range(self.level_count)]

    def select_level(self, magnification: float) -> LevelChoice:
        """The coarsest level that still resolves ``magnification``.

        Raises
        ------
        InputError
            When the slide's finest level is coarser than requested.
        """
        target = mpp_for_magnification(magnification)
        if target * _MAG_TOLERANCE < self.mpp:
            have = ", ".join(f"{m:g}x" for m in self.magnifications)
            raise InputError(
                f"expected a slide with a {magnification:g}x level ({target:.3g} um/px), found "
                f"levels {have} (level 0 at {self.mpp:.3g} um/px)", self.path)
        best = 0
        for level in range(self.level_count):
            if self.level_mpp(level) <= target * _MAG_TOLERANCE:
                best = level
        level_mpp = self.level_mpp(best)
        scale = target / level_mpp
        if abs(math.log(scale)) < math.log(_MAG_TOLERANCE):
            scale = 1.0
        return LevelChoice(best, level_mpp, scale)

    def level_for_mpp(self, target_mpp: float) -> int:
        """The finest level whose resolution is not finer than ``target_mpp`` allows.

        Used for thumbnails and tissue masks, where any close level will do.
        """
        best = 0
        for level in range(self.level_count):
            if self.level_mpp(level) <= target_mpp * _MAG_TOLERANCE:
                best = level
        return best

    # -- pixels ---------------------------------------------------------------
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB pixels ``(h, w, 3)`` uint8; outside the slide is white glass.

        ``location`` is the top-left corner in level-0 pixels, ``size`` is
        ``(w, h)`` in pixels of ``level``.
        """
        return self._reader.read_rgb(location, level, size)

    def read_patch(self, center: tuple[float, float], size: int, magnification: float,
                   choice: LevelChoice | None = None) -> np.ndarray:
        """A ``(size, size, 3)`` uint8 patch at ``magnification`` centred on ``center``.

        ``center`` is ``(x, y)`` in level-0 pixels; the patch covers
        ``size * mpp(magnification)`` microns whatever level it is read from.
        """
        choice = choice or self.select_level(magnification)
        n, (x0, y0) = self.patch_origin(center, size, choice)
        region = self.read_region((x0, y0), choice.level, (n, n))
        if n != size:
            from PIL import Image

            region = np.asarray(Image.fromarray(region).resize((size, size), Image.BILINEAR))
        return region

    def patch_origin(self, center: tuple[float, float], size: int,
                     choice: LevelChoice) -> tuple[int, tuple[int, int]]:
        """Pixels read per side and the level-0 top-left of a patch centred on ``center``.

        The corner lies on the level's pixel grid, so a patch is exactly those
        level pixels (a corner between them would make OpenSlide interpolate)
        and can equally be cut from a larger region of that level; its centre
        is within half a level pixel of ``center``.
        """
        n = max(1, round(size * choice.scale))
        down = float(self.level_downsamples[choice.level])
        lx = round(center[0] / down - n / 2.0)
        ly = round(center[1] / down - n / 2.0)
        return n, (round(lx * down), round(ly * down))

    def read_level(self, level: int) -> np.ndarray:
        """The whole of ``level`` as ``(H, W, 3)`` uint8 (meant for low-resolution levels)."""
        return self.read_region((0, 0), level, self.level_dimensions[level])

    def thumbnail(self, target_mpp: float) -> tuple[np.ndarray, float]:
        """An RGB image at about ``target_mpp`` and its exact level-0 downsample."""
        level = self.level_for_mpp(target_mpp)
        w, h = self.level_dimensions[level]
        if w * h > MAX_WHOLE_LEVEL_PIXELS:
            raise InputError(
                f"expected a pyramidal slide with a level near {target_mpp:g} um/px, found the "
                f"closest level {level} at {w}x{h} px ({self.level_count} level(s)); convert it to a "
                "tiled pyramid (e.g. vips tiffsave --tile --pyramid)", self.path)
        img = self.read_level(level)
        factor = target_mpp / self.level_mpp(level)
        if factor > 1.5:
            from PIL import Image

            w, h = img.shape[1], img.shape[0]
            nw, nh = max(1, round(w / factor)), max(1, round(h / factor))
            img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BOX))
        down = self.dimensions[0] / img.shape[1]
        return img, down

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return f"Slide({self.path.name!r}, {w}x{h}, {self.level_count} levels, {self.mpp:g} um/px)"


def open_slide(path: str | os.PathLike, *, mpp: float | None = None) -> Slide:
    """Open a whole-slide image; see :class:`Slide`."""
    return Slide(path, mpp=mpp)


# --------------------------------------------------------------------------- annotations
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


def read_geojson(path: str | os.PathLike) -> list[Polygon]:
    """Read QuPath GeoJSON: Polygon / MultiPolygon features, interior rings as holes.

    The class comes from ``properties.classification.name`` (tumour names as in
    :data:`TUMOUR_GROUPS`; ``Exclusion``/``Normal`` mark excluded regions).
    """
    path = Path(path)
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
    polys: list[Polygon] = []
    for feat in features:
        geom = (feat or {}).get("geometry") or {}
        props = (feat or {}).get("properties") or {}
        cls = props.get("classification") or {}
        group = cls.get("name", "Tumor") if isinstance(cls, dict) else str(cls)
        exclude = _group_kind(group, path)
        if geom.get("type") == "Polygon":
            rings_list = [geom.get("coordinates", [])]
        elif geom.get("type") == "MultiPolygon":
            rings_list = geom.get("coordinates", [])
        else:
            continue
        for rings in rings_list:
            for r, ring in enumerate(rings):
                try:
                    coords = np.asarray(ring, dtype=np.float64)[:, :2]
                except (ValueError, IndexError, TypeError):
                    raise InputError("expected [x, y] coordinate pairs in GeoJSON rings, found "
                                     f"{str(ring)[:40]}", path) from None
                if len(coords) < 3:
                    continue
                # An interior ring is a hole in its polygon: it flips inclusion.
                polys.append(Polygon(coords, group=group, exclude=exclude if r == 0 else not exclude))
    if not polys:
        raise InputError("expected GeoJSON with at least one Polygon or MultiPolygon, found none", path)
    return polys


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


# --------------------------------------------------------------------------- pyramids
def _downsample2(img: np.ndarray, mode: str) -> np.ndarray:
    h, w = img.shape[:2]
    h2, w2 = h // 2 * 2, w // 2 * 2
    if h2 == 0 or w2 == 0:
        return img[::2, ::2]
    a = img[:h2, :w2]
    blocks = a.reshape(h2 // 2, 2, w2 // 2, 2, *a.shape[2:])
    if mode == "max":
        return blocks.max(axis=(1, 3))
    mean = blocks.astype(np.float32).mean(axis=(1, 3))
    if np.issubdtype(img.dtype, np.integer):
        return np.round(mean).astype(img.dtype)
    return mean.astype(img.dtype)


def write_pyramid_tiff(path: str | os.PathLike, image: np.ndarray, *, mpp: float, tile: int = 256,
                       compression: str = "zlib", min_size: int = 64, mode: str = "mean",
                       description: dict | None = None) -> Path:
    """Write ``image`` as a tiled pyramidal TIFF that OpenSlide opens as generic-tiff.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        Level 0; uint8 RGB / grey for slides and masks, float32 for heatmaps.
    mpp : float
        Microns per pixel at level 0, stored as resolution tags (pixels/cm).
    tile : int
        Tile edge, a multiple of 16.
    compression : str
        ``"jpeg"`` (RGB uint8 only), ``"zlib"`` or ``"none"``.
    min_size : int
        Stop halving when the smaller side would fall below this.
    mode : {"mean", "max"}
        How each level is reduced: mean for images, max for masks.
    description : dict, optional
        Stored as JSON in level 0's ImageDescription.
    """
    import tifffile

    image = np.asarray(image)
    rgb = image.ndim == 3
    path = Path(path)
    levels = [image]
    while min(levels[-1].shape[:2]) // 2 >= min_size:
        levels.append(_downsample2(levels[-1], mode))
    comp = None if compression == "none" else compression
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=image.nbytes > 2**31) as tif:
        for i, img in enumerate(levels):
            d = 2 ** i
            kwargs = {}
            if comp == "jpeg":
                kwargs["compressionargs"] = {"level": 90}
            tif.write(
                img, tile=(tile, tile), photometric="rgb" if rgb else "minisblack",
                compression=comp, subfiletype=1 if i else 0,
                resolution=(1e4 / (mpp * d), 1e4 / (mpp * d)), resolutionunit="CENTIMETER",
                description=json.dumps(description) if (description and i == 0) else None,
                metadata=None, **kwargs)
    return path


def read_heatmap(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a heatmap written by the ``heatmap`` stage: level 0 ``(H, W)`` float32 and metadata."""
    import tifffile

    path = Path(path)
    if path.suffix == ".zarr":
        import zarr

        try:
            arr = zarr.open_array(str(path), mode="r")
        except Exception as e:  # zarr raises several kinds for a bad store
            raise InputError(f"expected a zarr heatmap array, found an unreadable store ({e})", path) from None
        return np.asarray(arr[...], dtype=np.float32), dict(arr.attrs)
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            data = page.asarray().astype(np.float32)
            desc = page.description or "{}"
    except FileNotFoundError:
        raise InputError("expected a heatmap file, found no file", path) from None
    except tifffile.TiffFileError as e:
        raise InputError(f"expected a heatmap TIFF, found an unreadable file ({e})", path) from None
    try:
        meta = json.loads(desc)
    except json.JSONDecodeError:
        meta = {}
    if "stride" not in meta:
        raise InputError("expected a heatmap TIFF written by `deepsci pathology heatmap`, found no "
                         "stride metadata", path)
    return data, meta


# --------------------------------------------------------------------------- submissions
def write_detections_csv(path: str | os.PathLike, probs, xs, ys) -> Path:
    """Camelyon16 lesion submission: one ``prob,X,Y`` line per detection (level-0 px), no header."""
    lines = [f"{float(p):.6f},{int(round(x))},{int(round(y))}" for p, x, y in zip(probs, xs, ys, strict=True)]
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines))
    return path


def read_detections_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a ``prob,X,Y`` CSV (an optional header line is skipped) -> (probs, xs, ys)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError("expected a detection CSV, found no file", path) from None
    probs, xs, ys = [], [], []
    for n, line in enumerate(text.splitlines(), 1):
        parts = [p.strip() for p in line.split(",")]
        if not line.strip():
            continue
        try:
            p, x, y = float(parts[0]), int(float(parts[1])), int(float(parts[2]))
        except (ValueError, IndexError):
            if n == 1:
                continue  # header
            raise InputError(f"expected 'prob,X,Y' numbers on line {n}, found {line[:60]!r}", path) from None
        probs.append(p)
        xs.append(x)
        ys.append(y)
    return np.asarray(probs, float), np.asarray(xs, np.int64), np.asarray(ys, np.int64)
