"""The Camelyon16 evaluation: lesion-level FROC and slide-level ROC AUC.

FROC follows the official ``Evaluation_FROC.py`` step by step:

* the ground truth at level ``L`` (default 5, downsample 32) is grown by
  75 um / 2 = 37.5 um (Euclidean distance transform), holes filled, and
  labelled with 8-connectivity;
* a lesion whose major axis is below 275 um (200 um plus the growth) is an
  isolated-tumour-cell region: detections in it are neither hits nor false
  positives, and it is not counted among the lesions to find;
* a detection at level-0 ``(x, y)`` hits the label at ``(y >> L, x >> L)``;
  only the highest-probability detection per lesion counts as a true positive;
  detections on label 0 (and every detection on a normal slide) are false
  positives;
* the curve is swept over the distinct probabilities except the lowest (as the
  script does), and the score is the mean sensitivity interpolated at
  1/4, 1/2, 1, 2, 4 and 8 false positives per slide.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.config import check_ranges, option
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import atomic_path, save_figure, write_json
from deepsci.core.runs import RunDir

from .io import SlideTruth, load_truth, read_detections_csv

__all__ = [
    "FROC_POINTS", "evaluation_mask", "itc_labels", "slide_hits", "froc_curve", "froc_score",
    "slide_auc", "EvaluateConfig", "run_evaluate", "SlideTruth", "load_truth",
]

FROC_POINTS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def evaluation_mask(tumour: np.ndarray, mpp: float, level: int) -> np.ndarray:
    """Labelled evaluation regions ``(h, w)`` int from a tumour mask at ``level``.

    Parameters
    ----------
    tumour : ndarray, shape (h, w), bool
        Ground truth at downsample ``2 ** level``.
    mpp : float
        Microns per pixel at level 0.
    """
    from scipy import ndimage as ndi
    from skimage import measure

    tumour = np.asarray(tumour, bool)
    if not tumour.any():
        return np.zeros(tumour.shape, np.int32)
    distance = ndi.distance_transform_edt(~tumour)
    threshold = 75.0 / (mpp * 2 ** level * 2)
    filled = ndi.binary_fill_holes(distance < threshold)
    return measure.label(filled, connectivity=2).astype(np.int32)


def itc_labels(labels: np.ndarray, mpp: float, level: int) -> set[int]:
    """Labels whose major axis is under 275 um (isolated tumour cells)."""
    from skimage import measure

    threshold = 275.0 / (mpp * 2 ** level)
    return {p.label for p in measure.regionprops(labels) if p.axis_major_length < threshold}


@dataclass
class SlideHits:
    """One slide's contribution to the FROC.

    ``tp_probs`` has one entry per label of the evaluation mask (ITC labels and
    missed lesions stay 0, as in the official script); ``n_tumours`` excludes ITC.
    """

    fp_probs: np.ndarray
    tp_probs: np.ndarray
    n_tumours: int


def slide_hits(probs, xs, ys, labels: np.ndarray | None, itc: set[int], level: int) -> SlideHits:
    """Classify one slide's detections into hits and false positives.

    ``labels`` None means a normal slide: every detection is a false positive.
    """
    probs = np.asarray(probs, np.float64)
    if labels is None or labels.max() == 0:
        n_labels = 0 if labels is None else int(labels.max())
        return SlideHits(probs.copy(), np.zeros(n_labels, np.float32), 0)
    n_labels = int(labels.max())
    rows = np.clip(np.asarray(ys, np.int64) >> level, 0, labels.shape[0] - 1)
    cols = np.clip(np.asarray(xs, np.int64) >> level, 0, labels.shape[1] - 1)
    hit = labels[rows, cols]
    tp = np.zeros(n_labels, np.float32)  # float32 like the script, so ties behave the same
    valid = (hit > 0) & ~np.isin(hit, list(itc))
    np.maximum.at(tp, hit[valid] - 1, probs[valid].astype(np.float32))
    return SlideHits(probs[hit == 0], tp, n_labels - len(itc))


def froc_curve(slides: list[SlideHits]) -> tuple[np.ndarray, np.ndarray]:
    """Average false positives per slide and sensitivity, from high to low threshold.

    Returns the arrays in the script's order (decreasing false positives).
    """
    fps = np.concatenate([s.fp_probs for s in slides]) if slides else np.zeros(0)
    tps = np.concatenate([s.tp_probs for s in slides]).astype(np.float64) if slides else np.zeros(0)
    n_tumours = sum(s.n_tumours for s in slides)
    if not slides:
        raise ConfigError("expected at least one slide to evaluate, found none")
    if n_tumours == 0:
        raise InputError("expected at least one tumour (non-ITC) lesion in the ground truth, found none")
    thresholds = np.unique(np.concatenate([fps, tps]))[1:]
    fps_sorted, tps_sorted = np.sort(fps), np.sort(tps)
    # counts of values >= t for every threshold at once
    n_fp = len(fps) - np.searchsorted(fps_sorted, thresholds, side="left")
    n_tp = len(tps) - np.searchsorted(tps_sorted, thresholds, side="left")
    total_fps = np.append(n_fp, 0) / float(len(slides))
    sensitivity = np.append(n_tp, 0) / float(n_tumours)
    return total_fps, sensitivity


def froc_score(total_fps: np.ndarray, sensitivity: np.ndarray,
               points: tuple[float, ...] = FROC_POINTS) -> tuple[float, dict[float, float]]:
    """Mean sensitivity at ``points`` false positives per slide, and each value."""
    at = {p: float(np.interp(p, total_fps[::-1], sensitivity[::-1])) for p in points}
    return float(np.mean(list(at.values()))), at


def slide_auc(labels, scores) -> float:
    """Slide-level ROC AUC (tumour vs normal slides by slide score)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, int)
    if labels.min() == labels.max():
        raise InputError("expected both tumour and normal slides for the slide AUC, found only "
                         f"{'tumour' if labels[0] else 'normal'} slides")
    return float(roc_auc_score(labels, np.asarray(scores, float)))


