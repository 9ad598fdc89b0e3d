"""The classical baseline: haematoxylin and eosin density (``skimage.color.rgb2hed``) per heatmap cell.

Tumour nuclei are larger and denser than lymphocytes and sit in eosinophilic
cytoplasm, so the stain densities around a point separate tumour from normal
tissue without any learned features. The baseline colour-deconvolves level 0
(Ruifrok & Johnston, as :func:`skimage.color.rgb2hed` does), averages the
haematoxylin and eosin densities over the same centre region and patch that
the network sees, and fits a logistic regression of "tumour at the cell's
centre" on those four numbers over the training slides' tissue cells. Its
heatmaps are written like the network's (same grid, same metadata keys), so
``detect`` and ``evaluate`` score both the same way. The fit is four weights
and an intercept, kept as JSON in the model card (nothing pickled).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deepsci.core.errors import InputError

from .io import Slide, list_slides, write_pyramid_tiff
from .tissue import TissueConfig

__all__ = ["FEATURES", "slide_features", "fit_baseline", "baseline_heatmap", "write_baseline_heatmaps",
           "cell_labels", "patch_auc"]

#: Feature names, in order: mean density over the centre region and over the whole patch.
FEATURES = ("hem_centre", "hem_patch", "eos_centre", "eos_patch")


def _grid(slide: Slide, stride_px: float, tissue: TissueConfig) -> np.ndarray:
    from .heatmap import heatmap_grid

    return heatmap_grid(slide, stride_px, tissue)


def slide_features(slide_path: str | Path, *, stride_px: float, centre_px: int, patch_px: int,
                   tissue: TissueConfig | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Stain features of every tissue cell of a slide's heatmap grid.

    Parameters
    ----------
    stride_px : float
        Cell size in level-0 pixels (the heatmap's stride).
    centre_px, patch_px : int
        Level-0 sizes of the centre region and of the patch averaged over.

    Returns
    -------
    x : ndarray, shape (n, 4), float32
        :data:`FEATURES` of the tissue cells.
    cells : ndarray, shape (n, 2), int
        Their ``(row, col)`` in the grid.
    info : dict
        ``grid_shape``, ``stride``, ``mpp``, ``slide_name``, ``dimensions``.
    """
    from scipy import ndimage as ndi
    from skimage.color import rgb2hed

    tissue = tissue or TissueConfig()
    with Slide(slide_path) as slide:
        grid = _grid(slide, stride_px, tissue)
        rgb = slide.read_level(0)
        mpp, dims = slide.mpp, list(slide.dimensions)
    hed = rgb2hed(rgb).astype(np.float32)
    rows, cols = np.nonzero(grid)
    ys = np.clip(((rows + 0.5) * stride_px).astype(int), 0, rgb.shape[0] - 1)
    xs = np.clip(((cols + 0.5) * stride_px).astype(int), 0, rgb.shape[1] - 1)
    feats = []
    for ch in (0, 1):
        for size in (centre_px, patch_px):
            feats.append(ndi.uniform_filter(hed[..., ch], size=size, mode="reflect")[ys, xs])
    x = np.stack([feats[0], feats[1], feats[2], feats[3]], axis=1).astype(np.float32)
    info = {"grid_shape": list(grid.shape), "stride": float(stride_px), "mpp": float(mpp),
            "slide_name": Path(slide_path).stem, "dimensions": dims}
    return x, np.stack([rows, cols], axis=1), info


def cell_labels(slide_path: str | Path, cells: np.ndarray, stride_px: float) -> np.ndarray:
    """1 where a cell's centre lies in the slide's tumour mask (``<slide>_Mask.tif``), else 0.

    A slide without a mask beside it is a normal slide (all 0).
    """
    import tifffile

    mask_path = Path(slide_path).with_name(f"{Path(slide_path).stem}_Mask.tif")
    if not mask_path.is_file():
        return np.zeros(len(cells), np.int8)
    mask = tifffile.imread(mask_path, key=0)
    ys = np.clip(((cells[:, 0] + 0.5) * stride_px).astype(int), 0, mask.shape[0] - 1)
    xs = np.clip(((cells[:, 1] + 0.5) * stride_px).astype(int), 0, mask.shape[1] - 1)
    return (mask[ys, xs] > 0).astype(np.int8)


