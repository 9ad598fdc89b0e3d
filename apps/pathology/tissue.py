"""Tissue detection: Otsu on saturation at low resolution, specks and holes removed.

Glass is bright and grey (low saturation); H&E-stained tissue is coloured.
Otsu's threshold on the HSV saturation channel separates them robustly across
stain intensities; a floor on saturation keeps an all-glass image from being
split into "tissue" by noise alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.config import check_ranges, option
from deepsci.core.errors import expected
from deepsci.core.io import atomic_path
from deepsci.core.runs import RunDir

from .io import Slide

__all__ = ["TissueConfig", "TissueRunConfig", "tissue_mask", "slide_tissue", "run_tissue"]


@dataclass
class TissueConfig:
    """Tissue detection settings.

    Attributes
    ----------
    mpp : float
        Resolution of the mask, microns per pixel (about level 5 of a 40x slide).
    min_saturation : float
        Saturation below this is never tissue, whatever Otsu says.
    min_object_um2 : float
        Tissue specks smaller than this area are dropped (dust, debris).
    min_hole_um2 : float
        Holes smaller than this inside tissue are filled (fat, tears).
    """

    mpp: float = option(8.0, "Tissue-mask microns per pixel.", min=0, min_exclusive=True, cli="resolution")
    min_saturation: float = option(0.05, "Saturation floor of tissue.", min=0, max=1)
    min_object_um2: float = option(20000.0, "Smallest tissue area kept (um^2).", min=0)
    min_hole_um2: float = option(20000.0, "Largest hole filled (um^2).", min=0)

    def validate(self) -> TissueConfig:
        """Raise ConfigError for an out-of-range setting; return self."""
        check_ranges(self)
        return self


def _remove_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    from scipy import ndimage as ndi

    labels, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def tissue_mask(image: np.ndarray, *, mpp: float, channel_axis: int = -1,
                config: TissueConfig | None = None) -> np.ndarray:
    """Boolean tissue mask of an RGB image.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3)
        RGB; uint8 (0-255) or float (0-1).
    mpp : float
        Microns per pixel of ``image`` (converts the area limits to pixels).
    channel_axis : int
        Axis of the colour channels.
    config : TissueConfig, optional

    Returns
    -------
    ndarray, shape (H, W), bool
    """
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu

    cfg = config or TissueConfig()
    image = np.moveaxis(np.asarray(image), channel_axis, -1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"Expected an RGB image (H, W, 3). Received: shape {image.shape}")
    sat = rgb2hsv(image)[..., 1]
    if sat.max() <= cfg.min_saturation:
        return np.zeros(sat.shape, bool)
    thresh = max(float(threshold_otsu(sat)), cfg.min_saturation)
    mask = sat > thresh
    px_area = mpp * mpp
    mask = _remove_small(mask, cfg.min_object_um2 / px_area)
    # Filling holes = removing small background components not touching nothing.
    mask = ~_remove_small(~mask, cfg.min_hole_um2 / px_area)
    return mask


def slide_tissue(slide, config: TissueConfig | None = None) -> tuple[np.ndarray, float]:
    """Tissue mask of a :class:`~deepsci.apps.pathology.io.Slide` at about ``config.mpp``.

    Returns
    -------
    mask : ndarray, shape (h, w), bool
    downsample : float
        Level-0 pixels per mask pixel.
    """
    cfg = config or TissueConfig()
    thumb, down = slide.thumbnail(cfg.mpp)
    return tissue_mask(thumb, mpp=slide.mpp * down, config=cfg), down


@dataclass
class TissueRunConfig:
    """``deepsci pathology tissue``: one slide's tissue mask as a PNG (recorded in ``<png>.run.json``).

    Attributes
    ----------
    slide : str
        A whole-slide image.
    out : str
        PNG of the tissue mask (white = tissue).
    mpp : float, optional
        Microns per pixel at level 0, for slides that do not record it.
    tissue : TissueConfig
    """

    slide: str = option(help="A whole-slide image.")
    out: str = option(help="PNG of the tissue mask.")
    mpp: float | None = option(None, "Microns per pixel at level 0, for slides that do not record "
                               "it.", min=0, min_exclusive=True)
    tissue: TissueConfig = option(factory=TissueConfig)

    def validate(self) -> TissueRunConfig:
        """Raise ConfigError for an out-of-range setting; return self."""
        check_ranges(self)
        return self


def run_tissue(config: TissueRunConfig, *, overwrite: bool = False) -> tuple[np.ndarray, float]:
    """Detect the tissue of ``config.slide`` and write the mask PNG ``config.out``.

    Returns
    -------
    mask : ndarray, shape (h, w), bool
    downsample : float
        Level-0 pixels per mask pixel.
    """
    from PIL import Image

    cfg = config.validate()
    if Path(cfg.out).is_file() and not overwrite:
        # a PNG at --out may be the user's own picture: replaced only when asked
        raise expected("a new output file (or --overwrite to replace it)", "an existing file", cfg.out)
    with RunDir(cfg.out, command="pathology tissue", config=cfg, inputs=[cfg.slide], overwrite=overwrite,
                file_output=True) as run:
        with Slide(cfg.slide, mpp=cfg.mpp) as s:
            mask, down = slide_tissue(s, cfg.tissue)
        with atomic_path(Path(cfg.out)) as tmp:
            Image.fromarray((mask * 255).astype(np.uint8)).save(tmp, format="PNG")
        run.record(tissue_fraction=float(mask.mean()), shape=list(mask.shape), downsample=float(down))
    return mask, down