# --------------------------------------------------------------------------- files
@dataclass
class EvaluateConfig:
    """Inputs of ``deepsci pathology evaluate`` (recorded in the output's ``run.json``).

    Attributes
    ----------
    detections : str
        Folder of ``<slide>.csv`` lesion files (``prob,X,Y``) and ``slides.csv``.
    truth : str
        Folder of ``<slide>.xml`` / ``.geojson`` annotations or ``<slide>_Mask.tif``.
    out : str
        Folder for ``metrics.json``, ``per_slide.json``, the FROC curve and plots.
    slides : str, optional
        Folder of the slides (sizes, microns per pixel); defaults to ``truth``.
    level : int
        Evaluation-mask level (downsample ``2**level``), 5 as Camelyon16.
    mpp : float, optional
        Microns per pixel at level 0, for slides that do not record it.
    points : tuple of float
        False positives per slide at which the sensitivity is averaged.
    """

    detections: str = option(help="Folder from `detect`.")
    truth: str = option(help="Folder of <slide>.xml/.geojson or <slide>_Mask.tif (absent = normal).")
    out: str = option(help="Folder for metrics.json and plots.")
    slides: str | None = option(None, "Folder of the slides (default: --truth).")
    level: int = option(5, "Evaluation-mask level (Camelyon16: 5).", min=0, max=10)
    mpp: float | None = option(None, "Microns per pixel at level 0, for slides that do not record "
                               "it.", min=0, min_exclusive=True)
    points: tuple[float, ...] = option(FROC_POINTS, "False positives per slide averaged by the FROC.",
                                       min=0, min_exclusive=True)

    def validate(self) -> EvaluateConfig:
        """Raise ConfigError / InputError for out-of-range settings or missing folders; return self."""
        check_ranges(self)
        if not self.points:
            raise ConfigError("expected --points, found none")
        for name in ("detections", "truth"):
            if not Path(getattr(self, name)).is_dir():
                raise InputError(f"expected a folder for --{name}, found none", getattr(self, name))
        return self


def _read_slide_scores(path: Path) -> dict[str, float]:
    import csv

    scores = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                scores[row["image"]] = float(row["score"])
            except (KeyError, ValueError):
                raise InputError("expected columns image,score with numeric scores, found "
                                 f"{row}", path) from None
    return scores


