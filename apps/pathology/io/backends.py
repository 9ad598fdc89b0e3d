"""Slide readers: OpenSlide first, ``tiffslide`` as the fallback.

OpenSlide (through ``openslide-bin``) reads every common whole-slide format.
``tiffslide`` (pure Python on tifffile + imagecodecs) reads the TIFF-based
ones (generic tiled TIFF, SVS, NDPI ...) and is used when OpenSlide is not
importable or cannot open a file. Both present the same small interface, so
:class:`deepsci.apps.pathology.io.slide.Slide` does not care which one it got.

The backend is chosen by ``Slide(..., backend=...)`` or the environment
variable ``DEEPSCI_SLIDE_BACKEND`` (``auto`` | ``openslide`` | ``tiffslide``);
the variable reaches Dask worker processes too.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from deepsci.core.errors import ConfigError, InputError

__all__ = ["BACKENDS", "SlideReader", "open_reader", "resolve_backend"]

BACKENDS = ("auto", "openslide", "tiffslide")
ENV_VAR = "DEEPSCI_SLIDE_BACKEND"

_UNSUPPORTED = "expected a tiled, pyramidal whole-slide image OpenSlide can read, found an unsupported or non-tiled file"


class SlideReader:
    """What :class:`~deepsci.apps.pathology.io.slide.Slide` needs from a backend.

    Attributes
    ----------
    name : str
        ``"openslide"`` or ``"tiffslide"``.
    dimensions : (int, int)
        Level-0 ``(width, height)``.
    level_dimensions : tuple of (int, int)
    level_downsamples : tuple of float
    mpp : float or None
        Microns per pixel at level 0 from the file's metadata, if any.
    """

    name = ""
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None

    def read_rgb(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """``(h, w, 3)`` uint8; outside the slide is white glass."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _float_or_none(raw) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


class _OpenSlideReader(SlideReader):
    name = "openslide"

    def __init__(self, path: Path):
        import openslide

        self._osr = openslide.OpenSlide(str(path))
        self.dimensions = self._osr.dimensions
        self.level_dimensions = self._osr.level_dimensions
        self.level_downsamples = self._osr.level_downsamples
        self.mpp = _float_or_none(self._osr.properties.get("openslide.mpp-x"))

    def read_rgb(self, location, level, size):
        rgba = np.asarray(self._osr.read_region((int(location[0]), int(location[1])), level,
                                                (int(size[0]), int(size[1]))))
        return _rgba_on_white(rgba)

    def close(self) -> None:
        self._osr.close()


