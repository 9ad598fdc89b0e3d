"""Patch sampling as Liu et al. (2017), read on the fly from the slides.

Each training example is drawn by choosing tumour or normal with probability
1/2, then a slide that has that class, then a position of that class in it.
A position is tumour when any pixel of the patch's centre region is tumour
(the label is recomputed after jitter, so it is always exact). Patches at
several magnifications share the same centre. Colour augmentation
(brightness, saturation, hue, contrast) and the 8 orientations are applied
identically to every scale of an example, so their centres stay aligned.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.config import check_ranges, option
from deepsci.core.errors import ConfigError, InputError

from .io import Slide, rasterize, read_annotations, resize_mask
from .tissue import TissueConfig, slide_tissue

__all__ = ["PatchConfig", "SlideIndex", "index_slide", "sample_positions", "read_example", "read_examples",
           "augment", "preprocess", "make_dataset", "cached_pool"]


@dataclass
class PatchConfig:
    """What a patch is.

    Attributes
    ----------
    patch_size : int
        Pixels per side at every magnification.
    magnifications : tuple of float
        Objective powers, finest first, e.g. ``(40,)`` or ``(40, 20, 10)``.
    center_size : int
        Side of the centre region (pixels at the finest magnification) that
        decides the label; also the default heatmap stride.
    jitter : int
        Maximum random shift of the centre (pixels at the finest magnification).
    grid_mpp : float
        Resolution of the sampling masks, microns per pixel.
    """

    patch_size: int = option(96, "Patch side in pixels at every scale.", min=16)
    magnifications: tuple[float, ...] = option(
        (40.0,), "Objective powers, finest first: 40 (single scale) or 40,20,10 (towers).",
        min=0, min_exclusive=True)
    center_size: int = option(32, "Label centre region (pixels, finest scale).", min=1)
    jitter: int = option(8, "Largest random shift of the centre (pixels, finest scale).", min=0)
    grid_mpp: float = option(4.0, "Sampling-mask microns per pixel.", min=0, min_exclusive=True)
    tissue: TissueConfig = option(factory=TissueConfig)

    def validate(self) -> PatchConfig:
        """Raise ConfigError for impossible patch geometry; return self."""
        check_ranges(self)
        if not self.magnifications:
            raise ConfigError("expected --magnifications like 40 or 40,20,10, found none")
        if list(self.magnifications) != sorted(self.magnifications, reverse=True):
            raise ConfigError(f"expected --magnifications finest first, found {self.magnifications}")
        if self.center_size > self.patch_size:
            raise ConfigError(f"expected --center-size <= --patch-size ({self.patch_size}), "
                              f"found {self.center_size}")
        return self


@dataclass
class SlideIndex:
    """One slide's sampling masks.

    ``label_map[r, c]`` is True when a patch centred on grid cell ``(r, c)``
    has tumour in its centre region; ``tissue`` marks tissue cells. A grid
    cell covers ``downsample`` level-0 pixels per side.
    """

    path: Path
    mpp: float
    downsample: float
    tissue: np.ndarray
    label_map: np.ndarray
    is_tumour: bool

    @property
    def tumour_cells(self) -> np.ndarray:
        return np.flatnonzero(self.label_map & self.tissue)

    @property
    def normal_cells(self) -> np.ndarray:
        return np.flatnonzero(self.tissue & ~self.label_map)


def index_slide(slide_path: str | os.PathLike, annotation: str | os.PathLike | None,
                config: PatchConfig, *, mpp: float | None = None) -> SlideIndex:
    """Tissue and label maps of one slide (annotation None means a normal slide)."""
    from scipy import ndimage as ndi

    with Slide(slide_path, mpp=mpp) as slide:
        for m in config.magnifications:
            slide.select_level(m)  # fail early on a magnification the slide lacks
        w, h = slide.dimensions
        down = config.grid_mpp / slide.mpp
        shape = (max(1, int(np.ceil(h / down))), max(1, int(np.ceil(w / down))))
        tissue_small, _ = slide_tissue(slide, config.tissue)
        tissue = resize_mask(tissue_small, shape)
        tumour = np.zeros(shape, bool)
        if annotation is not None:
            polys = read_annotations(annotation, dimensions=slide.dimensions)
            tumour = rasterize(polys, shape, down)
        # The centre region (in grid cells) around a position decides its label.
        finest_mpp = 10.0 / config.magnifications[0]
        k = max(1, int(round(config.center_size * finest_mpp / config.grid_mpp)))
        label_map = ndi.maximum_filter(tumour, size=k) if tumour.any() else tumour
        # Tumour is tissue even where the tissue detector disagrees (annotated truth wins).
        tissue = tissue | tumour
        return SlideIndex(Path(slide_path), slide.mpp, down, tissue, label_map, bool(tumour.any()))


def sample_positions(indices: list[SlideIndex], n: int, rng: np.random.Generator,
                     *, jitter_px: float = 0.0) -> list[tuple[int, float, float, int]]:
    """Draw ``n`` examples: (slide index, x, y, label), x/y level-0 centre pixels.

    Tumour or normal with probability 1/2, then a slide with that class, then a
    cell of that class, then a uniform point in the cell plus jitter.
    """
    by_class = {
        1: [i for i, s in enumerate(indices) if s.tumour_cells.size],
        0: [i for i, s in enumerate(indices) if s.normal_cells.size],
    }
    if not by_class[0] and not by_class[1]:
        raise InputError("expected tissue on the training slides, found none",
                         indices[0].path if indices else None)
    out = []
    for _ in range(n):
        cls = int(rng.random() < 0.5)
        if not by_class[cls]:
            cls = 1 - cls
        si = by_class[cls][rng.integers(len(by_class[cls]))]
        s = indices[si]
        cells = s.tumour_cells if cls else s.normal_cells
        cell = cells[rng.integers(len(cells))]
        r, c = divmod(int(cell), s.tissue.shape[1])
        x = (c + rng.random()) * s.downsample + rng.uniform(-jitter_px, jitter_px)
        y = (r + rng.random()) * s.downsample + rng.uniform(-jitter_px, jitter_px)
        rr = int(np.clip(y / s.downsample, 0, s.label_map.shape[0] - 1))
        cc = int(np.clip(x / s.downsample, 0, s.label_map.shape[1] - 1))
        out.append((si, float(x), float(y), int(s.label_map[rr, cc])))
    return out


def read_example(slide: Slide, x: float, y: float, config: PatchConfig, choices=None) -> list[np.ndarray]:
    """The patches ``(P, P, 3)`` uint8 of one centre at each magnification."""
    choices = choices or [slide.select_level(m) for m in config.magnifications]
    return [slide.read_patch((x, y), config.patch_size, m, c)
            for m, c in zip(config.magnifications, choices, strict=True)]


def read_examples(slide: Slide, centers: np.ndarray, config: PatchConfig, choices=None, *,
                  max_width: int = 4096) -> list[np.ndarray]:
    """The patches of many centres at once: one ``(N, P, P, 3)`` uint8 array per magnification.

    Pixel for pixel what :func:`read_example` returns for each centre, but
    patches whose corners share a level row are cut from one region read per
    row (at most ``max_width`` level pixels wide): neighbouring windows of a
    sliding window overlap, so this reads each pixel once per row instead of
    once per patch and makes far fewer calls into the slide library.

    Parameters
    ----------
    centers : ndarray, shape (N, 2)
        ``(x, y)`` level-0 centres.
    """
    choices = choices or [slide.select_level(m) for m in config.magnifications]
    centers = np.asarray(centers, np.float64).reshape(-1, 2)
    return [_read_scale(slide, centers, config.patch_size, c, max_width) for c in choices]


def _read_scale(slide: Slide, centers: np.ndarray, size: int, choice, max_width: int) -> np.ndarray:
    corners = [slide.patch_origin(c, size, choice) for c in centers]
    n = corners[0][0] if corners else size
    down = float(slide.level_downsamples[choice.level])
    # Level-pixel corners (exact: patch_origin puts them on the level grid).
    lxy = np.array([[round(x / down), round(y / down)] for _, (x, y) in corners], np.int64).reshape(-1, 2)
    out = np.empty((len(centers), size, size, 3), np.uint8)
    order = np.lexsort((lxy[:, 0], lxy[:, 1]))
    start = 0
    while start < len(order):
        first = order[start]
        stop = start + 1
        while (stop < len(order) and lxy[order[stop], 1] == lxy[first, 1]
               and lxy[order[stop], 0] + n - lxy[first, 0] <= max(max_width, n)):
            stop += 1
        idx = order[start:stop]
        x0, y0 = lxy[first]
        width = int(lxy[idx, 0].max() + n - x0)
        region = slide.read_region((round(x0 * down), round(y0 * down)), choice.level, (width, n))
        for i in idx:
            patch = region[:, lxy[i, 0] - x0:lxy[i, 0] - x0 + n]
            out[i] = patch if n == size else _resize(patch, size)
        start = stop
    return out


def _resize(patch: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(patch).resize((size, size), Image.BILINEAR))


def augment(patches, seed):
    """Liu et al.'s augmentation on float patches in [0, 1], identical across scales.

    Parameters
    ----------
    patches : list of tf.Tensor, each (P, P, 3) float32
    seed : tf.Tensor, shape (2,), int
        Stateless seed; one draw per example keeps epochs reproducible.
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
    k = tf.random.stateless_uniform([], seeds[0], 0, 4, dtype=tf.int32)
    flip = tf.random.stateless_uniform([], seeds[1]) < 0.5
    db = tf.random.stateless_uniform([], seeds[2], -64 / 255, 64 / 255)
    ds = tf.random.stateless_uniform([], seeds[3], 0.75, 1.25)
    dh = tf.random.stateless_uniform([], seeds[4], -0.04, 0.04)
    dc = tf.random.stateless_uniform([], seeds[5], 0.25, 1.75)
    out = []
    for p in patches:
        p = tf.image.rot90(p, k)
        p = tf.cond(flip, lambda p=p: tf.image.flip_left_right(p), lambda p=p: p)
        p = tf.image.adjust_brightness(p, db)
        p = tf.image.adjust_saturation(p, ds)
        p = tf.image.adjust_hue(p, dh)
        p = tf.image.adjust_contrast(p, dc)
        out.append(tf.clip_by_value(p, 0.0, 1.0))
    return out


