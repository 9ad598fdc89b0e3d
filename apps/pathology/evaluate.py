"""The Camelyon16 evaluation: lesion-level FROC and slide-level ROC AUC.

FROC follows the official ``Evaluation_FROC.py`` step by step:

* which slides are tumour slides comes from a reference list
  (``reference.csv``: ``image,Tumor|Normal,...``) or, without one, from the
  slide names (``normal_*`` is normal, any other name a tumour slide); a
  tumour slide without its mask or annotation is an error, as in the script;
* the ground truth at level ``L`` (default 5, downsample 32) is grown by
  75 um / 2 = 37.5 um (Euclidean distance transform), holes filled, and
  labelled with 8-connectivity;
* a lesion whose major axis is below 275 um (200 um plus the growth) is an
  isolated-tumour-cell region: detections in it are neither hits nor false
  positives, and it is not counted among the lesions to find;
* both lengths are converted to pixels with the script's fixed level-0 pixel
  size of 0.243 um (``pixel_size="official"``, the default, so scores compare
  with published ones) or with each slide's own (``pixel_size="slide"``);
* a detection at level-0 ``(x, y)`` hits the label at ``(y >> L, x >> L)``;
  only the highest-probability detection per lesion counts as a true positive;
  detections on label 0 (and every detection on a normal slide) are false
  positives;
* lesion probabilities are float32 and compared with each threshold in
  float32, false-positive probabilities in float64, as the script's arrays are;
* the curve is swept over the distinct probabilities except the lowest (as the
  script does), and the score is the mean sensitivity interpolated at
  1/4, 1/2, 1, 2, 4 and 8 false positives per slide.
"""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.config import check_ranges, option
from deepsci.core.errors import ConfigError, InputError, expected
from deepsci.core.io import atomic_path, reading, save_figure, write_json
from deepsci.core.runs import RunDir

from .io import SlideTruth, load_truth, read_detections_csv, truth_file

__all__ = [
    "FROC_POINTS", "CAMELYON16_MPP", "PIXEL_SIZES", "evaluation_mask", "itc_labels", "slide_hits",
    "froc_curve", "froc_score", "slide_auc", "read_reference", "is_normal_name", "pixel_size_text",
    "EvaluateConfig", "run_evaluate", "SlideTruth", "load_truth",
]

