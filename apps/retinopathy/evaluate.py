"""Screening metrics (referable-DR ROC AUC with bootstrap CI, operating points, kappa)
and the ``evaluate`` stage (:func:`run_evaluate`).

Operating points follow Gulshan et al. (JAMA 2016): two thresholds on the
referable-DR probability are chosen on the *validation* set -- a
high-sensitivity point (sensitivity >= 97.5 %) and a high-specificity point
(specificity >= 98 %) -- and are then applied unchanged to the test set.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepsci.core.config import check_ranges, option
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import write_json, write_text
from deepsci.core.runs import RunDir

from .invalid import removed_on_error, skipped_list
from .io import referable
from .predict import (
    GRADE_COLS,
    SPLITS,
    InferenceConfig,
    inference_table,
    open_model,
    peek_model,
    probabilities,
    warn_demo,
)


@dataclass
class OperatingPoint:
    """A threshold on the referable probability and what it achieved where chosen."""

    name: str
    threshold: float
    sensitivity: float
    specificity: float


def _check_binary(y_true: np.ndarray, what: str = "labels") -> np.ndarray:
    y = np.asarray(y_true).astype(np.int64).ravel()
    if y.size == 0 or not np.isin(y, (0, 1)).all():
        raise InputError(f"expected binary {what} (0/1), found values {np.unique(y)[:5]}")
    if len(np.unique(y)) < 2:
        raise InputError(f"expected both referable and non-referable cases in the {what}, "
                         f"found only class {y[0]}")
    return y


def sens_spec(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of ``scores >= threshold``."""
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(scores) >= threshold
    sens = float((pred & y).sum() / max(y.sum(), 1))
    spec = float((~pred & ~y).sum() / max((~y).sum(), 1))
    return sens, spec


def choose_operating_points(y_true: np.ndarray, scores: np.ndarray, *,
                            target_sensitivity: float = 0.975,
                            target_specificity: float = 0.98) -> dict[str, OperatingPoint]:
    """Pick the high-sensitivity and high-specificity thresholds on validation data.

    * high sensitivity: among thresholds whose sensitivity is at least
      ``target_sensitivity``, the one with the best specificity; ties go to
      the lowest threshold (most sensitive);
    * high specificity: among thresholds whose specificity is at least
      ``target_specificity``, the one with the best sensitivity; ties go to
      the highest threshold (most specific).

    When the validation set is nearly separable both targets can hold at
    once and the two rules may cross; then both thresholds meet both targets
    and they are swapped so that the high-sensitivity threshold is the lower
    one, as the names promise.

    Thresholds are placed at observed scores, so ``scores >= threshold``
    reproduces the reported sensitivity/specificity exactly on this set.

    Parameters
    ----------
    y_true : array of {0, 1}, shape (N,)
    scores : array of float, shape (N,)
        Referable-DR probability.

    Returns
    -------
    dict
        ``{"high_sensitivity": OperatingPoint, "high_specificity": OperatingPoint}``
    """
    y = _check_binary(y_true)
    s = np.asarray(scores, dtype=np.float64).ravel()
    cands = np.unique(s)[::-1]  # descending: sensitivity rises as threshold falls
    pos, neg = y == 1, y == 0
    # For threshold t = cands[i]: predicted positive = s >= t.
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted == 1)
    fp = np.cumsum(y_sorted == 0)
    last = np.searchsorted(-s_sorted, -cands, side="right") - 1
    sens = tp[last] / pos.sum()
    spec = 1 - fp[last] / neg.sum()
    # Among thresholds meeting the sensitivity target, the best specificity;
    # ties (a validation set separable over a range) go to the LOWEST such
    # threshold, i.e. the most sensitive -- the point of this operating point.
    ok = sens >= target_sensitivity  # always true at the lowest threshold
    best = spec[ok].max()
    i_sens = int(np.nonzero(ok & (spec == best))[0][-1])
    ok_spec = spec >= target_specificity
    if ok_spec.any():
        # Mirror image: best sensitivity, ties to the HIGHEST threshold.
        best = sens[ok_spec].max()
        i = int(np.nonzero(ok_spec & (sens == best))[0][0])
        high_spec = OperatingPoint("high_specificity", float(cands[i]), float(sens[i]),
                                   float(spec[i]))
    else:
        # Even the top score is a negative: only "refer nobody" reaches the target.
        high_spec = OperatingPoint("high_specificity", float(np.nextafter(s.max(), np.inf)),
                                   0.0, 1.0)
    high_sens = OperatingPoint("high_sensitivity", float(cands[i_sens]), float(sens[i_sens]),
                               float(spec[i_sens]))
    if high_sens.threshold > high_spec.threshold:
        # Both targets are met on the whole interval between the two thresholds
        # (validation nearly separable): give each name the end that serves it,
        # the lower threshold to high sensitivity, the higher to high specificity.
        high_sens, high_spec = (
            OperatingPoint("high_sensitivity", high_spec.threshold, high_spec.sensitivity,
                           high_spec.specificity),
            OperatingPoint("high_specificity", high_sens.threshold, high_sens.sensitivity,
                           high_sens.specificity))
    return {"high_sensitivity": high_sens, "high_specificity": high_spec}


