"""Orthogonal slices of an EM volume with a segmentation overlaid (PNG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deepsci.core.io import save_figure

__all__ = ["orthogonal_slices"]


def _colour(labels: np.ndarray) -> np.ndarray:
    """Stable pseudo-random colours per id (0 stays transparent)."""
    ids = labels.astype(np.uint64)
    rgb = np.stack([((ids * np.uint64(k)) % np.uint64(251)).astype(np.float32) / 251.0
                    for k in (97, 57, 151)], -1)
    return 0.25 + 0.75 * rgb


def orthogonal_slices(image: np.ndarray, segmentations: dict[str, np.ndarray], path: str | Path, *,
                      centre=None, alpha: float = 0.45, voxel_size=(1.0, 1.0, 1.0)) -> Path:
    """Save a grid of z/y/x mid-slices: one row per segmentation, image beneath.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X)
    segmentations : dict of str to ndarray of int, shape (Z, Y, X)
        Row title -> labels (e.g. ``{"ground truth": gt, "FFN": seg}``).
    centre : sequence of 3 int, optional
        Slice positions; default the volume centre.
    voxel_size : sequence of 3 float
        Sets the aspect ratio of the side views.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    c = [s // 2 for s in image.shape] if centre is None else [int(v) for v in centre]
    vz, vy, vx = (float(v) for v in voxel_size)
    views = [(f"z = {c[0]}", lambda a: a[c[0]], vy / vx),
             (f"y = {c[1]}", lambda a: a[:, c[1]], vz / vx),
             (f"x = {c[2]}", lambda a: a[:, :, c[2]], vz / vy)]
    rows = max(len(segmentations), 1)
    fig, axes = plt.subplots(rows, 3, figsize=(11, 3.6 * rows), squeeze=False)
    lo, hi = np.percentile(image, [1, 99])
    for r, (title, seg) in enumerate(segmentations.items() or [("image", None)]):
        for k, (name, cut, aspect) in enumerate(views):
            ax = axes[r, k]
            ax.imshow(cut(image), cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
            if seg is not None:
                lab = cut(seg)
                rgba = np.concatenate([_colour(lab), (alpha * (lab > 0))[..., None]], -1)
                ax.imshow(rgba, aspect=aspect, interpolation="nearest")
            ax.set_title(f"{title} — {name}", fontsize=9)
            ax.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    return save_figure(fig, path, dpi=90)