FROC_POINTS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Level-0 microns per pixel the official script assumes for every slide (``L0_RESOLUTION``).
CAMELYON16_MPP = 0.243
#: ``official``: :data:`CAMELYON16_MPP` for the growth and the ITC size; ``slide``: each slide's own.
PIXEL_SIZES = ("official", "slide")
# Camelyon16 names its normal slides normal_001 ...; deepsci's synth may prefix them (test_normal_001).
_NORMAL_NAME = re.compile(r"(?:^|_)normal(?:_|$)", re.IGNORECASE)


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

    Parameters
    ----------
    probs, xs, ys : array-like, shape (n,)
        Detection probabilities (as read from the CSV, float64) and level-0
        coordinates.
    labels : ndarray, shape (h, w), int, or None
        Evaluation mask (:func:`evaluation_mask`); None means a normal slide,
        where every detection is a false positive.
    itc : set of int
        Labels of isolated tumour cells (:func:`itc_labels`): detections there are ignored.
    level : int
        Level of ``labels`` (a detection hits ``labels[y >> level, x >> level]``;
        points past the mask's far edge are clipped onto it).
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
    """Average false positives per slide and sensitivity, from low to high threshold.

    Parameters
    ----------
    slides : list of SlideHits
        Every evaluated slide, normal ones included (they count in the average).

    Returns
    -------
    total_fps, sensitivity : ndarray
        The script's arrays, in its order (decreasing false positives), each
        ending with the point ``(0, 0)``.
    """
    if not slides:
        raise ConfigError("expected at least one slide to evaluate, found none")
    n_tumours = sum(s.n_tumours for s in slides)
    if n_tumours == 0:
        raise InputError("expected at least one tumour (non-ITC) lesion in the ground truth, found none")
    fps = np.concatenate([np.asarray(s.fp_probs, np.float64) for s in slides])
    # The script keeps lesion probabilities in a float32 array and compares it with each
    # threshold in float32 (false positives stay float64): a lesion whose probability ties
    # a false positive's at the written 6 decimals is still found at that threshold even
    # where float32 rounds the probability down. Comparing in float64 would drop it.
    tps = np.concatenate([np.asarray(s.tp_probs, np.float32) for s in slides])
    thresholds = np.unique(np.concatenate([fps, tps.astype(np.float64)]))[1:]
    # counts of values >= t for every threshold at once
    n_fp = len(fps) - np.searchsorted(np.sort(fps), thresholds, side="left")
    n_tp = len(tps) - np.searchsorted(np.sort(tps), thresholds.astype(np.float32), side="left")
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
    reference : str, optional
        Camelyon16 ``reference.csv`` (``image,Tumor|Normal,...``) saying which
        slides are tumour slides; without it a slide named ``normal_*`` is
        normal and any other is a tumour slide (and needs its truth file).
    pixel_size : {"official", "slide"}
        Level-0 microns per pixel of the 37.5-um growth and the 275-um ITC size:
        the script's fixed 0.243 (published scores) or each slide's own.
    level : int
        Evaluation-mask level (downsample ``2**level``), 5 as Camelyon16.
    mpp : float, optional
        Microns per pixel at level 0, for slides that do not record it.
    points : tuple of float
        False positives per slide at which the sensitivity is averaged.
    """

    detections: str = option(help="Folder from `detect`.")
    truth: str = option(help="Folder of <slide>.xml/.geojson or <slide>_Mask.tif (tumour slides).")
    out: str = option(help="Folder for metrics.json and plots.")
    slides: str | None = option(None, "Folder of the slides (default: --truth).")
    reference: str | None = option(None, "Camelyon16 reference.csv (image,Tumor|Normal): the tumour "
                                   "slides; default: by name (normal_* is normal).")
    pixel_size: str = option("official", "um/px of the 37.5-um growth and 275-um ITC size: official "
                             f"({CAMELYON16_MPP} for every slide) or slide (its own).", choices=PIXEL_SIZES)
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
        if self.reference is not None and not Path(self.reference).is_file():
            raise InputError("expected a reference CSV file for --reference, found none", self.reference)
        return self


def is_normal_name(name: str) -> bool:
    """Whether a slide name marks a normal slide by the Camelyon16 convention (``normal_001``).

    A prefix separated by ``_`` is allowed (``test_normal_001``, as :mod:`.synth` writes).
    """
    return _NORMAL_NAME.search(name) is not None


def _reference_key(name: str) -> str:
    # reference.csv writes Test_001 where the files are test_001.tif / test_001.csv
    name = name.strip()
    for suffix in (".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".csv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name.lower()


def _csv_rows(path: Path, what: str, reader) -> list:
    """Every row of the CSV ``path`` through ``reader``; a file that is no UTF-8 CSV is one line."""
    with reading(path, what):
        text = path.read_bytes().decode("utf-8")
    try:
        return list(reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise expected(what, f"a file that does not parse as CSV ({e})", path) from None


def read_reference(path: str | os.PathLike) -> dict[str, bool]:
    """Slide name (lower case, no extension) -> tumour slide, from a Camelyon16 ``reference.csv``.

    Parameters
    ----------
    path : str or path-like
        Lines ``image,Tumor|Normal[,...]`` (more columns, as the Camelyon16
        test reference's lesion type, are ignored); a header line is skipped.
    """
    path = Path(path)
    labels: dict[str, bool] = {}
    rows = _csv_rows(path, "a reference CSV (image,Tumor|Normal)", csv.reader)
    for n, row in enumerate(rows, 1):
        if not row or not "".join(row).strip():
            continue
        kind = row[1].strip().lower() if len(row) > 1 else ""
        if kind in ("tumor", "tumour", "normal"):
            labels[_reference_key(row[0])] = kind != "normal"
        elif n > 1 or labels:
            raise InputError(f"expected 'image,Tumor|Normal' on line {n}, found {','.join(row)[:60]!r}",
                             path)
    if not labels:
        raise InputError("expected 'image,Tumor|Normal' lines, found none", path)
    return labels


def _is_tumour(name: str, reference: dict[str, bool] | None, ref_path: str | None) -> tuple[bool, str]:
    """Whether slide ``name`` is a tumour slide, and why (for error messages)."""
    if reference is None:
        if is_normal_name(name):
            return False, "a normal slide by its name normal_*"
        return True, "a tumour slide: not named normal_* and no --reference lists it Normal"
    key, ref_name = _reference_key(name), Path(ref_path).name
    if key not in reference:
        raise InputError(f"expected a row for slide {name!r} in the reference, found none", ref_path)
    return (True, f"Tumor in {ref_name}") if reference[key] else (False, f"Normal in {ref_name}")


def _slide_truth(name: str, cfg: EvaluateConfig, reference: dict[str, bool] | None) -> SlideTruth | None:
    """The truth of a tumour slide, ``None`` for a normal one; InputError where the two disagree."""
    truth_dir = Path(cfg.truth)
    slides_dir = Path(cfg.slides) if cfg.slides else truth_dir
    tumour, why = _is_tumour(name, reference, cfg.reference)
    source = truth_file(name, truth_dir)
    if tumour and source is None:
        raise InputError(f"expected {name}_Mask.tif, {name}.xml, .geojson or .json for slide {name!r} "
                         f"({why}), found none", truth_dir)
    if source is None:
        return None  # a normal slide needs nothing else, as in the script
    truth = load_truth(name, slides_dir=slides_dir, truth_dir=truth_dir, level=cfg.level, mpp=cfg.mpp)
    if tumour and not truth.tumour.any():
        raise InputError(f"expected tumour regions in the truth of slide {name!r} ({why}), found none",
                         source)
    if not tumour and truth.tumour.any():
        raise InputError(f"expected no tumour in the truth of slide {name!r} ({why}), found "
                         f"{int(truth.tumour.sum())} tumour pixels at level {cfg.level}", source)
    return truth if tumour else None


def _read_slide_scores(path: Path) -> dict[str, float]:
    scores = {}
    rows = _csv_rows(path, "a slide-score CSV (image,score)", csv.DictReader)
    for row in rows:
        try:
            score = float(row["score"])
        except (KeyError, TypeError, ValueError):
            score = None
        name = row.get("image")
        if not name or score is None or not np.isfinite(score):
            raise InputError(f"expected columns image,score with numeric scores, found {str(row)[:80]}", path)
        scores[name] = score
    return scores


def _score_slides(cfg: EvaluateConfig) -> tuple[list[SlideHits], list[dict], list[int], list[float]]:
    """Every ``<slide>.csv`` against its truth: hits, per-slide rows, slide labels and scores."""
    det_dir = Path(cfg.detections)
    csvs = sorted(p for p in det_dir.glob("*.csv") if p.name != "slides.csv")
    if not csvs:
        raise InputError("expected <slide>.csv detection files, found none", det_dir)
    reference = read_reference(cfg.reference) if cfg.reference else None
    hits, rows, labels, scores = [], [], [], []
    slide_scores = _read_slide_scores(det_dir / "slides.csv") if (det_dir / "slides.csv").is_file() else {}
    for csv_path in csvs:
        name = csv_path.stem
        probs, xs, ys = read_detections_csv(csv_path)
        truth = _slide_truth(name, cfg, reference)
        mpp = None if truth is None else (CAMELYON16_MPP if cfg.pixel_size == "official" else truth.mpp)
        lab = None if truth is None else evaluation_mask(truth.tumour, mpp, cfg.level)
        itc = set() if truth is None else itc_labels(lab, mpp, cfg.level)
        h = slide_hits(probs, xs, ys, lab, itc, cfg.level)
        hits.append(h)
        score = slide_scores.get(name, float(probs.max()) if probs.size else 0.0)
        labels.append(int(truth is not None))
        scores.append(score)
        rows.append({"image": name, "tumour": truth is not None, "score": score, "lesions": h.n_tumours,
                     "itc": len(itc), "detected": int((h.tp_probs > 0).sum()),
                     "false_positives": len(h.fp_probs), "pixel_size_um": mpp,
                     "slide_mpp": None if truth is None else truth.mpp})
    if cfg.pixel_size == "official" and labels and not any(h.n_tumours for h in hits):
        _no_lesion_at_official_size(rows)
    return hits, rows, labels, scores


def _no_lesion_at_official_size(rows: list[dict]) -> None:
    """InputError naming the slides' own pixel size when the official one leaves only ITCs."""
    itc = sum(r["itc"] for r in rows)
    own = sorted({r["slide_mpp"] for r in rows if r["slide_mpp"] is not None})
    if itc and own and own != [CAMELYON16_MPP]:
        sizes = "/".join(f"{v:g}" for v in own)
        raise InputError(f"expected at least one tumour (non-ITC) lesion, found only {itc} isolated-tumour-"
                         f"cell region(s) at the official {CAMELYON16_MPP} um/px; the slides are at "
                         f"{sizes} um/px (--pixel-size slide measures lesions at that)")


def pixel_size_text(metrics: dict) -> str:
    """How ``metrics`` (from :func:`run_evaluate`) converted microns to pixels, for one printed line."""
    sizes = "/".join(f"{v:g}" for v in metrics.get("pixel_size_um", []))
    if metrics.get("pixel_size") == "official":
        return f"pixel size official {sizes} um/px"
    return f"pixel size each slide's own{f' ({sizes} um/px)' if sizes else ''}"


def run_evaluate(config: EvaluateConfig, *, overwrite: bool = False) -> dict:
    """FROC and slide AUC for a folder of detections; writes metrics, plots and ``run.json``.

    Returns
    -------
    dict
        ``froc``, ``sensitivity_at`` (per FP rate), ``slide_auc`` (when both
        classes are present), counts, ``pixel_size`` (``official`` or
        ``slide``) and ``pixel_size_um`` (the distinct level-0 um/px used).
    """
    cfg = config.validate()
    hits, rows, labels, scores = _score_slides(cfg)
    total_fps, sens = froc_curve(hits)
    froc, at = froc_score(total_fps, sens, tuple(cfg.points))
    used = sorted({r["pixel_size_um"] for r in rows if r["pixel_size_um"] is not None})
    metrics = {"froc": froc, "sensitivity_at": {str(k): v for k, v in at.items()},
               "slides": len(hits), "tumour_slides": int(sum(labels)),
               "lesions": int(sum(h.n_tumours for h in hits)), "pixel_size": cfg.pixel_size,
               "pixel_size_um": [CAMELYON16_MPP] if cfg.pixel_size == "official" else used}
    if 0 < sum(labels) < len(labels):
        metrics["slide_auc"] = slide_auc(labels, scores)
    with RunDir(cfg.out, command="pathology evaluate", config=cfg,
                inputs=[cfg.detections, cfg.truth, cfg.reference], overwrite=overwrite) as run:
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