def _score_slides(cfg: EvaluateConfig) -> tuple[list[SlideHits], list[dict], list[int], list[float]]:
    """Every ``<slide>.csv`` against its truth: hits, per-slide rows, slide labels and scores."""
    det_dir, truth_dir = Path(cfg.detections), Path(cfg.truth)
    slides_dir = Path(cfg.slides) if cfg.slides else truth_dir
    csvs = sorted(p for p in det_dir.glob("*.csv") if p.name != "slides.csv")
    if not csvs:
        raise InputError("expected <slide>.csv detection files, found none", det_dir)
    hits, rows, labels, scores = [], [], [], []
    slide_scores = _read_slide_scores(det_dir / "slides.csv") if (det_dir / "slides.csv").is_file() else {}
    for csv_path in csvs:
        name = csv_path.stem
        probs, xs, ys = read_detections_csv(csv_path)
        truth = load_truth(name, slides_dir=slides_dir, truth_dir=truth_dir, level=cfg.level, mpp=cfg.mpp)
        is_tumour = bool(truth.tumour.any())
        lab = evaluation_mask(truth.tumour, truth.mpp, cfg.level) if is_tumour else None
        itc = itc_labels(lab, truth.mpp, cfg.level) if is_tumour else set()
        h = slide_hits(probs, xs, ys, lab, itc, cfg.level)
        hits.append(h)
        score = slide_scores.get(name, float(probs.max()) if probs.size else 0.0)
        labels.append(int(is_tumour))
        scores.append(score)
        rows.append({"image": name, "tumour": is_tumour, "score": score, "lesions": h.n_tumours,
                     "itc": len(itc), "detected": int((h.tp_probs > 0).sum()),
                     "false_positives": len(h.fp_probs)})
    return hits, rows, labels, scores


def run_evaluate(config: EvaluateConfig, *, overwrite: bool = False) -> dict:
    """FROC and slide AUC for a folder of detections; writes metrics, plots and ``run.json``.

    Returns
    -------
    dict
        ``froc``, ``sensitivity_at`` (per FP rate), ``slide_auc`` (when both
        classes are present), counts.
    """
    cfg = config.validate()
    hits, rows, labels, scores = _score_slides(cfg)
    total_fps, sens = froc_curve(hits)
    froc, at = froc_score(total_fps, sens, tuple(cfg.points))
    metrics = {"froc": froc, "sensitivity_at": {str(k): v for k, v in at.items()},
               "slides": len(hits), "tumour_slides": int(sum(labels)),
               "lesions": int(sum(h.n_tumours for h in hits))}
    if 0 < sum(labels) < len(labels):
        metrics["slide_auc"] = slide_auc(labels, scores)
    with RunDir(cfg.out, command="pathology evaluate", config=cfg, inputs=[cfg.detections, cfg.truth],
                overwrite=overwrite) as run:
        write_json(run.file("metrics.json"), metrics)
        write_json(run.file("per_slide.json"), rows)
        _plot_froc(total_fps, sens, froc, run.file("froc.png"))
        if "slide_auc" in metrics:
            _plot_roc(labels, scores, metrics["slide_auc"], run.file("roc.png"))
        with atomic_path(run.file("froc_curve.csv")) as tmp:
            np.savetxt(tmp, np.column_stack([total_fps, sens]), delimiter=",",
                       header="fps_per_slide,sensitivity", comments="", fmt="%.6g")
        run.record(**metrics)
    return metrics


def _plot_froc(total_fps, sens, froc, path: os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(total_fps, sens, "-", color="k")
    for p in FROC_POINTS:
        ax.axvline(p, color="0.85", lw=0.8, zorder=0)
    ax.set_xscale("symlog", linthresh=0.25)
    ax.set_xlim(0, max(8.0, float(total_fps.max()) if total_fps.size else 8.0))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("average false positives per slide")
    ax.set_ylabel("metastasis detection sensitivity")
    ax.set_title(f"FROC (score {froc:.3f})")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _plot_roc(labels, scores, auc, path: os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve


    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, "-", color="k")
    ax.plot([0, 1], [0, 1], ":", color="0.6")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"slide ROC (AUC {auc:.3f})")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