def fit_baseline(slides: str | Path, *, stride_px: float, centre_px: int, patch_px: int) -> dict:
    """Fit the stain-density logistic regression on a folder of training slides.

    Returns
    -------
    dict
        ``features``, ``mean``, ``scale``, ``coef``, ``intercept`` (JSON-ready),
        the geometry, and the training cells' count and tumour share.
    """
    from sklearn.linear_model import LogisticRegression

    xs, ys = [], []
    for s in list_slides(slides):
        x, cells, _ = slide_features(s, stride_px=stride_px, centre_px=centre_px, patch_px=patch_px)
        xs.append(x)
        ys.append(cell_labels(s, cells, stride_px))
    x, y = np.concatenate(xs), np.concatenate(ys)
    if y.min() == y.max():
        raise InputError("expected training slides with both tumour and normal tissue cells, found one class",
                         slides)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-8
    lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit((x - mean) / scale, y)
    return {"method": "logistic regression on rgb2hed densities (skimage), class-balanced",
            "features": list(FEATURES), "mean": mean.tolist(), "scale": scale.tolist(),
            "coef": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0]),
            "stride_px": float(stride_px), "centre_px": int(centre_px), "patch_px": int(patch_px),
            "cells": int(len(y)), "tumour_share": float(y.mean())}


def baseline_heatmap(slide_path: str | Path, params: dict) -> tuple[np.ndarray, dict]:
    """The baseline's tumour probability ``(gh, gw)`` float32 on the heatmap grid, and metadata."""
    x, cells, info = slide_features(slide_path, stride_px=params["stride_px"], centre_px=params["centre_px"],
                                    patch_px=params["patch_px"])
    z = ((x - np.asarray(params["mean"])) / np.asarray(params["scale"])) @ np.asarray(params["coef"])
    heat = np.zeros(info["grid_shape"], np.float32)
    heat[cells[:, 0], cells[:, 1]] = 1.0 / (1.0 + np.exp(-(z + params["intercept"])))
    return heat, {**info, "model": "baseline: " + params["method"], "tiles": int(len(cells))}


def write_baseline_heatmaps(slides: str | Path, out: str | Path, params: dict) -> list[Path]:
    """``<out>/<slide>.heatmap.tif`` of the baseline for every slide (what ``detect`` reads)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for s in list_slides(slides):
        heat, info = baseline_heatmap(s, params)
        written.append(write_pyramid_tiff(out / f"{Path(s).stem}.heatmap.tif", heat, mpp=info["mpp"] * info["stride"],
                                          tile=64, compression="zlib", min_size=32, mode="max",
                                          description=info))
    (out / "baseline.json").write_text(json.dumps(params, indent=1))
    return written


def patch_auc(heatmaps: str | Path, slides: str | Path) -> tuple[float, int]:
    """ROC AUC of heatmap cells against "tumour at the cell's centre", over tissue cells.

    The cells are those of the slides' heatmap grid (tissue detection as in
    ``heatmap``), labelled from ``<slide>_Mask.tif``; the score is the
    heatmap's value there. Returns (AUC, number of cells).
    """
    from sklearn.metrics import roc_auc_score

    from .io import read_heatmap

    scores, labels = [], []
    for s in list_slides(slides):
        hm_path = Path(heatmaps) / f"{Path(s).stem}.heatmap.tif"
        heat, meta = read_heatmap(hm_path)
        stride = float(meta["stride"])
        with Slide(s) as slide:
            grid = _grid(slide, stride, TissueConfig())
        if grid.shape != heat.shape:
            raise InputError(f"expected a heatmap of grid {grid.shape}, found {heat.shape}", hm_path)
        rows, cols = np.nonzero(grid)
        cells = np.stack([rows, cols], axis=1)
        scores.append(heat[rows, cols])
        labels.append(cell_labels(s, cells, stride))
    y, p = np.concatenate(labels), np.concatenate(scores)
    if y.min() == y.max():
        raise InputError("expected slides with both tumour and normal tissue cells, found one class", slides)
    return float(roc_auc_score(y, p)), int(len(y))