def preprocess(x):
    """uint8 (or [0, 1] float) patches -> float32 in [-1, 1], Inception's input range."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    if x.dtype == tf.uint8:
        x = tf.cast(x, tf.float32) / 255.0
    return x * 2.0 - 1.0


def _pool_key(indices, config: PatchConfig, n: int, seed: int, shard: int, mpp) -> str:
    import hashlib
    import json

    ident = {"slides": [str(i.path.resolve()) for i in indices], "n": n, "seed": seed, "shard": shard,
             "mpp": mpp, "patch": [config.patch_size, list(config.magnifications), config.center_size,
                                   config.jitter, config.grid_mpp],
             "mtimes": [i.path.stat().st_mtime_ns for i in indices]}
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def cached_pool(indices: list[SlideIndex], config: PatchConfig, *, n: int, seed: int, shard: int,
                cache_dir: str | os.PathLike, mpp: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A fixed pool of ``n`` raw examples, read once and kept on disk.

    Returns memory-mapped patches ``(n, S, P, P, 3)`` uint8 (S scales) and
    labels ``(n,)``. The files are keyed by slides, settings and seed, written
    atomically, so an interrupted run never leaves a half-written cache.
    """
    from deepsci.core.io import atomic_path
    from deepsci.core.progress import progress

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _pool_key(indices, config, n, seed, shard, mpp)
    x_path, y_path = cache_dir / f"patches-{key}.npy", cache_dir / f"labels-{key}.npy"
    if not (x_path.exists() and y_path.exists()):
        rng = np.random.default_rng([seed, shard])
        jitter_px = config.jitter * (10.0 / config.magnifications[0]) / indices[0].mpp
        draws = sample_positions(indices, n, rng, jitter_px=jitter_px)
        p, ns = config.patch_size, len(config.magnifications)
        with atomic_path(x_path) as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, ns, p, p, 3))
            slides: dict[int, Slide] = {}
            try:
                for k, (si, x, y, _) in enumerate(progress(draws, desc="patch cache", unit="patch")):
                    if si not in slides:
                        slides[si] = Slide(indices[si].path, mpp=mpp)
                    arr[k] = np.stack(read_example(slides[si], x, y, config))
            finally:
                for sl in slides.values():
                    sl.close()
            arr.flush()
            del arr
        with atomic_path(y_path) as tmp:
            np.save(tmp, np.array([d[3] for d in draws], np.float32))
    return np.load(x_path, mmap_mode="r"), np.load(y_path)


