"""Inference with a trained ensemble: load it, average its probabilities, ``predict``.

* :func:`load_ensemble` -- the members of a model directory (``safe_mode=True``).
* :func:`predict_arrays` / :func:`predict_images` -- ensemble-mean softmax/sigmoid
  probabilities of preprocessed images.
* :func:`inference_table` -- the images of a run, preprocessed with the models'
  own settings (shared by predict, evaluate and explain).
* :func:`predict_dataset` -- per-image grade probabilities, referable
  probability and decision at an operating point, gradability flag (CSV).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import read_json, save_config, write_run_info, write_text

from .io import DatasetSpec, read_dataset
from .preprocess import PreprocessConfig, load_cached, preprocess_table, to_input

GRADE_COLS = [f"p_grade{k}" for k in range(5)]


def load_ensemble(model_dir: str | Path, *, members: list[str] | None = None):
    """Load every member of a trained ensemble (``safe_mode=True``).

    Returns
    -------
    models : list of keras.Model
    info : dict
        ``ensemble.json`` (empty while training has not finished).
    """
    from deepsci.core.models.serialization import load_model

    model_dir = Path(model_dir)
    info = {}
    if members is None:
        if not (model_dir / "ensemble.json").is_file():
            raise InputError("expected a model directory written by `retinopathy train` "
                             "(ensemble.json), found none", model_dir)
        info = read_json(model_dir / "ensemble.json")
        members = info["members"]
    models = []
    for m in members:
        model, _ = load_model(model_dir / m)
        models.append(model)
    return models, info


def predict_arrays(models: list, x: np.ndarray, *, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Average the members' probabilities.

    Parameters
    ----------
    models : list of keras.Model
    x : ndarray of float32, shape (N, S, S, 3)

    Returns
    -------
    dict
        ``grade`` (N, 5) softmax, ``referable`` (N,) and, when the models have
        a DME head, ``dme`` (N,) sigmoid probabilities.
    """
    import tensorflow as tf

    sums: dict[str, np.ndarray] = {}
    for model in models:
        for start in range(0, len(x), batch_size):
            out = model(x[start:start + batch_size], training=False)
            probs = {"grade": tf.nn.softmax(out["grade"]).numpy(),
                     "referable": tf.sigmoid(out["referable"]).numpy()[:, 0]}
            if "dme" in out:
                probs["dme"] = tf.sigmoid(out["dme"]).numpy()[:, 0]
            for k, v in probs.items():
                sums.setdefault(k, np.zeros((len(x),) + v.shape[1:], np.float64))
                sums[k][start:start + len(v)] += v
    return {k: v / len(models) for k, v in sums.items()}


def predict_images(models: list, cache_paths: list[str], *, batch_size: int = 32) -> dict[str, np.ndarray]:
    """:func:`predict_arrays` over cached preprocessed PNGs, loaded chunk by chunk."""
    chunks: dict[str, list] = {}
    for start in range(0, len(cache_paths), 256):
        x = to_input(load_cached(cache_paths[start:start + 256]))
        for k, v in predict_arrays(models, x, batch_size=batch_size).items():
            chunks.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in chunks.items()}


@dataclass
class InferenceConfig:
    """Settings of ``predict``/``evaluate``/``explain``.

    Parameters
    ----------
    model_dir : Path
        A directory written by ``train``.
    data : DatasetSpec or None
        Labelled images (evaluate) -- or, for predict/explain, optionally a
        labelled set; otherwise ``images`` lists files.
    images : list of Path
        Unlabelled image files (predict/explain).
    split : str
        With ``data`` from training: keep only this split of ``splits.csv``
        (``test``, ``val``, ``train`` or ``all``).
    operating_point : str
        ``high_sensitivity``, ``high_specificity`` or a probability threshold.
    cache_dir : Path or None
    n_boot : int
        Bootstrap resamples for the AUC interval.
    """

    model_dir: Path
    data: DatasetSpec | None = None
    images: list[Path] = dataclasses.field(default_factory=list)
    split: str = "all"
    operating_point: str = "high_sensitivity"
    cache_dir: Path | None = None
    n_boot: int = 1000
    workers: int = 2


