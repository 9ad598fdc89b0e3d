"""The classical baseline the shipped DR model is compared with: lesion features + logistic regression.

What a screening program could build without deep learning: hand-made
lesion measurements of the contrast-normalised photograph (scikit-image
morphology and connected components) fed to two logistic regressions
(scikit-learn), one for the ICDR grade (multinomial) and one for referable
DR.  Features (:data:`FEATURES`), all inside the field of view of the green
channel, where red lesions and exudates have the most contrast:

* red lesions (microaneurysms, haemorrhages): dark-pixel area at three
  depths below the local background, counts of dark blobs, and the
  black-top-hat spot count (dark spots narrower than a vessel segment);
* bright lesions (hard exudates, cotton-wool spots): bright-pixel area at
  three heights, counts of bright blobs;
* colour: mean and spread of each channel.

The fitted model is stored as plain JSON (:func:`save_baseline`) -- the
standardisation, coefficients, the regularisation chosen on validation
images and the operating points -- and applied with NumPy
(:func:`baseline_probabilities`), so nothing is pickled.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deepsci.core.errors import InputError
from deepsci.core.io import read_json, write_json

from .evaluate import choose_operating_points, quadratic_kappa, weighted_auc
from .model import GRADES
from .preprocess import circle_mask, load_cached

#: Side of the preprocessed photograph the features are measured on: at the
#: network's 128 px a microaneurysm is under one pixel, so the baseline gets more.
FEATURE_SIZE = 256
_DEPTHS = (0.08, 0.16, 0.24)
_BLOB_DEPTHS = (0.12, 0.2)
FEATURES = ([f"dark_area_{t}" for t in _DEPTHS] + [f"bright_area_{t}" for t in _DEPTHS]
            + [f"dark_blobs_{t}" for t in _BLOB_DEPTHS] + [f"bright_blobs_{t}" for t in _BLOB_DEPTHS]
            + ["tophat_spots"] + [f"{s}_{c}" for s in ("mean", "std") for c in "rgb"])
#: Inverse regularisation strengths tried; the one best on validation images is kept.
C_GRID = (0.01, 0.1, 1.0, 10.0)
BASELINE_FILE = "baseline.json"
BASELINE_NAME = "lesion features + logistic regression (scikit-image, scikit-learn)"


def _blob_count(mask: np.ndarray, *, min_area: int = 2, max_area: int = 80) -> int:
    """Connected components of ``mask`` between ``min_area`` and ``max_area`` pixels."""
    from skimage import measure

    lab = measure.label(mask, connectivity=2)
    areas = np.bincount(lab.ravel())[1:]
    return int(((areas >= min_area) & (areas <= max_area)).sum())


def lesion_features(image: np.ndarray) -> np.ndarray:
    """The :data:`FEATURES` of one contrast-normalised photograph.

    Parameters
    ----------
    image : ndarray of uint8, shape (S, S, 3)
        A :func:`.preprocess.preprocess_image` output (local contrast on:
        background at 128).

    Returns
    -------
    ndarray of float64, shape (len(FEATURES),)
        Areas as fractions of the field of view, counts as ``log1p``.
    """
    from skimage import morphology

    size = image.shape[0]
    fov = circle_mask(size, shrink=0.9)
    rgb = image.astype(np.float64) / 255.0
    g = rgb[..., 1]
    dev = np.where(fov, g - 0.5, 0.0)
    n = fov.sum()
    feats = [float((dev < -t).sum() / n) for t in _DEPTHS]
    feats += [float((dev > t).sum() / n) for t in _DEPTHS]
    feats += [np.log1p(_blob_count(dev < -t)) for t in _BLOB_DEPTHS]
    feats += [np.log1p(_blob_count(dev > t)) for t in _BLOB_DEPTHS]
    # Dark spots narrower than a disc of radius S/85 (~3 px at 256): microaneurysms and dots.
    spots = morphology.black_tophat(np.where(fov, g, 0.5), morphology.disk(max(1, size // 85)))
    feats.append(np.log1p(_blob_count((spots > 0.12) & fov, min_area=1, max_area=40)))
    inside = rgb[fov]
    feats += inside.mean(0).tolist() + inside.std(0).tolist()
    return np.asarray(feats, np.float64)


def features_of(cache_paths: list[str]) -> np.ndarray:
    """:func:`lesion_features` of cached preprocessed PNGs, shape (N, len(FEATURES))."""
    rows = [lesion_features(load_cached([p])[0]) for p in cache_paths]
    return np.stack(rows) if rows else np.zeros((0, len(FEATURES)))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def baseline_probabilities(params: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """Apply a fitted baseline to feature rows.

    Parameters
    ----------
    params : dict
        :func:`fit_baseline`'s output (or ``baseline.json``).
    x : ndarray of float, shape (N, len(FEATURES))

    Returns
    -------
    dict
        ``grade`` (N, 5) probabilities (0 for grades absent in training) and
        ``referable`` (N,) probability.
    """
    z = (np.asarray(x, np.float64) - np.asarray(params["mean"])) / np.asarray(params["scale"])
    g = params["grade"]
    p = _softmax(z @ np.asarray(g["coef"]).T + np.asarray(g["intercept"]))
    grade = np.zeros((len(z), GRADES))
    grade[:, np.asarray(g["classes"], int)] = p
    r = params["referable"]
    logit = z @ np.asarray(r["coef"]).ravel() + float(r["intercept"])
    return {"grade": grade, "referable": 1.0 / (1.0 + np.exp(-logit))}


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(weighted_auc(y, s, np.ones((1, len(y))))[0])


def _fit_lr(z: np.ndarray, y: np.ndarray, c: float) -> dict:
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=c, max_iter=5000).fit(z, y)
    return {"coef": lr.coef_.tolist(), "intercept": lr.intercept_.tolist(),
            "classes": lr.classes_.astype(int).tolist()}


def fit_baseline(x_train: np.ndarray, grade_train: np.ndarray, ref_train: np.ndarray,
                 x_val: np.ndarray, grade_val: np.ndarray, ref_val: np.ndarray, *,
                 target_sensitivity: float = 0.975, target_specificity: float = 0.98) -> dict:
    """Fit both regressions on training rows; choose C and the operating points on validation rows.

    Parameters
    ----------
    x_train, x_val : ndarray of float, shape (N, len(FEATURES))
    grade_train, grade_val : array of int, shape (N,)
        ICDR grades 0-4.
    ref_train, ref_val : array of {0, 1}, shape (N,)

    Returns
    -------
    dict
        JSON-ready parameters (see :func:`baseline_probabilities`) with the
        chosen ``C`` per head, the validation AUC and kappa, and the two
        operating points.
    """
    x_train = np.asarray(x_train, np.float64)
    mean = x_train.mean(0)
    scale = np.where(x_train.std(0) > 0, x_train.std(0), 1.0)
    base = {"features": list(FEATURES), "mean": mean.tolist(), "scale": scale.tolist()}
    best_ref, best_grade = None, None
    for c in C_GRID:
        z = (x_train - mean) / scale
        ref = _fit_lr(z, np.asarray(ref_train, int), c)
        ref = {"coef": ref["coef"][0], "intercept": ref["intercept"][0], "C": c}
        grade = {**_fit_lr(z, np.asarray(grade_train, int), c), "C": c}
        p = baseline_probabilities({**base, "grade": grade, "referable": ref}, x_val)
        auc = _auc(np.asarray(ref_val, int), p["referable"])
        kappa = quadratic_kappa(np.asarray(grade_val, int), p["grade"].argmax(1))
        if best_ref is None or auc > best_ref[0]:
            best_ref = (auc, ref)
        if best_grade is None or kappa > best_grade[0]:
            best_grade = (kappa, grade)
    params = {**base, "referable": best_ref[1], "grade": best_grade[1]}
    p_val = baseline_probabilities(params, x_val)["referable"]
    points = choose_operating_points(np.asarray(ref_val, int), p_val,
                                     target_sensitivity=target_sensitivity,
                                     target_specificity=target_specificity)
    params["operating_points"] = {k: {"name": v.name, "threshold": v.threshold,
                                      "sensitivity": v.sensitivity, "specificity": v.specificity}
                                  for k, v in points.items()}
    params["validation"] = {"auc": best_ref[0], "kappa": best_grade[0], "n": int(len(x_val))}
    params["feature_size"] = FEATURE_SIZE
    params["name"] = BASELINE_NAME
    return params


def save_baseline(params: dict, path: str | os.PathLike) -> Path:
    """Write the fitted baseline as JSON (atomically)."""
    return write_json(Path(path), params)


def load_baseline(path: str | os.PathLike) -> dict:
    """Read ``baseline.json``; a file that is not one is an :class:`InputError`."""
    params = read_json(Path(path))
    missing = [k for k in ("features", "mean", "scale", "grade", "referable", "operating_points")
               if not isinstance(params, dict) or k not in params]
    if missing:
        raise InputError(f"expected a fitted baseline with {missing}, found none", path)
    if params["features"] != FEATURES:
        raise InputError("expected baseline features matching this deepsci version, found "
                         f"{len(params['features'])} others", path)
    return params
