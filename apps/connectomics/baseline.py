"""Watershed baseline: boundary map -> seeded watershed (scikit-image).

The classical pipeline FFNs are compared with: membranes are dark in EM, so
the smoothed, inverted, rescaled intensity is a boundary map; voxels below a
threshold (Otsu's by default) are cell interior; maxima of the distance
transform of the interior seed a watershed of the boundary map
(``markers="peaks"``), or every connected interior region of at least
``min_size`` voxels is one marker (``markers="components"``, no distance
transform: regions a faint membrane joins stay one).
"""
from __future__ import annotations

import itertools
import time

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

from deepsci.core.runs import RunDir

from .config import BaselineConfig, BaselineRun, InferenceConfig
from .evaluate import variation_of_information
from .io import open_volume
from .labels import relabel
from .omezarr import write_segmentation

__all__ = ["BaselineConfig", "BaselineRun", "boundary_map", "watershed_baseline", "supervoxels", "tune_watershed", "run_baseline"]


def boundary_map(image: np.ndarray, *, sigma: float = 1.0) -> np.ndarray:
    """Membrane probability proxy in [0, 1]: smoothed, inverted, percentile-rescaled intensity.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X)
        Any real or integer dtype.

    Returns
    -------
    ndarray of float32, shape (Z, Y, X)
    """
    img = image.astype(np.float32)
    if sigma > 0:
        img = ndi.gaussian_filter(img, sigma)
    lo, hi = np.percentile(img, [1, 99])
    return np.clip((hi - img) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def watershed_baseline(image: np.ndarray, cfg: BaselineConfig | None = None, *,
                       voxel_size=(1.0, 1.0, 1.0), bmap: np.ndarray | None = None) -> np.ndarray:
    """Seeded watershed segmentation of an EM block.

    ``bmap``, if given, is the block's :func:`boundary_map` at ``cfg.sigma``
    already computed by the caller.

    Returns
    -------
    ndarray of uint32, shape (Z, Y, X)
        Segment ids ``1..n``.
    """
    cfg = (cfg or BaselineConfig()).validate()
    if bmap is None:
        bmap = boundary_map(image, sigma=cfg.sigma)
    thr = cfg.threshold if cfg.threshold is not None else float(threshold_otsu(bmap))
    interior = bmap < thr
    comp, _ = ndi.label(interior)
    if cfg.markers == "components":
        markers = relabel(comp, min_size=cfg.min_size).astype(np.int32)
    else:
        dt = ndi.distance_transform_edt(interior, sampling=voxel_size)
        peaks = peak_local_max(dt, min_distance=cfg.min_distance, labels=comp, exclude_border=False)
        markers = np.zeros(image.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(bmap, markers)
    return relabel(labels, min_size=cfg.min_size)


def supervoxels(image: np.ndarray, bmap: np.ndarray, cfg: InferenceConfig, *, voxel_size=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Over-segmentation for the learned agglomeration: a peak-marker watershed of ``bmap``, every voxel kept.

    No size filter: a removed piece would become background, which no agglomeration can join.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X)
    bmap : ndarray of float32, shape (Z, Y, X)
        :func:`boundary_map` of ``image`` at ``cfg.boundary_sigma``.
    cfg : InferenceConfig
        ``boundary_threshold`` (interior below it; ``None``: Otsu's) and ``peak_min_distance``.

    Returns
    -------
    ndarray of uint32, shape (Z, Y, X)
    """
    ws = BaselineConfig(sigma=cfg.boundary_sigma, threshold=cfg.boundary_threshold,
                        min_distance=cfg.peak_min_distance, min_size=0, markers="peaks")
    return watershed_baseline(image, ws, voxel_size=voxel_size, bmap=bmap).astype(np.uint32)


#: The grid :func:`tune_watershed` searches, per marker kind: (threshold, min_distance or min_size, sigma).
TUNING_GRID = {
    "peaks": ((None, 0.4, 0.5, 0.6, 0.7), (4, 8, 12, 16), (1.0, 2.0)),
    "components": ((None, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6), (100, 300, 1000), (1.0, 2.0)),
}


def tune_watershed(image: np.ndarray, labels: np.ndarray, *, markers: str = "peaks",
                   voxel_size=(1.0, 1.0, 1.0)) -> tuple[BaselineConfig, float]:
    """The watershed settings of :data:`TUNING_GRID` with the lowest total VI on a labelled volume.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X)
    labels : ndarray of int, shape (Z, Y, X)
        Ground truth (0 ignored).
    markers : {"peaks", "components"}
        ``peaks``: threshold x seed distance x sigma; ``components``: threshold x min_size x sigma.

    Returns
    -------
    (BaselineConfig, float)
        The best settings and their total VI (bits).
    """
    thresholds, second, sigmas = TUNING_GRID[markers]
    best = None
    for t, v, s in itertools.product(thresholds, second, sigmas):
        cfg = (BaselineConfig(threshold=t, min_distance=v, sigma=s) if markers == "peaks"
               else BaselineConfig(threshold=t, min_size=v, sigma=s, markers="components"))
        vi = sum(variation_of_information(labels, watershed_baseline(image, cfg, voxel_size=voxel_size),
                                          ignore_labels=(0,)))
        if best is None or vi < best[1]:
            best = (cfg, float(vi))
    return best


def run_baseline(cfg: BaselineRun, *, overwrite: bool = False) -> dict:
    """``deepsci connectomics baseline``: write ``segmentation.zarr`` (OME-Zarr, :mod:`~.omezarr`), ``run.json``."""
    t0 = time.perf_counter()
    vol = open_volume(cfg.image, voxel_size=cfg.voxel_size)
    labels = watershed_baseline(vol.read(), cfg.baseline, voxel_size=vol.voxel_size)
    with RunDir(cfg.out, command="connectomics baseline", config=cfg, overwrite=overwrite,
                inputs=[vol.spec.split(":")[0]]) as run:
        write_segmentation(run.file("segmentation.zarr"), labels, image=vol, voxel_size=vol.voxel_size,
                           attrs={"source": vol.spec, "method": "watershed baseline"})
        summary = {"segmentation": str(run.file("segmentation.zarr")), "objects": int(labels.max()),
                   "seconds": round(time.perf_counter() - t0, 2)}
        run.record(**summary)
    return summary
