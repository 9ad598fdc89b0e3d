"""Field-of-view detection, scale normalisation, contrast normalisation, gradability.

A fundus photograph is a bright disc (the camera's circular field of view)
on a dark background, often clipped at the top and bottom.  We threshold the
background, fit a circle to the field-of-view edge that is *not* on the image
border (so clipped discs still give the true radius), crop a square around the
circle and rescale it so the fundus diameter is ``size`` pixels.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter
from scipy import ndimage as ndi

from deepsci.core.config import check_ranges, option
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import atomic_path, write_json, write_text
from deepsci.core.parallel import thread_map
from deepsci.core.progress import progress
from deepsci.core.runs import RunDir

from .invalid import refuse_invalid, removed_on_error, skipped_list
from .io import MAX_PIXELS, DatasetSpec, load_image, read_dataset

# Working resolution for FOV detection: the circle fit is sub-pixel accurate
# at this size and costs a few milliseconds whatever the camera resolution.
_DETECT_SIZE = 256
#: Side at which gradability is measured, whatever the output size.
QUALITY_SIZE = 256
#: Age after which a temporary in a shared cache is taken to be a killed run's.
STALE_SECONDS = 600



@dataclass
class PreprocessConfig:
    """Settings of :func:`preprocess_image` (saved with every model).

    Attributes
    ----------
    size : int
        Output side; the fundus diameter after rescaling (299 as Gulshan et al.).
    local_contrast : bool
        Subtract a Gaussian-blurred copy (sigma = ``size / 30``) to even out
        illumination and bring lesions forward.
    min_brightness : float
        Mean luminance in the FOV (0-1) below which an image is too dark.
    min_sharpness : float
        Focus measure (see :func:`quality`) below which an image is too blurred.
    max_pixels : int
        Decompression-bomb cap.
    """

    size: int = option(299, "Fundus diameter after rescaling (the network's input side).",
                       min=32)
    local_contrast: bool = option(True, "Subtract a blurred copy (even illumination).")
    min_brightness: float = option(0.08, "Mean FOV luminance (0-1) below which an image is too dark.",
                                   min=0)
    min_sharpness: float = option(3.0, "Focus measure below which an image is too blurred.", min=0)
    max_pixels: int = option(MAX_PIXELS, "Largest photograph decoded (decompression-bomb cap).",
                             min=1)

    def validate(self) -> PreprocessConfig:
        """Raise :class:`ConfigError` for impossible values; return self."""
        check_ranges(self)
        if self.min_brightness >= 1:  # 1 would call every photograph too dark
            raise ConfigError(f"expected --min-brightness < 1, found {self.min_brightness}")
        return self


@dataclass
class PreprocessRunConfig:
    """Settings of ``retinopathy preprocess`` (:func:`run_preprocess`).

    Attributes
    ----------
    out : Path
        Output folder: ``cache/`` (preprocessed PNGs) and ``quality.csv``.
    data : DatasetSpec
    preprocess : PreprocessConfig
    workers : int
        Preprocessing threads.
    skip_invalid : bool
        Skip unreadable photographs (listed in ``quality.csv`` and ``run.json``)
        instead of stopping at the first one.
    """

    out: Path = field(metadata={"help": "Output folder (cache/ + quality.csv)."})
    data: DatasetSpec = field(default_factory=DatasetSpec)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    workers: int = option(2, "Preprocessing threads.", min=1)
    skip_invalid: bool = option(False, "Skip unreadable photographs (listed in quality.csv "
                                       "and run.json) instead of stopping.")

    def __post_init__(self) -> None:
        self.out = Path(self.out)

    def validate(self) -> PreprocessRunConfig:
        """Raise :class:`ConfigError` for impossible values; return self."""
        if self.data.labels is None:
            raise ConfigError("expected --labels, found none")
        self.data.validate()
        self.preprocess.validate()
        check_ranges(self)
        return self


@dataclass
class FieldOfView:
    """A circular field of view in pixel coordinates of the original image."""

    cy: float
    cx: float
    radius: float
    found: bool
    reason: str = ""


@dataclass
class Quality:
    """Gradability of one photograph."""

    gradable: bool
    brightness: float
    sharpness: float
    reasons: list[str] = field(default_factory=list)


def _luminance(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        return img
    return img[..., :3].max(axis=-1)


def find_fov(image: np.ndarray, *, channel_axis: int | None = -1) -> FieldOfView:
    """Find the circular field of view of a fundus photograph.

    Parameters
    ----------
    image : ndarray, shape (H, W, C) or (H, W)
        uint8 (0-255) or float (0-1) photograph.
    channel_axis : int or None
        Axis of colour channels; ``None`` for grey images.

    Returns
    -------
    FieldOfView
        Centre and radius in pixels; ``found=False`` with a reason when no
        disc-shaped bright region covers a plausible part of the image.
    """
    img = np.asarray(image)
    if channel_axis is not None:
        img = np.moveaxis(img, channel_axis, -1)[..., :3]
    if np.issubdtype(img.dtype, np.floating):
        img = np.clip(img * 255.0, 0, 255)
    img = np.ascontiguousarray(img.astype(np.uint8, copy=False))
    h, w = img.shape[:2]
    f = _DETECT_SIZE / max(h, w)
    # Downscale before taking the channel max: on a 2-20 MP photograph the
    # full-resolution max would cost more than everything else together.
    pil = Image.fromarray(img)
    factor = max(1, int(1 / f) // 2)
    if factor > 1:
        pil = pil.reduce(factor)
    pil = pil.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR)
    small = _luminance(np.asarray(pil))
    hi = np.percentile(small, 99)
    if hi < 8:
        return FieldOfView(h / 2, w / 2, 0.0, False, "image is black")
    # Background is near black; the fundus edge is dark too, so a low threshold
    # relative to the bright part keeps the whole disc.
    mask = small > max(4.0, 0.1 * hi)
    mask = ndi.binary_opening(mask, iterations=2)
    labels, n = ndi.label(mask)
    if n == 0:
        return FieldOfView(h / 2, w / 2, 0.0, False, "no bright region")
    sizes = ndi.sum(mask, labels, range(1, n + 1))
    mask = ndi.binary_fill_holes(labels == (np.argmax(sizes) + 1))
    area = mask.sum()
    if area < 0.1 * mask.size:
        return FieldOfView(h / 2, w / 2, 0.0, False, "bright region too small for a fundus")
    edge = mask & ~ndi.binary_erosion(mask)
    edge[[0, -1], :] = False
    edge[:, [0, -1]] = False
    # Pixels of the disc edge that lie on the image border are clipping, not
    # the circle; drop a 2-px frame.
    edge[:2, :] = edge[-2:, :] = False
    edge[:, :2] = edge[:, -2:] = False
    ys, xs = np.nonzero(edge)
    if len(xs) < 20:
        return FieldOfView(h / 2, w / 2, 0.0, False, "no field-of-view edge visible")
    cy, cx, r = _fit_circle(ys.astype(np.float64), xs.astype(np.float64))
    if not np.isfinite(r) or r <= 0:
        return FieldOfView(h / 2, w / 2, 0.0, False, "circle fit failed")
    # The disc must explain the bright region: a circle of that radius should
    # cover most of the mask (a rectangle or blob would not).
    yy, xx = np.ogrid[: mask.shape[0], : mask.shape[1]]
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    iou = (inside & mask).sum() / max(1, (inside | mask).sum())
    if iou < 0.9:
        return FieldOfView(cy / f, cx / f, r / f, False,
                           f"bright region is not a circular field of view (IoU {iou:.2f})")
    # Convert from pixel-centre coordinates of the small image to the original.
    return FieldOfView((cy + 0.5) / f - 0.5, (cx + 0.5) / f - 0.5, (r + 0.5) / f, True)


def _fit_circle(ys: np.ndarray, xs: np.ndarray) -> tuple[float, float, float]:
    """Least-squares algebraic circle fit (Kasa) with one outlier-trimming pass."""
    def fit(y, x):
        a = np.column_stack([x, y, np.ones_like(x)])
        b = x**2 + y**2
        (p, q, c), *_ = np.linalg.lstsq(a, b, rcond=None)
        cx, cy = p / 2, q / 2
        return cy, cx, np.sqrt(max(c + cx**2 + cy**2, 0.0))

    cy, cx, r = fit(ys, xs)
    # Notches and flares (e.g. camera marks) bend the edge; refit without them.
    d = np.abs(np.hypot(ys - cy, xs - cx) - r)
    keep = d <= max(1.5, np.percentile(d, 80))
    if keep.sum() >= 10:
        cy, cx, r = fit(ys[keep], xs[keep])
    return float(cy), float(cx), float(r)


def crop_to_fov(image: np.ndarray, fov: FieldOfView, size: int) -> np.ndarray:
    """Crop a square around the field of view and rescale its diameter to ``size``.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W, 3)
    fov : FieldOfView
    size : int

    Returns
    -------
    ndarray of uint8, shape (size, size, 3)
        Pixels outside the circle are zero.
    """
    r = fov.radius
    box = (fov.cx - r + 0.5, fov.cy - r + 0.5, fov.cx + r + 0.5, fov.cy + r + 0.5)
    im = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    # Image.transform with EXTENT samples the box directly and fills outside
    # the photograph with black, so clipped discs are padded, not stretched.
    # reduce first for speed on large photographs (box filter, then bilinear).
    factor = int(max(1, (2 * r) // (2 * size)))
    if factor > 1:
        im = im.reduce(factor)
        box = tuple(v / factor for v in box)
    out = im.transform((size, size), Image.EXTENT, box, resample=Image.BILINEAR)
    arr = np.asarray(out).copy()
    arr[~circle_mask(size)] = 0
    return arr


def circle_mask(size: int, *, shrink: float = 1.0) -> np.ndarray:
    """Boolean disc of diameter ``size * shrink`` centred in a ``size`` square, shape (size, size).

    Cached and read-only: every image of a run uses the same few masks.
    """
    return _circle_mask(int(size), float(shrink))


@functools.lru_cache(maxsize=32)
def _circle_mask(size: int, shrink: float) -> np.ndarray:
    c = (size - 1) / 2
    yy, xx = np.ogrid[:size, :size]
    m = (yy - c) ** 2 + (xx - c) ** 2 <= (size * shrink / 2) ** 2
    m.flags.writeable = False
    return m


def local_contrast(image: np.ndarray, *, sigma: float | None = None) -> np.ndarray:
    """Subtract a Gaussian-blurred copy: ``4 * (I - G_sigma * I) + 128`` inside the FOV.

    Parameters
    ----------
    image : ndarray of uint8, shape (S, S, 3)
        Output of :func:`crop_to_fov`.
    sigma : float, optional
        Blur width in pixels; default ``S / 30``.

    Returns
    -------
    ndarray of uint8, shape (S, S, 3)
    """
    size = image.shape[0]
    sigma = size / 30 if sigma is None else sigma
    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)),
                         dtype=np.int16)
    out = 4 * (image.astype(np.int16) - blurred) + 128
    out = np.clip(out, 0, 255).astype(np.uint8)
    # The blur mixes black background into the rim; blank a thin ring so the
    # network does not learn the bright halo that results.
    out[~circle_mask(size, shrink=0.95)] = 0
    return out


def quality(image: np.ndarray, *, min_brightness: float = 0.08,
            min_sharpness: float = 3.0) -> Quality:
    """Gradability of a rescaled fundus image (output of :func:`crop_to_fov`).

    Brightness is the mean of the max-RGB luminance inside the FOV (0-1).
    Sharpness is the standard deviation of the Laplacian of the green channel
    (where vessels and lesions have most contrast) inside the FOV, divided by
    its mean brightness so that an image is not penalised for being dim.
    :func:`preprocess_image` measures it at :data:`QUALITY_SIZE` pixels.

    Parameters
    ----------
    image : ndarray of uint8, shape (S, S, 3)

    Returns
    -------
    Quality
    """
    size = image.shape[0]
    inside = circle_mask(size, shrink=0.9)
    lum = image.max(axis=-1)[inside].astype(np.float32) / 255.0
    brightness = float(lum.mean())
    green = image[..., 1].astype(np.float32) / 255.0
    lap = ndi.laplace(ndi.gaussian_filter(green, 0.5))[inside]
    sharp = float(lap.std() / max(green[inside].mean(), 1e-3) * 100)
    reasons = []
    if brightness < min_brightness:
        reasons.append("too dark")
    if sharp < min_sharpness:
        reasons.append("too blurred")
    return Quality(not reasons, brightness, sharp, reasons)


def preprocess_image(image: np.ndarray, config: PreprocessConfig
                     ) -> tuple[np.ndarray | None, Quality, FieldOfView]:
    """Full preprocessing of one photograph.

    Returns
    -------
    out : ndarray of uint8, shape (size, size, 3), or None
        None when no field of view was found.
    quality : Quality
        Measured on the rescaled image before contrast normalisation.
    fov : FieldOfView
    """
    fov = find_fov(image)
    if not fov.found:
        return None, Quality(False, 0.0, 0.0, [f"no field of view: {fov.reason}"]), fov
    # Quality is judged at one fixed resolution so that thresholds do not
    # depend on the training size; crop once at the larger of the two sizes
    # and shrink to the other (one resampling of the photograph, not two).
    big = max(config.size, QUALITY_SIZE)
    first = crop_to_fov(image, fov, big)
    scaled, probe = first, first
    if config.size != big:
        scaled = _shrink(first, config.size)
    elif QUALITY_SIZE != big:
        probe = _shrink(first, QUALITY_SIZE)
    q = quality(probe, min_brightness=config.min_brightness,
                min_sharpness=config.min_sharpness)
    out = local_contrast(scaled) if config.local_contrast else scaled
    return out, q, fov


def _shrink(image: np.ndarray, size: int) -> np.ndarray:
    out = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR,
                                                   reducing_gap=2.0)).copy()
    out[~circle_mask(size)] = 0
    return out


def load_cached(paths: list[str]) -> np.ndarray:
    """Cached preprocessed PNGs -> uint8 array, shape (N, S, S, 3)."""
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 preprocessed images (N, S, S, 3) -> float32 network input in [-1, 1]."""
    return images.astype(np.float32) / 127.5 - 1.0


