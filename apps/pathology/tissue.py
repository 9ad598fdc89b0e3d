"""Tissue detection: Otsu on saturation at low resolution, specks and holes removed.

Glass is bright and grey (low saturation); H&E-stained tissue is coloured.
Otsu's threshold on the HSV saturation channel separates them robustly across
stain intensities; a floor on saturation keeps an all-glass image from being
split into "tissue" by noise alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TissueConfig", "tissue_mask", "slide_tissue"]


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

    mpp: float = 8.0
    min_saturation: float = 0.05
    min_object_um2: float = 20000.0
    min_hole_um2: float = 20000.0


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