def make_dataset(indices: list[SlideIndex], config: PatchConfig, *, n: int, batch_size: int,
                 seed: int, epoch: int = 0, shard: int = 0, augment_patches: bool = True,
                 mpp: float | None = None, cache_dir: str | os.PathLike | None = None):
    """A finite ``tf.data.Dataset`` of ``n`` examples batched ``batch_size``.

    Elements are ``(x, {"tumor": label (B, 1) float32})`` where ``x`` is one
    ``(B, P, P, 3)`` tensor for one magnification, or a tuple of them.
    The examples depend only on ``(seed, epoch, shard)``. With ``cache_dir``
    the positions are a fixed pool read once into an on-disk cache and only
    the augmentation changes from epoch to epoch.
    """
    import tensorflow as tf

    rng = np.random.default_rng([seed, epoch, shard])
    finest = 10.0 / config.magnifications[0]
    jitter_px = config.jitter * finest / indices[0].mpp if indices else 0
    nscale = len(config.magnifications)
    p = config.patch_size
    if cache_dir is not None:
        pool_x, pool_y = cached_pool(indices, config, n=n, seed=seed, shard=shard, cache_dir=cache_dir,
                                     mpp=mpp)
        order = rng.permutation(n)
        seeds = rng.integers(0, 2**31 - 1, size=(n, 2))

        def gen():
            for k, s in zip(order, seeds, strict=True):
                yield tuple(pool_x[k]), pool_y[k], s
    else:
        draws = sample_positions(indices, n, rng, jitter_px=jitter_px)
        seeds = rng.integers(0, 2**31 - 1, size=(n, 2))

        def gen():
            slides: dict[int, Slide] = {}
            try:
                for (si, x, y, label), s in zip(draws, seeds, strict=True):
                    if si not in slides:
                        slides[si] = Slide(indices[si].path, mpp=mpp)
                    yield (tuple(read_example(slides[si], x, y, config)), np.float32(label), s)
            finally:
                for sl in slides.values():
                    sl.close()

    sig = (tuple(tf.TensorSpec((p, p, 3), tf.uint8) for _ in range(nscale)),
           tf.TensorSpec((), tf.float32), tf.TensorSpec((2,), tf.int64))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)

    def to_example(patches, label, s):
        xs = [tf.cast(q, tf.float32) / 255.0 for q in patches]
        if augment_patches:
            xs = augment(xs, s)
        xs = [preprocess(q) for q in xs]
        x = xs[0] if nscale == 1 else tuple(xs)
        return x, {"tumor": tf.reshape(label, (1,))}

    ds = ds.map(to_example, num_parallel_calls=2, deterministic=True)
    ds = ds.batch(batch_size).prefetch(2)
    return ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))