def threshold_for(info: dict, spec: str) -> tuple[str, float]:
    """The named operating point of ``ensemble.json`` or a probability given as text.

    Returns
    -------
    name, threshold : str, float
    """
    points = info.get("operating_points", {})
    if spec in points:
        return spec, float(points[spec]["threshold"])
    try:
        t = float(spec)
    except ValueError:
        raise ConfigError(f"expected operating point {sorted(points)} or a probability, "
                          f"found {spec!r}") from None
    if not 0 <= t <= 1:
        raise ConfigError(f"expected a threshold in [0, 1], found {t}")
    return "threshold", t


def inference_table(config: InferenceConfig, info: dict) -> pd.DataFrame:
    """The images to run on, preprocessed with the models' own settings.

    Returns
    -------
    pandas.DataFrame
        :func:`.io.read_dataset` columns (or ``image``, ``path`` for plain
        files) plus :func:`.preprocess.preprocess_table`'s.
    """
    if config.data is not None:
        df = read_dataset(config.data)
        if config.split != "all":
            splits = config.model_dir / "splits.csv"
            if not splits.is_file():
                raise InputError("expected splits.csv written by train, found none", splits)
            s = pd.read_csv(splits, dtype={"image": str})
            df = df.merge(s[["image", "split"]], on="image", how="left")
            df = df[df["split"] == config.split].reset_index(drop=True)
            if len(df) == 0:
                raise InputError(f"expected images of split {config.split!r}, found none", splits)
    else:
        if not config.images:
            raise ConfigError("expected image files or --labels, found neither")
        for p in config.images:
            if not Path(p).is_file():
                raise InputError("expected an image file, found nothing", p)
        df = pd.DataFrame({"image": [Path(p).stem for p in config.images],
                           "path": [str(Path(p).absolute()) for p in config.images],
                           "grade": -1, "dme": -1})
    pp = PreprocessConfig(**info["preprocessing"])
    cache = Path(config.cache_dir) if config.cache_dir else config.model_dir / "cache"
    return preprocess_table(df, pp, cache, workers=config.workers)


def probabilities(models, df: pd.DataFrame) -> pd.DataFrame:
    """Ensemble probabilities per row of an :func:`inference_table`; NaN where no image.

    Returns
    -------
    pandas.DataFrame
        ``p_grade0`` .. ``p_grade4``, ``p_referable`` (and ``p_dme``), index of ``df``.
    """
    ok = (df["cache"] != "").to_numpy()
    out = pd.DataFrame(index=df.index, columns=GRADE_COLS + ["p_referable"], dtype=float)
    if ok.any():
        probs = predict_images(models, df.loc[ok, "cache"].tolist())
        out.loc[ok, GRADE_COLS] = probs["grade"]
        out.loc[ok, "p_referable"] = probs["referable"]
        if "dme" in probs:
            out.loc[ok, "p_dme"] = probs["dme"]
    return out


def predict_dataset(config: InferenceConfig, out_dir: str | Path) -> pd.DataFrame:
    """Write ``predictions.csv``: per image the grade probabilities, predicted grade,
    referable probability, referable decision at the operating point and
    gradability.  Ungradable images are flagged and get no grade or decision.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models, info = load_ensemble(config.model_dir)
    name, thr = threshold_for(info, config.operating_point)
    df = inference_table(config, info)
    probs = probabilities(models, df)
    res = pd.concat([df[["image"]], probs], axis=1)
    gradable = df["gradable"].astype(int) == 1
    res["grade"] = np.where(gradable, probs[GRADE_COLS].fillna(0).to_numpy().argmax(1), -1)
    res["referable"] = np.where(gradable, (probs["p_referable"].fillna(0) >= thr).astype(int), -1)
    res["gradable"] = gradable.astype(int)
    res["quality"] = df["reasons"]
    res["operating_point"] = name
    res["threshold"] = thr
    # Empty cells, not numbers, where no grade was given.
    for col in ("grade", "referable"):
        res[col] = res[col].astype("Int64").mask(~gradable)
    write_text(out / "predictions.csv", res.to_csv(index=False, float_format="%.5f"))
    save_config(config, out / "config.json")
    write_run_info(out, command="retinopathy predict", config=config)
    return res


