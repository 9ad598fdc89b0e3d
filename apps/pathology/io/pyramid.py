"""Tiled pyramidal TIFFs (synthetic slides, masks, heatmaps) and heatmap reading.

Every level is a top-level page flagged reduced-resolution, which is what
OpenSlide's generic-tiff reader expects.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from deepsci.core.errors import InputError
from deepsci.core.io import atomic_path, reading

__all__ = ["write_pyramid_tiff", "read_heatmap"]


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
        with reading(path, "a zarr heatmap array"):
            return np.asarray(arr[...], dtype=np.float32), _checked_meta(dict(arr.attrs), path)
    # a truncated or garbled TIFF fails in tifffile or in a codec, with many kinds of error
    with reading(path, "a heatmap TIFF"):
        try:
            with tifffile.TiffFile(path) as tif:
                if not tif.pages:
                    raise InputError("expected a heatmap TIFF, found a TIFF without images", path)
                page = tif.pages[0]
                data = page.asarray().astype(np.float32)
                desc = page.description or "{}"
        except tifffile.TiffFileError as e:
            raise InputError(f"expected a heatmap TIFF, found an unreadable file ({e})", path) from None
    try:
        meta = json.loads(desc)
    except json.JSONDecodeError:
        meta = {}
    if not isinstance(meta, dict) or "stride" not in meta:
        raise InputError("expected a heatmap TIFF written by `deepsci pathology heatmap`, found no "
                         "stride metadata", path)
    return data, _checked_meta(meta, path)


def _checked_meta(meta: dict, path: Path) -> dict:
    """``meta`` once its stride and microns per pixel are positive numbers (``detect`` scales by them)."""
    for key in ("stride", "mpp"):
        value = meta.get(key)
        try:
            ok = math.isfinite(float(value)) and float(value) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"expected a positive heatmap {key} in its metadata, found {str(value)[:30]!r}", path)
    return meta