class _TiffSlideReader(SlideReader):
    name = "tiffslide"

    def __init__(self, path: Path):
        import tiffslide

        self._ts = tiffslide.TiffSlide(str(path))
        try:
            page = self._ts.ts_tifffile.series[0].levels[0].keyframe
            # OpenSlide refuses stripped TIFFs; refusing them here too keeps the
            # two backends' errors the same (a strip image is no slide).
            if not page.is_tiled:
                raise InputError(_UNSUPPORTED, path)
            self.dimensions = tuple(self._ts.dimensions)
            self.level_dimensions = tuple(tuple(d) for d in self._ts.level_dimensions)
            self.level_downsamples = tuple(float(d) for d in self._ts.level_downsamples)
            self.mpp = _float_or_none(self._ts.properties.get("tiffslide.mpp-x"))
        except BaseException:
            self._ts.close()
            raise

    def read_rgb(self, location, level, size):
        # tiffslide pads outside the slide with black; clip the request to the
        # level and paste it on white so both backends agree on glass.
        x0, y0 = int(location[0]), int(location[1])
        w, h = int(size[0]), int(size[1])
        down = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        lx, ly = int(x0 // down), int(y0 // down)
        cx0, cy0 = max(lx, 0), max(ly, 0)
        cx1, cy1 = min(lx + w, lw), min(ly + h, lh)
        out = np.full((h, w, 3), 255, np.uint8)
        if cx1 > cx0 and cy1 > cy0:
            region = self._ts.read_region((_level0(cx0, down), _level0(cy0, down)), level,
                                          (cx1 - cx0, cy1 - cy0), as_array=True, padding=False)
            region = np.asarray(region)
            if region.ndim == 2:
                region = np.repeat(region[..., None], 3, axis=2)
            elif region.shape[2] == 4:
                region = _rgba_on_white(region)
            out[cy0 - ly:cy0 - ly + region.shape[0], cx0 - lx:cx0 - lx + region.shape[1]] = region[..., :3]
        return out

    def close(self) -> None:
        self._ts.close()


def _level0(level_px: int, down: float) -> int:
    # tiffslide maps a level-0 coordinate to int(x / down); pick the x that lands
    # exactly on level pixel ``level_px`` even for non-integer downsamples.
    x = math.ceil(level_px * down)
    while int(x / down) < level_px:
        x += 1
    return x


def _rgba_on_white(rgba: np.ndarray) -> np.ndarray:
    # OpenSlide returns premultiplied RGBA with alpha 0 outside the scanned
    # area; compositing on white makes that look like glass, not tissue.
    rgb = rgba[..., :3].astype(np.uint16)
    alpha = rgba[..., 3:4].astype(np.uint16)
    return np.minimum(rgb + (255 - alpha), 255).astype(np.uint8)


class _QuietDecodeNoise:
    """Logging filter: drop what tifffile and asyncio print about a file that does not decode.

    A damaged slide or heatmap is already reported in one line naming it; tifffile also
    logs each bad page offset, and tiffslide's zarr reads leave asyncio tasks whose
    codec errors are logged ("Task exception was never retrieved", with a traceback)
    when they are collected. ``--verbose`` (``DEEPSCI_VERBOSE=1``) keeps them.
    """

    _ASYNCIO = ("Task exception was never retrieved", "Task was destroyed but it is pending")

    def filter(self, record) -> bool:  # noqa: A003 - logging's name
        if os.environ.get("DEEPSCI_VERBOSE") == "1":
            return True
        if record.name == "asyncio":
            return not str(record.msg).startswith(self._ASYNCIO)
        return record.levelno >= 50  # tifffile: only CRITICAL


def quiet_decode_logs() -> None:
    """Install :class:`_QuietDecodeNoise` on the ``tifffile`` and ``asyncio`` loggers (once)."""
    import logging

    for name in ("tifffile", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietDecodeNoise) for f in logger.filters):
            logger.addFilter(_QuietDecodeNoise())


quiet_decode_logs()


def resolve_backend(backend: str | None) -> str:
    """The backend to use: the argument, else ``$DEEPSCI_SLIDE_BACKEND``, else ``auto``."""
    name = (backend or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if name not in BACKENDS:
        raise ConfigError(f"expected a slide backend among {list(BACKENDS)}, found {name!r}")
    return name


def _open_openslide(path: Path) -> SlideReader:
    import openslide

    try:
        return _OpenSlideReader(path)
    except openslide.OpenSlideUnsupportedFormatError:
        raise InputError(_UNSUPPORTED, path) from None
    except openslide.OpenSlideError as e:
        raise InputError(f"expected a readable slide, found a corrupt file ({e})", path) from None


def _open_tiffslide(path: Path) -> SlideReader:
    try:
        return _TiffSlideReader(path)
    except InputError:
        raise
    except Exception as e:  # tifffile, zarr and PIL raise many kinds for a bad file
        raise InputError(f"{_UNSUPPORTED} ({type(e).__name__}: {e})", path) from None


def open_reader(path: str | os.PathLike, backend: str | None = None) -> SlideReader:
    """Open ``path`` with the chosen backend.

    ``auto`` tries OpenSlide and falls back to ``tiffslide`` when OpenSlide is
    not importable or refuses the file; if both fail, OpenSlide's error is
    raised (it names the cause the way users know it).

    Raises
    ------
    InputError
        When no backend can read the file.
    """
    path = Path(path)
    name = resolve_backend(backend)
    if name == "tiffslide":
        return _open_tiffslide(path)
    try:
        import openslide  # noqa: F401 - availability check
    except ImportError:
        if name == "openslide":
            raise ConfigError("expected OpenSlide (pip install openslide-python openslide-bin), "
                              "found it not importable") from None
        return _open_tiffslide(path)
    try:
        return _open_openslide(path)
    except InputError as first:
        if name == "openslide":
            raise
        try:
            return _open_tiffslide(path)
        except InputError:
            raise first from None
