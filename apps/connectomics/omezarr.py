"""Segmentation stores in OME-Zarr (NGFF 0.5 on zarr v3): an image and a label pyramid.

``segment`` and ``baseline`` write ``segmentation.zarr`` laid out as an OME-Zarr image
with one label image, so napari (``napari --plugin napari-ome-zarr segmentation.zarr``),
neuroglancer and ``ome-zarr-py`` open it at every level::

    segmentation.zarr/          ome.multiscales: the EM image (a copy of the input), mean pyramid
      0/ 1/ ...                 image levels (the input's dtype)
      probability               segment only: object probability x 255 (uint8), full resolution
      labels/                   ome.labels = ["segmentation"]
        segmentation/           ome.multiscales (mode pyramid) and ome.image-label
          0/ 1/ ...             label levels; ``0`` is the full-resolution segmentation

A plain zarr reader finds the full-resolution labels at :data:`LABELS_PATH`
(``zarr.open("segmentation.zarr")["labels/segmentation/0"]``); deepsci's own volume specs
``segmentation.zarr:labels`` and ``segmentation.zarr:probability`` resolve as before
(:func:`deepsci.apps.connectomics.io.open_volume` follows the OME metadata to level 0).

**Axes and scale.** Axes ``z, y, x`` of type ``space`` in ``nanometer``; level ``k``'s
``scale`` is the voxel size times its per-axis factor (``2**k`` on axes halved at every
step), with the ``translation`` ``(factor - 1) / 2 * voxel_size`` that puts a coarse voxel's
centre at the centre of the fine voxels it covers.

**Levels.** At each step an axis is halved when it is not already at least twice as
coarse as the finest axis (so a z much coarser than y and x waits until they catch up) and
keeps at least :data:`MIN_SIZE` voxels; levels are added while some axis halves.

**Downsampling.** Over the (up to) 2x2x2 blocks of the halved axes, an odd edge padded
by repeating its last voxel (which leaves each partial block's mean and mode unchanged):
labels take the block's most frequent id, ties going to the smallest nonzero id (0 only when
no nonzero id ties it, so thin objects survive against background); images the block mean,
rounded to the nearest integer (ties to even) for integer dtypes.

**Colours.** ``image-label.colors`` gives every id (the smallest :data:`MAX_COLOURS` when
there are more) an opaque RGB from a hash of the id alone, so one id has one colour in
every store; ``source.image`` is ``"../../"``, the image group above.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np

from deepsci.core.io import atomic_dir
from deepsci.core.progress import progress as _progress

from .io import AXES

__all__ = ["NGFF_VERSION", "LABEL_NAME", "LABELS_PATH", "MIN_SIZE", "MAX_COLOURS", "pyramid_steps",
           "downsample_mode", "downsample_mean", "label_colour", "create_store", "finish_store",
           "write_segmentation"]

NGFF_VERSION = "0.5"
#: The label image's name under ``labels/``.
LABEL_NAME = "segmentation"
#: Where plain zarr readers find the full-resolution labels inside the store.
LABELS_PATH = f"labels/{LABEL_NAME}/0"
#: Halve an axis only while it keeps at least this many voxels.
MIN_SIZE = 32
#: At most this many ids are listed in ``image-label.colors``.
MAX_COLOURS = 50_000


def pyramid_steps(shape, voxel_size, *, min_size: int = MIN_SIZE) -> list[tuple[int, int, int]]:
    """Per-axis step (1 or 2) from each level to the next, as the module docstring states.

    Parameters
    ----------
    shape : sequence of 3 int
        Level-0 ``(Z, Y, X)``.
    voxel_size : sequence of 3 float
        Level-0 voxel size (nm).
    min_size : int
        An axis is halved only while it keeps at least this many voxels.

    Returns
    -------
    list of tuple of int
        One ``(sz, sy, sx)`` per level after level 0 (empty: one level).

    Examples
    --------
    >>> pyramid_steps((64, 512, 512), (40.0, 8.0, 8.0))  # z waits until y and x are as coarse
    [(1, 2, 2), (1, 2, 2), (2, 2, 2), (1, 2, 2)]
    """
    shape = np.asarray(shape, np.int64)
    vs = np.asarray(voxel_size, np.float64)
    min_size = max(int(min_size), 1)
    steps = []
    while True:
        step = np.where((vs < 2 * vs.min()) & (shape >= 2 * min_size), 2, 1)
        if not np.any(step == 2):
            return steps
        steps.append(tuple(int(s) for s in step))
        shape = -(-shape // step)
        vs = vs * step


def _blocks(a: np.ndarray, step) -> np.ndarray:
    """``a`` cut into its ``step`` blocks, ``(Z', Y', X', prod(step))``; odd edges repeat their last voxel."""
    a = np.asarray(a)
    pad = [(0, (-n) % s) for n, s in zip(a.shape, step, strict=True)]
    if any(p for _, p in pad):
        a = np.pad(a, pad, mode="edge")
    (z, y, x), (sz, sy, sx) = a.shape, step
    v = a.reshape(z // sz, sz, y // sy, sy, x // sx, sx).transpose(0, 2, 4, 1, 3, 5)
    return v.reshape(z // sz, y // sy, x // sx, sz * sy * sx)


def downsample_mode(labels: np.ndarray, step=(2, 2, 2)) -> np.ndarray:
    """Most frequent id of every ``step`` block; ties go to the smallest nonzero id.

    Examples
    --------
    >>> a = np.array([0, 0, 5, 5, 3, 3, 3, 9]).reshape(2, 2, 2)
    >>> downsample_mode(a).ravel().tolist()
    [3]
    >>> downsample_mode(np.array([0, 0, 0, 0, 7, 7, 7, 7]).reshape(2, 2, 2)).ravel().tolist()
    [7]
    """
    v = _blocks(labels, step)
    counts = (v[..., :, None] == v[..., None, :]).sum(-1)
    best, best_n = v[..., 0].copy(), counts[..., 0].copy()
    for i in range(1, v.shape[-1]):
        x, n = v[..., i], counts[..., i]
        better = (n > best_n) | ((n == best_n) & (x != 0) & ((best == 0) | (x < best)))
        best = np.where(better, x, best)
        best_n = np.where(better, n, best_n)
    return best.astype(labels.dtype, copy=False)


def downsample_mean(image: np.ndarray, step=(2, 2, 2)) -> np.ndarray:
    """Mean of every ``step`` block in the image's dtype (integers rounded to nearest, ties to even)."""
    dtype = np.asarray(image).dtype
    mean = _blocks(image, step).mean(axis=-1, dtype=np.float64)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        mean = np.clip(np.rint(mean), info.min, info.max)
    return mean.astype(dtype)


def label_colour(label: int) -> list[int]:
    """Opaque RGBA of one id, from a hash of the id alone (each channel in 64..255, never near black).

    Examples
    --------
    >>> label_colour(7) == label_colour(7) and label_colour(7) != label_colour(8)
    True
    """
    h = (int(label) + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF  # splitmix64 finaliser
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    h ^= h >> 31
    return [64 + ((h >> s) & 0xFF) % 192 for s in (0, 8, 16)] + [255]


def _array(group, name, shape, dtype, chunks, attrs):
    ch = tuple(max(1, min(c, s)) for c, s in zip(chunks, shape, strict=True))
    return group.create_array(name, shape=tuple(int(s) for s in shape), chunks=ch, dtype=dtype, fill_value=0,
                              dimension_names=list(AXES), attributes=attrs)


def _deepsci_attrs(voxel_size, extra=None) -> dict:
    return {"axes": list(AXES), "voxel_size": [float(v) for v in voxel_size], **(extra or {})}


def create_store(path: str | os.PathLike, shape, *, image_dtype, label_dtype=np.uint32, voxel_size=(1, 1, 1),
                 chunks=(64, 64, 64), attrs: dict | None = None, extra: dict | None = None):
    """Create the level-0 arrays of a segmentation store, to be filled, then :func:`finish_store`.

    Parameters
    ----------
    path : path
        A new folder (the caller makes it atomic: write into :func:`deepsci.core.io.atomic_dir`).
    shape : sequence of 3 int
    image_dtype, label_dtype : numpy dtype
    voxel_size : sequence of 3 float
        Level-0 voxel size (z, y, x) in nm.
    chunks : sequence of 3 int
        Chunk shape of every array at every level.
    attrs : dict, optional
        deepsci's own attributes beside ``axes`` and ``voxel_size`` (``source``, ``model``, ...).
    extra : dict of str to dtype, optional
        Further full-resolution arrays at the top of the store (``{"probability": np.uint8}``).

    Returns
    -------
    zarr.Group
        The store; ``group["0"]`` is the image and ``group[LABELS_PATH]`` the labels at level 0.
    """
    import zarr

    top = _deepsci_attrs(voxel_size, attrs)
    group = zarr.open_group(store=str(path), mode="w", zarr_format=3, attributes=top)
    _array(group, "0", shape, np.dtype(image_dtype).newbyteorder("="), chunks, top)
    labels = group.create_group("labels", attributes={"ome": {"version": NGFF_VERSION, "labels": [LABEL_NAME]}})
    seg = labels.create_group(LABEL_NAME, attributes=top)
    _array(seg, "0", shape, np.dtype(label_dtype).newbyteorder("="), chunks, top)
    for name, dtype in (extra or {}).items():
        _array(group, name, shape, dtype, chunks, top)
    return group


def _downsample_into(src, dst, step, fn, desc: str, show: bool) -> None:
    """``dst = fn(src, step)``, one output chunk at a time (only one block in memory)."""
    grid = [range(0, s, c) for s, c in zip(dst.shape, dst.chunks, strict=True)]
    for lo in _progress(list(itertools.product(*grid)), desc=desc, unit="chunk", disable=None if show else True):
        out = tuple(slice(a, min(a + c, s)) for a, c, s in zip(lo, dst.chunks, dst.shape, strict=True))
        box = tuple(slice(o.start * st, min(o.stop * st, s)) for o, st, s in zip(out, step, src.shape, strict=True))
        dst[out] = fn(np.asarray(src[box]), step)


def _copy_into(source, dst, show: bool) -> None:
    grid = [range(0, s, c) for s, c in zip(dst.shape, dst.chunks, strict=True)]
    for lo in _progress(list(itertools.product(*grid)), desc="image", unit="chunk", disable=None if show else True):
        box = tuple(slice(a, min(a + c, s)) for a, c, s in zip(lo, dst.chunks, dst.shape, strict=True))
        dst[box] = np.asarray(source[box])


def _ids(arr) -> np.ndarray:
    found = [np.unique(np.asarray(arr[tuple(slice(a, min(a + c, s)) for a, c, s in zip(lo, arr.chunks, arr.shape,
                                                                                        strict=True))]))
             for lo in itertools.product(*[range(0, s, c) for s, c in zip(arr.shape, arr.chunks, strict=True)])]
    ids = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    return ids[ids != 0]


def _multiscale(name: str, voxel_size, steps, kind: str) -> dict:
    vs = np.asarray(voxel_size, np.float64)
    factors = [np.ones(3, np.int64)]
    for st in steps:
        factors.append(factors[-1] * np.asarray(st))
    datasets = []
    for level, f in enumerate(factors):
        transforms = [{"type": "scale", "scale": [float(v) for v in vs * f]}]
        if np.any(f > 1):
            transforms.append({"type": "translation", "translation": [float(v) for v in (f - 1) / 2 * vs]})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    how = ("most frequent id of each block, ties to the smallest nonzero id" if kind == "mode"
           else "block mean, integers rounded to nearest (ties to even)")
    return {"name": name, "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in AXES],
            "datasets": datasets, "type": kind,
            "metadata": {"method": f"deepsci.apps.connectomics.omezarr ({how})",
                         "factors": [[int(v) for v in f] for f in factors]}}


def _pyramid(group, name, steps, fn, voxel_size, show: bool) -> None:
    base = group["0"]
    vs = np.asarray(voxel_size, np.float64)
    for level, step in enumerate(steps, start=1):
        src = group[str(level - 1)]
        vs = vs * np.asarray(step)
        shape = tuple(-(-s // st) for s, st in zip(src.shape, step, strict=True))
        dst = _array(group, str(level), shape, base.dtype, base.chunks, {**dict(base.attrs), "voxel_size":
                                                                         [float(v) for v in vs]})
        _downsample_into(src, dst, step, fn, f"{name} level {level}", show)


def finish_store(group, *, image=None, min_size: int = MIN_SIZE, progress: bool = False) -> dict:
    """Copy in the image, build both pyramids and write the OME-Zarr metadata.

    Parameters
    ----------
    group : zarr.Group
        From :func:`create_store`, with the level-0 labels written.
    image : array-like, optional
        The (Z, Y, X) image (a :class:`~.io.Volume` or ndarray) copied into level 0 chunk by
        chunk; omitted: level 0 already holds it.
    min_size : int
        See :func:`pyramid_steps`.

    Returns
    -------
    dict
        ``levels`` and the ``shapes`` of every level.
    """
    vs = group.attrs["voxel_size"]
    img = group["0"]
    if image is not None:
        _copy_into(image, img, progress)
    steps = pyramid_steps(img.shape, vs, min_size=min_size)
    seg = group["labels"][LABEL_NAME]
    _pyramid(group, "image", steps, downsample_mean, vs, progress)
    _pyramid(seg, "labels", steps, downsample_mode, vs, progress)
    ids = _ids(seg["0"])[:MAX_COLOURS]
    seg.update_attributes({"ome": {
        "version": NGFF_VERSION, "multiscales": [_multiscale(LABEL_NAME, vs, steps, "mode")],
        "image-label": {"colors": [{"label-value": int(i), "rgba": label_colour(int(i))} for i in ids],
                        "source": {"image": "../../"}}}})
    group.update_attributes({"ome": {"version": NGFF_VERSION, "multiscales": [_multiscale("image", vs, steps,
                                                                                           "mean")]}})
    return {"levels": len(steps) + 1, "shapes": [list(group[str(k)].shape) for k in range(len(steps) + 1)]}


def write_segmentation(path: str | os.PathLike, labels: np.ndarray, *, image, voxel_size=(1, 1, 1),
                       chunks=(64, 64, 64), attrs: dict | None = None, min_size: int = MIN_SIZE) -> Path:
    """Write a labelled volume and its image as one OME-Zarr segmentation store, atomically.

    Parameters
    ----------
    path : path
        The ``.zarr`` folder; replaced only when complete.
    labels : ndarray of int, shape (Z, Y, X)
    image : array-like, shape (Z, Y, X)
        The EM image (a :class:`~.io.Volume` or ndarray), read chunk by chunk.
    voxel_size, chunks, attrs, min_size
        See :func:`create_store` and :func:`pyramid_steps`.
    """
    path = Path(path)
    with atomic_dir(path) as tmp:
        group = create_store(tmp, labels.shape, image_dtype=image.dtype, label_dtype=labels.dtype,
                             voxel_size=voxel_size, chunks=chunks, attrs=attrs)
        group[LABELS_PATH][...] = labels
        finish_store(group, image=image, min_size=min_size)
    return path