def weighted_auc(y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Exact ROC AUC (ties count one half) under per-image weights, many weightings at once.

    An integer weight is the same as repeating the image that many times, so a
    bootstrap resample is a row of counts.

    Parameters
    ----------
    y_true : array of {0, 1}, shape (N,)
    scores : array of float, shape (N,)
    weights : array of float, shape (B, N) or (N,)

    Returns
    -------
    ndarray of float, shape (B,) (or a scalar array for 1-D weights)
    """
    y = np.asarray(y_true).astype(bool).ravel()
    w = np.atleast_2d(np.asarray(weights, np.float64))
    _, group = np.unique(np.asarray(scores, np.float64).ravel(), return_inverse=True)
    n_groups = group.max() + 1
    # Weighted positives and negatives per distinct score, ascending.
    pos = np.zeros((len(w), n_groups))
    neg = np.zeros((len(w), n_groups))
    np.add.at(pos.T, group[y], w[:, y].T)
    np.add.at(neg.T, group[~y], w[:, ~y].T)
    below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (below + 0.5 * neg)).sum(1)
    auc = wins / (pos.sum(1) * neg.sum(1))
    return auc if np.ndim(weights) == 2 else auc[0]


def bootstrap_auc(y_true: np.ndarray, scores: np.ndarray, *, patients=None,
                  n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
                  ) -> tuple[float, float, float]:
    """ROC AUC with a percentile bootstrap confidence interval over patients.

    Both eyes of a patient are correlated, so the resampling unit is the
    patient: each resample draws ``P`` patients (``np.unique`` order) with
    replacement by ``rng.integers(0, P, P)`` and takes all their images; a
    resample with one class only is redrawn. ``patients=None`` resamples
    images (every image its own patient), which gives too narrow an interval
    when eyes are correlated.

    Parameters
    ----------
    y_true : array of {0, 1}, shape (N,)
    scores : array of float, shape (N,)
    patients : array of str, shape (N,), optional
        Patient id of each image.

    Returns
    -------
    auc, low, high : float
    """
    y = _check_binary(y_true)
    s = np.asarray(scores, dtype=np.float64).ravel()
    from sklearn.metrics import roc_auc_score  # sklearn costs ~1 s at CLI start
    auc = float(roc_auc_score(y, s))
    if patients is None:
        patients = np.arange(len(y))
    _, unit = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    n_units = unit.max() + 1
    rng = np.random.default_rng(seed)
    counts = []
    while len(counts) < n_boot:
        w = np.bincount(rng.integers(0, n_units, n_units), minlength=n_units)[unit]
        if w[y == 1].sum() == 0 or w[y == 0].sum() == 0:
            continue
        counts.append(w)
    boots = np.concatenate([weighted_auc(y, s, np.asarray(counts[i:i + 256]))
                            for i in range(0, n_boot, 256)])
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return auc, float(lo), float(hi)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 5) -> np.ndarray:
    """Confusion matrix, rows = true grade, columns = predicted, shape (K, K)."""
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def quadratic_kappa(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 5) -> float:
    """Quadratic weighted Cohen's kappa on the full ICDR scale 0 .. ``n_classes - 1``.

    The weights are ``(i - j)**2 / (K - 1)**2`` over all K grades whether or
    not they occur, as ``sklearn.metrics.cohen_kappa_score(weights="quadratic",
    labels=range(5))`` computes it (the Kaggle EyePACS convention); weighting
    only the grades present would change the value when a grade is absent.
    NaN when the expected disagreement is zero (one grade only on both sides).
    """
    cm = confusion(y_true, y_pred, n_classes).astype(np.float64)
    if cm.sum() == 0:
        return float("nan")
    w = (np.arange(n_classes)[:, None] - np.arange(n_classes)[None, :]) ** 2 / 1.0
    expected = np.outer(cm.sum(1), cm.sum(0)) / cm.sum()
    denom = (w * expected).sum()
    return float(1 - (w * cm).sum() / denom) if denom else float("nan")


#: How each number of :func:`screening_report` is computed, written into metrics.json.
CONVENTIONS = {
    "auc": "exact ROC AUC, ties count one half (sklearn roc_auc_score)",
    "auc_ci": "95 % percentile bootstrap resampling patients (both eyes together)",
    "kappa": "quadratic weighted kappa on the full ICDR scale 0-4 (sklearn "
             "cohen_kappa_score weights='quadratic', labels=range(5))",
    "operating_points": "thresholds chosen on validation patients, applied unchanged",
}


def screening_report(y_ref: np.ndarray, p_ref: np.ndarray, grade: np.ndarray,
                     p_grade: np.ndarray, points: dict[str, OperatingPoint], *,
                     patients=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """All test-set metrics for referable DR and the 5-class grade.

    Parameters
    ----------
    y_ref : array of {0, 1}, shape (N,)
    p_ref : array of float, shape (N,)
    grade : array of int, shape (N,)
    p_grade : array of float, shape (N, 5)
    points : dict of OperatingPoint
        Chosen on validation data; applied unchanged here.
    patients : array of str, shape (N,), optional
        Patient ids: the bootstrap resamples patients (images when None).

    Returns
    -------
    dict
        ``auc``, ``auc_ci`` (low, high), per operating point its threshold,
        sensitivity and specificity here, ``kappa``, ``accuracy``,
        ``confusion`` (5 x 5 list), ``n``, ``n_referable``.
    """
    auc, lo, hi = bootstrap_auc(y_ref, p_ref, patients=patients, n_boot=n_boot, seed=seed)
    pred_grade = np.asarray(p_grade).argmax(axis=1)
    n_patients = len(np.unique(np.asarray(patients).astype(str))) if patients is not None else None
    out = {"n": int(len(y_ref)), "n_referable": int(np.sum(y_ref)), "n_patients": n_patients,
           "auc": auc, "auc_ci_low": lo, "auc_ci_high": hi,
           "conventions": {**CONVENTIONS, **({} if patients is not None else {
               "auc_ci": "95 % percentile bootstrap resampling images (no patient ids)"})}}
    for name, op in points.items():
        sens, spec = sens_spec(y_ref, p_ref, op.threshold)
        out[name] = {"threshold": op.threshold, "sensitivity": sens, "specificity": spec,
                     "val_sensitivity": op.sensitivity, "val_specificity": op.specificity}
    out["kappa"] = quadratic_kappa(grade, pred_grade)
    out["accuracy"] = float(np.mean(pred_grade == np.asarray(grade)))
    out["confusion"] = confusion(grade, pred_grade).tolist()
    return out


def plot_roc(y_ref: np.ndarray, p_ref: np.ndarray, points: dict[str, OperatingPoint],
             path: str | Path, *, title: str = "Referable DR") -> Path:
    """ROC curve with the operating points marked, written as PNG atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    from deepsci.core.io import save_figure
    fpr, tpr, _ = roc_curve(y_ref, p_ref)
    auc = roc_auc_score(y_ref, p_ref)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot(100 * fpr, 100 * tpr, lw=2, label=f"AUC {auc:.3f}")
    for name, op, mk in zip(points, points.values(), ("o", "s"), strict=False):
        sens, spec = sens_spec(y_ref, p_ref, op.threshold)
        ax.plot(100 * (1 - spec), 100 * sens, mk, ms=8,
                label=f"{name.replace('_', ' ')}: {100 * sens:.1f}% / {100 * spec:.1f}%")
    ax.plot([0, 100], [0, 100], ":", color="grey")
    ax.set_xlabel("1 - specificity (%)")
    ax.set_ylabel("sensitivity (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    return save_figure(fig, path)


@dataclass
class EvaluateConfig(InferenceConfig):
    """Settings of ``retinopathy evaluate`` (:func:`run_evaluate`).

    Attributes
    ----------
    split : str
        As for predict, but ``test`` by default: only patients held out of
        training and validation (and every image of a label file other than
        the training CSV) are scored.
    n_boot : int
        Bootstrap resamples (of patients) for the AUC interval.
    """

    split: str = option("test", "test|val|train|all: rows of the model's splits.csv (test: "
                                "also every image not in it).", choices=SPLITS)
    n_boot: int = option(1000, "Bootstrap resamples (patients) for the AUC CI.", min=1)

    def validate(self) -> EvaluateConfig:
        """Raise :class:`ConfigError` for impossible values; return self."""
        check_ranges(self)
        if self.data.labels is None:
            raise ConfigError("expected --labels for evaluate, found none")
        return self


def run_evaluate(config: EvaluateConfig, *, overwrite: bool = False) -> dict:
    """Score the ensemble on a labelled set; write ``metrics.json``, ``roc.png``,
    ``confusion.csv`` and ``predictions.csv``.

    Operating points come unchanged from the validation set (``ensemble.json``).
    Ungradable or unlabelled images are counted and excluded from the metrics.
    """
    config.validate()
    config, card, info = peek_model(config)
    with removed_on_error(config.out, "retinopathy evaluate"), RunDir(
            config.out, command="retinopathy evaluate", config=config, inputs=config.inputs(),
            overwrite=overwrite) as run:
        df = inference_table(config, card.preprocessing)
        _, ensemble, info = open_model(config)
        skipped = skipped_list(df)
        warn_demo(ensemble.card, df.loc[df["skipped"] == "", "path"].tolist())
        probs = probabilities(ensemble, df)
        keep = ((df["gradable"].astype(int) == 1) & (df["grade"] >= 0)).to_numpy()
        if keep.sum() == 0:
            raise InputError("expected gradable labelled images, found none", config.data.labels)
        y_ref = referable(df["grade"].to_numpy(), df["dme"].to_numpy())[keep]
        points = {k: OperatingPoint(**v) for k, v in info["operating_points"].items()}
        p_ref = probs["p_referable"].to_numpy(float)[keep]
        metrics = screening_report(y_ref, p_ref, df["grade"].to_numpy()[keep],
                                   probs[GRADE_COLS].to_numpy(float)[keep], points,
                                   patients=df["patient"].to_numpy()[keep], n_boot=config.n_boot)
        metrics["n_ungradable_excluded"] = int((~keep).sum()) - len(skipped)
        metrics["skipped"] = skipped
        # Every number above is on these images: say which split they come from.
        metrics["split"] = config.split
        metrics["split_images"] = {str(k): int(v) for k, v in
                                   df.loc[keep, "split"].value_counts().sort_index().items()}
        write_json(run.file("metrics.json"), metrics)
        cm = pd.DataFrame(metrics["confusion"], index=[f"true_{k}" for k in range(5)],
                          columns=[f"pred_{k}" for k in range(5)])
        write_text(run.file("confusion.csv"), cm.to_csv())
        plot_roc(y_ref, p_ref, points, run.file("roc.png"))
        res = pd.concat([df[["image", "patient", "split", "grade", "dme"]], probs], axis=1)
        res["referable_true"] = referable(df["grade"].to_numpy(), df["dme"].to_numpy())
        res["gradable"] = df["gradable"]
        # 9 significant digits round-trip float32, so metrics recompute exactly from the file.
        write_text(run.file("predictions.csv"), res.to_csv(index=False, float_format="%.9g"))
        run.record(**{k: metrics[k] for k in ("split", "split_images", "n", "n_patients",
                                               "n_referable", "auc", "auc_ci_low",
                                               "auc_ci_high", "kappa", "accuracy",
                                               "skipped")})
    return metrics
