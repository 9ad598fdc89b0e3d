"""Lesion detection from heatmaps: slide score and non-maximum suppression.

As Liu et al.: the slide score is the heatmap's maximum; lesions are found by
repeatedly taking the highest remaining heatmap value above a threshold,
reporting it, and suppressing everything within a radius of it. Outputs are
the Camelyon16 submission files: ``<slide>.csv`` with ``prob,X,Y`` lines in
level-0 pixels, and ``slides.csv`` (``image,score``) for the slide-level task;
beside each CSV, ``<slide>.detections.geojson`` holds the same lesions as
QuPath point detections (:mod:`.io.qupath`; QuPath opens it with File > Import
objects from file, or dropped on the slide's viewer).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.config import check_ranges, option
from deepsci.core.errors import InputError
from deepsci.core.io import write_text
from deepsci.core.runs import RunDir

from .io import read_heatmap, write_detections_csv
from .io.qupath import detection_features, write_geojson

__all__ = ["nms", "DetectConfig", "detect_heatmap", "run_detect"]


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
    """Settings of ``deepsci pathology detect`` (recorded in the output's ``run.json``).

    Attributes
    ----------
    heatmaps : str
        A folder of heatmaps written by ``heatmap`` (``*.heatmap.tif`` / ``.zarr``) or one file.
    out : str
        Folder for ``<slide>.csv``, ``<slide>.detections.geojson`` and ``slides.csv``.
    threshold : float
        Lowest probability reported as a lesion.
    radius_um : float
        NMS suppression radius in microns.
    max_per_slide : int
        Most lesions reported per slide.
    skip_invalid : bool
        Skip a heatmap that does not read, naming it in ``run.json`` (``results.skipped``),
        instead of stopping; it is still an error when none is left.
    """

    heatmaps: str = option(help="Folder (or file) of heatmaps.")
    out: str = option(help="Folder for <slide>.csv and slides.csv.")
    threshold: float = option(0.5, "Lowest reported lesion probability.", min=0, max=1)
    radius_um: float = option(100.0, "NMS radius in microns.", min=0, min_exclusive=True, cli="radius")
    max_per_slide: int = option(1000, "Most lesions reported per slide.", min=1)
    skip_invalid: bool = option(False, "Skip heatmaps that do not read (named in run.json) instead "
                                "of stopping at the first.")

    def validate(self) -> DetectConfig:
        """Raise ConfigError / InputError for out-of-range settings or missing heatmaps; return self."""
        check_ranges(self)
        if not Path(self.heatmaps).exists():
            raise InputError("expected a heatmap file or folder, found none", self.heatmaps)
        return self


def detect_heatmap(path: str | Path, cfg: DetectConfig) -> tuple[str, float, list[tuple[float, float, float]]]:
    """Slide name, slide score and lesions ``(prob, x, y)`` (level-0 px) of one heatmap."""
    hm, meta = read_heatmap(path)
    stride = float(meta["stride"])
    mpp = float(meta["mpp"])
    name = meta.get("slide_name")
    # the name becomes <name>.csv in --out: a plain file name only, never a path out of it
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        name = Path(path).name.split(".")[0]
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


def _detect_all(files: list[Path], cfg: DetectConfig) -> tuple[dict, dict[str, str]]:
    """``name -> (score, lesions)`` of every readable heatmap and ``file -> why`` of the skipped ones."""
    found, skipped = {}, {}
    for path in files:
        try:
            name, score, dets = detect_heatmap(path, cfg)
        except InputError as e:
            if not cfg.skip_invalid:
                raise
            skipped[str(path)] = e.message
            continue
        if name in found:
            raise InputError(f"expected one heatmap per slide, found two for {name!r}", path)
        found[name] = (score, dets)
    if not found:
        raise InputError(f"expected at least one valid heatmap, found none ({len(skipped)} skipped: "
                         f"{next(iter(skipped.values()))})", cfg.heatmaps)
    return found, skipped


def run_detect(config: DetectConfig, *, overwrite: bool = False) -> dict[str, float]:
    """Write ``<slide>.csv`` and ``<slide>.detections.geojson`` per heatmap, ``slides.csv`` and
    ``run.json``; return the slide scores.

    Every heatmap is read before anything is written, so a bad one leaves no output.
    """
    cfg = config.validate()
    files = _heatmap_files(Path(cfg.heatmaps))
    found, skipped = _detect_all(files, cfg)
    with RunDir(cfg.out, command="pathology detect", config=cfg, inputs=[cfg.heatmaps],
                overwrite=overwrite) as run:
        scores, lesions = {}, {}
        for name, (score, dets) in found.items():
            probs, xs, ys = [d[0] for d in dets], [d[1] for d in dets], [d[2] for d in dets]
            write_detections_csv(run.file(f"{name}.csv"), probs, xs, ys)
            write_geojson(run.file(f"{name}.detections.geojson"), detection_features(probs, xs, ys))
            scores[name], lesions[name] = score, len(dets)
        write_text(run.file("slides.csv"),
                   "image,score\n" + "".join(f"{k},{v:.6f}\n" for k, v in scores.items()))
        run.record(slide_scores=scores, lesions=lesions, skipped=skipped)
    return scores
