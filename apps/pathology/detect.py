"""Lesion detection from heatmaps: slide score and non-maximum suppression.

As Liu et al.: the slide score is the heatmap's maximum; lesions are found by
repeatedly taking the highest remaining heatmap value above a threshold,
reporting it, and suppressing everything within a radius of it. Outputs are
the Camelyon16 submission files: ``<slide>.csv`` with ``prob,X,Y`` lines in
level-0 pixels, and ``slides.csv`` (``image,score``) for the slide-level task.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.errors import ConfigError, InputError

from .io import read_heatmap, write_detections_csv

__all__ = ["nms", "DetectConfig", "detect_heatmap", "detect"]


def nms(heatmap: np.ndarray, *, radius: float, threshold: float,
        max_detections: int = 1000) -> list[tuple[float, int, int]]:
    """Non-maximum suppression on a probability map.

    Parameters
    ----------
    heatmap : ndarray, shape (H, W)
    radius : float
        Suppression radius in heatmap pixels (a disk around each maximum).
    threshold : float
        Stop when the highest remaining value is below this.

    Returns
    -------
    list of (prob, row, col), highest probability first.
    """
    hm = np.array(heatmap, dtype=np.float64, copy=True)
    if hm.ndim != 2:
        raise ValueError(f"Expected a 2-D heatmap (H, W). Received: shape {hm.shape}")
    rr, cc = np.ogrid[: hm.shape[0], : hm.shape[1]]
    out = []
    while len(out) < max_detections and hm.size:
        idx = int(np.argmax(hm))
        r, c = divmod(idx, hm.shape[1])
        p = hm[r, c]
        if not p >= threshold:  # also stops on NaN
            break
        out.append((float(p), r, c))
        hm[(rr - r) ** 2 + (cc - c) ** 2 <= radius ** 2] = -np.inf
    return out


@dataclass
class DetectConfig:
    """Settings of ``deepsci pathology detect``.

    Attributes
    ----------
    heatmaps : str
        A folder of heatmaps written by ``heatmap`` (``*.heatmap.tif`` / ``.zarr``) or one file.
    out_dir : str
    threshold : float
        Lowest probability reported as a lesion.
    radius_um : float
        NMS suppression radius in microns.
    """

    heatmaps: str
    out_dir: str
    threshold: float = 0.5
    radius_um: float = 100.0
    max_per_slide: int = 1000

    def validate(self) -> DetectConfig:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"expected 0 <= threshold <= 1, found {self.threshold}")
        if self.radius_um <= 0:
            raise ConfigError(f"expected radius_um > 0, found {self.radius_um}")
        if not Path(self.heatmaps).exists():
            raise InputError("expected a heatmap file or folder, found none", self.heatmaps)
        return self


def detect_heatmap(path: str | Path, cfg: DetectConfig) -> tuple[str, float, list[tuple[float, float, float]]]:
    """Slide name, slide score and lesions ``(prob, x, y)`` (level-0 px) of one heatmap."""
    hm, meta = read_heatmap(path)
    stride = float(meta["stride"])
    mpp = float(meta["mpp"])
    name = meta.get("slide_name") or Path(path).name.split(".")[0]
    score = float(hm.max()) if hm.size else 0.0
    radius = cfg.radius_um / (mpp * stride)
    found = nms(hm, radius=radius, threshold=cfg.threshold, max_detections=cfg.max_per_slide)
    # Heatmap pixel (r, c) covers level-0 [c*s, (c+1)*s); report its centre.
    return name, score, [(p, (c + 0.5) * stride, (r + 0.5) * stride) for p, r, c in found]


def _heatmap_files(root: Path) -> list[Path]:
    if root.is_file() or root.suffix == ".zarr":
        return [root]
    files = sorted(list(root.glob("*.heatmap.tif")) + list(root.glob("*.heatmap.zarr")))
    seen, out = set(), []
    for f in files:  # prefer the TIFF when both formats exist
        stem = f.name.split(".heatmap")[0]
        if stem not in seen:
            seen.add(stem)
            out.append(f)
    if not out:
        raise InputError("expected *.heatmap.tif or *.heatmap.zarr files, found none", root)
    return out


def detect(config: DetectConfig) -> dict[str, float]:
    """Write ``<slide>.csv`` per heatmap and ``slides.csv``; return slide scores."""
    from deepsci.core.io import save_config, write_run_info, write_text

    cfg = config.validate()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "detect_config.json")
    scores = {}
    for path in _heatmap_files(Path(cfg.heatmaps)):
        name, score, dets = detect_heatmap(path, cfg)
        write_detections_csv(out / f"{name}.csv", [d[0] for d in dets], [d[1] for d in dets],
                             [d[2] for d in dets])
        scores[name] = score
    write_text(out / "slides.csv", "image,score\n" + "".join(f"{k},{v:.6f}\n" for k, v in scores.items()))
    write_run_info(out, command="pathology detect", config=cfg)
    return scores