def _cache_key(path: str, config: PreprocessConfig) -> str:
    st = os.stat(path)
    h = hashlib.sha1(json.dumps([os.path.abspath(path), st.st_size, st.st_mtime_ns,
                                 asdict(config)]).encode()).hexdigest()
    return h[:20]


def _process_one(path: str, config: PreprocessConfig, cache_dir: Path) -> dict:
    key = _cache_key(path, config)
    png = cache_dir / f"{key}.png"
    meta = cache_dir / f"{key}.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        # Older caches recorded unreadable files; those are re-read (and now refused).
        if not str(info.get("reasons", "")).startswith("unreadable:"):
            return {"error": "", **info}
    try:
        # JPEGs decode at a reduced DCT scale when that still leaves the fundus
        # larger than it will be after rescaling: several times faster on
        # 10-20 MP camera images, and the result is the same to within rounding.
        image = load_image(path, max_pixels=config.max_pixels,
                           min_side=int(1.25 * max(config.size, QUALITY_SIZE)))
    except InputError as e:
        # Not cached: a file the user repairs is read again, and a refused run
        # leaves nothing of the bad file behind.
        return {"cache": "", "gradable": 0, "reasons": f"unreadable: {e.message}",
                "brightness": 0.0, "sharpness": 0.0, "error": e.message}
    out, q, fov = preprocess_image(image, config)
    if out is not None:
        with atomic_path(png) as tmp:
            Image.fromarray(out).save(tmp, format="PNG", compress_level=0)
    info = {"cache": str(png) if out is not None else "", "gradable": int(q.gradable),
            "reasons": "; ".join(q.reasons), "brightness": round(q.brightness, 4),
            "sharpness": round(q.sharpness, 3), "fov_cx": round(fov.cx, 1),
            "fov_cy": round(fov.cy, 1), "fov_radius": round(fov.radius, 1)}
    # The JSON is written last: its presence marks the image done (resume).
    write_json(meta, info)
    return {"error": "", **info}


