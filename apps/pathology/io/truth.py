"""A slide's ground truth at the evaluation level: ``<slide>_Mask.tif`` or its annotations.

Camelyon16 ships the truth both ways (mask TIFFs and ASAP XML). Whether a
slide without either is a normal slide is the caller's decision (the
evaluation asks the slide's name or a reference list, as Camelyon16 does).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.errors import InputError

from .annotations import rasterize, read_annotations, resize_mask
from .slide import SLIDE_SUFFIXES, Slide

__all__ = ["SlideTruth", "find_file", "truth_file", "load_truth", "ANNOTATION_SUFFIXES"]

#: Annotation files of a slide, in the order they are looked for (after ``<slide>_Mask.tif``).
ANNOTATION_SUFFIXES = (".xml", ".geojson", ".json")


@dataclass
class SlideTruth:
    """Ground truth of one slide at the evaluation level.

    Attributes
    ----------
    name : str
        Slide name (file stem).
    tumour : ndarray, shape (h, w), bool
        Tumour mask at downsample ``2 ** level``.
    mpp : float
        Microns per pixel of the slide at level 0.
    """

    name: str
    tumour: np.ndarray
    mpp: float


def find_file(folder: Path | None, stem: str, suffixes: Sequence[str]) -> Path | None:
    """``folder/<stem><suffix>`` for the first suffix that exists, else ``None``."""
    if folder is None:
        return None
    for suf in suffixes:
        p = folder / f"{stem}{suf}"
        if p.is_file():
            return p
    return None


def truth_file(name: str, truth_dir: Path) -> Path | None:
    """The ground-truth file of slide ``name``: ``<name>_Mask.tif``, else its XML/GeoJSON, else ``None``.

    Parameters
    ----------
    name : str
        Slide name (file stem).
    truth_dir : Path
        Folder of the masks and annotations.
    """
    return (find_file(truth_dir, f"{name}_Mask", (".tif", ".tiff"))
            or find_file(truth_dir, name, ANNOTATION_SUFFIXES))


def load_truth(name: str, *, slides_dir: Path | None, truth_dir: Path, level: int,
               mpp: float | None = None) -> SlideTruth:
    """Tumour mask of slide ``name`` at ``level``, from ``<name>_Mask.tif`` or XML/GeoJSON.

    A slide with neither file gets an empty mask (:func:`truth_file` tells). The slide
    itself (in ``slides_dir``) gives the size and microns per pixel; a mask
    TIFF can stand in for it.
    """
    mask_path = find_file(truth_dir, f"{name}_Mask", (".tif", ".tiff"))
    ann_path = find_file(truth_dir, name, ANNOTATION_SUFFIXES)
    slide_path = find_file(slides_dir, name, SLIDE_SUFFIXES)
    ref = slide_path or mask_path
    if ref is None:
        raise InputError(f"expected the slide {name!r} (for its size and microns per pixel) in "
                         "--slides, found none", slides_dir or truth_dir)
    down = 2 ** level
    with Slide(ref, mpp=mpp) as slide:
        w, h = slide.dimensions
        shape = (-(-h // down), -(-w // down))
        if mask_path is not None:
            with Slide(mask_path, mpp=slide.mpp) as m:
                lvl = m.level_for_mpp(slide.mpp * down)
                img = m.read_level(lvl)[..., 0] > 127
            tumour = resize_mask(img, shape)
        elif ann_path is not None:
            tumour = rasterize(read_annotations(ann_path, dimensions=(w, h)), shape, down)
        else:
            tumour = np.zeros(shape, bool)
        return SlideTruth(name, tumour, slide.mpp)
