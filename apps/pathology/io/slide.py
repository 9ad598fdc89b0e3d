"""Whole-slide images: OpenSlide (or tiffslide) with levels chosen by magnification.

Slides are read with OpenSlide (generic tiled TIFF as Camelyon16 ships it, SVS,
MRXS, NDPI, ...), or with tiffslide when OpenSlide cannot open a file
(:mod:`.backends`). Levels are chosen by magnification through the slide's
microns-per-pixel, never by a hard-coded level index.

Coordinates are ``(x, y)`` in level-0 pixels unless a name says otherwise;
arrays are ``(H, W)`` or ``(H, W, C)``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.errors import InputError
from deepsci.core.io import DECODE_ERRORS

from .backends import open_reader

__all__ = ["Slide", "LevelChoice", "open_slide", "mpp_for_magnification", "list_slides", "SLIDE_SUFFIXES",
           "MAX_WHOLE_LEVEL_PIXELS"]

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
        try:
            return self._reader.read_rgb(location, level, size)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - see _decode_error
            raise _decode_error(e, self.path) from None

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


def _decode_error(error: Exception, path: Path) -> Exception:
    """A tile-decoding failure of a damaged slide as one :class:`InputError` naming it.

    Codecs (imagecodecs' ``Jpeg8Error``, zlib), tifffile, zarr and OpenSlide
    (``OpenSlideError``, sticky for the rest of the handle's life) each raise their own
    kinds when a file is truncated or its tiles are garbage; anything else is a bug and
    keeps its traceback.
    """
    kinds: tuple[type[BaseException], ...] = DECODE_ERRORS
    try:
        import openslide

        kinds += (openslide.OpenSlideError,)
    except ImportError:  # pragma: no cover - tiffslide only
        pass
    if not isinstance(error, kinds) or isinstance(error, MemoryError):
        return error
    text = str(error).strip().splitlines()
    detail = f"{type(error).__name__}: {text[0][:120]}" if text else type(error).__name__
    return InputError(f"expected a slide whose tiles decode, found a damaged file ({detail})", path)


def open_slide(path: str | os.PathLike, *, mpp: float | None = None) -> Slide:
    """Open a whole-slide image; see :class:`Slide`."""
    return Slide(path, mpp=mpp)