def check_cache_dir(cache_dir: str | Path) -> Path:
    """``cache_dir`` as a Path; InputError when it, or a folder above it, is a file."""
    cache_dir = Path(cache_dir)
    probe = cache_dir
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError("expected a folder for the image cache, found a file", probe)
    return cache_dir


def _remove_stale(cache_dir: Path, *, everything: bool) -> None:
    """Remove the temporaries (``.<key>.*.tmp.png``) a killed run left in the cache.

    A cache of the run's own folder is the run's alone: every temporary is
    stale. A shared cache (``<model>/cache``) may hold another live run's, so
    only those older than :data:`STALE_SECONDS` go.
    """
    if not cache_dir.is_dir():
        return
    now = time.time()
    for p in cache_dir.glob(".*.tmp*"):
        try:
            if everything or now - p.stat().st_mtime > STALE_SECONDS:
                p.unlink()
        except FileNotFoundError:  # its writer finished meanwhile
            pass


def preprocess_table(df: pd.DataFrame, config: PreprocessConfig, cache_dir: str | Path, *,
                     workers: int = 2, desc: str = "preprocess", owned: bool = False
                     ) -> pd.DataFrame:
    """Preprocess every image of a dataset table into an on-disk cache.

    Already-cached images (same file, size, mtime and config) are skipped, so
    an interrupted run resumes and later epochs never repeat the work.
    Unreadable images are flagged (``gradable`` 0, ``error`` saying why)
    rather than aborting here; :func:`refuse_invalid` applies the commands'
    rule to them.

    Parameters
    ----------
    df : pandas.DataFrame
        Table from :func:`deepsci.apps.retinopathy.io.read_dataset` (``path`` column).
    config : PreprocessConfig
    cache_dir : path-like
        Created when the first image is cached.
    owned : bool
        The cache belongs to this run alone (inside its output folder): every
        temporary a killed earlier attempt left there is removed.
    workers : int
        Threads (PIL and NumPy release the GIL for the heavy parts).

    Returns
    -------
    pandas.DataFrame
        ``df`` plus columns ``cache`` (PNG path or ""), ``gradable``
        (0/1, measured), ``reasons``, ``brightness``, ``sharpness`` and
        ``error`` ("" or why the file could not be read).
    """
    config.validate()
    cache_dir = check_cache_dir(cache_dir)
    _remove_stale(cache_dir, everything=owned)
    paths = list(df["path"])
    infos: list[dict] = []
    bar = progress(total=len(paths), desc=desc, unit="img")
    # Chunks keep the progress bar moving while threads share the work.
    step = 32 * max(1, workers)
    for start in range(0, len(paths), step):
        chunk = paths[start:start + step]
        infos += thread_map(lambda p: _process_one(p, config, cache_dir), chunk,
                            workers=max(1, workers))
        bar.update(len(chunk))
    bar.close()
    out = df.copy()
    if "gradable" in out.columns:
        out = out.rename(columns={"gradable": "gradable_label"})
    for k in ("cache", "gradable", "reasons", "brightness", "sharpness", "error"):
        out[k] = [i.get(k, "") for i in infos]
    return out


def run_preprocess(config: PreprocessRunConfig, *, overwrite: bool = False) -> pd.DataFrame:
    """Preprocess a labelled set into ``out/cache`` and write ``out/quality.csv``.

    An unreadable photograph is an error naming it; with ``skip_invalid`` it is
    listed in ``quality.csv`` (``skipped``) and ``run.json`` instead.

    Returns
    -------
    pandas.DataFrame
        :func:`preprocess_table`'s table.
    """
    config.validate()
    with removed_on_error(config.out, "retinopathy preprocess"), RunDir(
            config.out, command="retinopathy preprocess", config=config,
            inputs=[config.data.labels], overwrite=overwrite) as run:
        df = preprocess_table(read_dataset(config.data), config.preprocess, run.file("cache"),
                              workers=config.workers, owned=True)
        df = refuse_invalid(df, skip_invalid=config.skip_invalid).drop(columns="error")
        write_text(run.file("quality.csv"), df.to_csv(index=False))
        run.record(images=len(df), ungradable=int(((df["gradable"] != 1)
                                                   & (df["skipped"] == "")).sum()),
                   skipped=skipped_list(df))
    return df
