"""Inference with a trained ensemble: load it, average its probabilities, ``predict``.

* :func:`load_members` / :func:`load_trained` -- the members of a model
  directory through :mod:`deepsci.core.ensemble` (cards checked,
  ``safe_mode=True``), each behind a fixed-signature core predictor that
  turns logits into probabilities in its graph.
* :func:`predict_arrays` / :func:`predict_images` -- ensemble-mean
  probabilities of preprocessed images.
* :func:`inference_table` -- the images of a run, preprocessed with the models'
  own settings (shared by predict, evaluate and explain).
* :func:`run_predict` -- per-image grade probabilities, referable probability
  and decision at an operating point and at each of the model's, gradability
  flag (``predictions.csv``), and ``report.html`` (:func:`.io.write_report_html`).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deepsci.core.config import check_ranges, option
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import read_json, write_text
from deepsci.core.models.registry import demo_warning, resolve_model
from deepsci.core.runs import RunDir

from .invalid import refuse_invalid, removed_on_error, skipped_list
from .io import DatasetSpec, is_synthetic, read_dataset, write_report_html
from .model import APP, GRADE_NAMES, TASK, to_probabilities
from .preprocess import (
    PreprocessConfig,
    load_cached,
    preprocess_table,
    to_input,
)

GRADE_COLS = [f"p_grade{k}" for k in range(5)]
SPLITS = ("all", "train", "val", "test")


def load_members(spec, *, batch_size: int = 32):
    """Load ensemble members (a folder, ``"a.keras,b.keras"`` or a list of paths).

    Another app's model, or one without its card, is refused in one line.

    Returns
    -------
    deepsci.core.ensemble.Ensemble
        Its predictors return ``grade`` (N, 5), ``referable`` (N,) and
        ``dme`` (N,) probabilities.
    """
    from deepsci.core.ensemble import load_ensemble

    return load_ensemble(spec, expect=APP, task=TASK, batch_size=batch_size,
                         postprocess=to_probabilities)


def default_cache(model: str | Path) -> Path:
    """Where preprocessed photographs are cached when ``--cache`` is not given.

    A model trained here keeps its cache (``<model home>/cache``, made by ``train``), so
    evaluating on its own photographs reuses it. Any other model (a shipped one lives in the
    installed package, which must stay as installed) uses the user's cache,
    ``$DEEPSCI_CACHE_DIR`` or ``~/.cache/deepsci``, under ``retinopathy/``: entries are named
    by a hash of the photograph and the preprocessing, so sharing it is safe.
    """
    own = model_home(model) / "cache"
    if own.is_dir():
        return own
    root = os.environ.get("DEEPSCI_CACHE_DIR") or Path.home() / ".cache" / "deepsci"
    return Path(root) / "retinopathy"


def _file_points(card, model: Path) -> dict:
    """The checked operating points of one model file: its card's ``extra.ensemble``, else
    the ``ensemble.json`` of its :func:`model_home`."""
    info = card.extra.get("ensemble")
    home = model_home(model)
    if not isinstance(info, dict) and (home / "ensemble.json").is_file():
        info = read_json(home / "ensemble.json")
    if not isinstance(info, dict) or "operating_points" not in info:
        raise InputError("expected operating points in the model's card (extra.ensemble) or "
                         "an ensemble.json above it, found neither", model)
    return _checked_points(info, model)


def model_home(model: str | Path) -> Path:
    """The folder holding a model's ``ensemble.json``, ``splits.csv`` and image cache.

    A folder written by ``train`` or ``distill`` is its own home. A single
    model file (``member_0/model.keras``, or a ``.tflite`` written by
    ``export``) lives in the training folder its card names
    (``extra.model_dir``) when that still exists, else in the nearest folder
    above it holding ``ensemble.json``, else beside it.
    """
    model = Path(model)
    if model.is_dir():
        return model
    recorded = _card_extra(model).get("model_dir")
    if recorded and (Path(recorded) / "ensemble.json").is_file():
        return Path(recorded)
    for folder in (model.parent, model.parent.parent):
        if (folder / "ensemble.json").is_file():
            return folder
    return model.parent


def _card_extra(model: Path) -> dict:
    from deepsci.core.models.card import card_path

    meta = card_path(model)
    return read_json(meta).get("extra", {}) if meta.is_file() else {}


def load_trained(model_dir: str | Path, *, batch_size: int = 32):
    """The ensemble of a directory written by ``train`` (or one model file) and its ``ensemble.json``.

    A model file (``.keras`` or a ``.tflite`` written by ``export``) takes its
    operating points from its card (``extra.ensemble``, recorded at export) or
    else from the ``ensemble.json`` of :func:`model_home`.

    Returns
    -------
    ensemble : deepsci.core.ensemble.Ensemble
    info : dict
        ``ensemble.json``: members, operating points, validation metrics.
    """
    model_dir = Path(model_dir)
    if model_dir.is_file():
        ensemble = load_members([model_dir], batch_size=batch_size)
        return ensemble, _file_points(ensemble.card, model_dir)
    if not (model_dir / "ensemble.json").is_file():
        raise InputError("expected a model directory written by `retinopathy train` "
                         "(ensemble.json), found none", model_dir)
    info = _checked_points(read_json(model_dir / "ensemble.json"), model_dir / "ensemble.json")
    return load_members(model_dir, batch_size=batch_size), info


def _checked_points(info, path: Path) -> dict:
    """``info`` when it holds operating points with thresholds in [0, 1]; InputError otherwise."""
    points = info.get("operating_points") if isinstance(info, dict) else None
    ok = isinstance(points, dict) and points and all(
        isinstance(p, dict) and isinstance(p.get("threshold"), (int, float))
        and 0 <= p["threshold"] <= 1 for p in points.values())
    if not ok:
        raise InputError("expected operating points with thresholds in [0, 1] "
                         f"(operating_points), found {str(points)[:80]!r}", path)
    return info


def predict_arrays(ensemble, x: np.ndarray) -> dict[str, np.ndarray]:
    """The members' mean probabilities.

    Parameters
    ----------
    ensemble : deepsci.core.ensemble.Ensemble
        From :func:`load_members`.
    x : ndarray of float32, shape (N, S, S, 3)

    Returns
    -------
    dict
        ``grade`` (N, 5) softmax, ``referable`` (N,) and, when the models have
        a DME head, ``dme`` (N,) sigmoid probabilities.
    """
    return ensemble.predict(x)


def predict_images(ensemble, cache_paths: list[str]) -> dict[str, np.ndarray]:
    """:func:`predict_arrays` over cached preprocessed PNGs, loaded chunk by chunk."""
    chunks: dict[str, list] = {}
    for start in range(0, len(cache_paths), 256):
        x = to_input(load_cached(cache_paths[start:start + 256]))
        for k, v in predict_arrays(ensemble, x).items():
            chunks.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in chunks.items()}



@dataclass
class InferenceConfig:
    """What ``predict``, ``evaluate`` and ``explain`` run on.

    Attributes
    ----------
    out : Path
        Output folder.
    model : Path or None
        A directory written by ``train`` / ``distill``, one model file
        (``.keras``, or ``.tflite`` from ``export``) or a shipped model's name; ``None``
        takes the shipped default (:func:`resolve`).
    files : list of Path
        Unlabelled fundus photographs (predict, explain).
    data : DatasetSpec
        A labelled set (evaluate; optional for predict and explain).
    split : str
        With the training CSV as ``data``: keep only this split of the
        model's ``splits.csv`` (``test``, ``val``, ``train`` or ``all``).
    cache_dir : Path or None
        Preprocessed-image cache (default ``<model>/cache``).
    workers : int
        Preprocessing threads.
    batch_size : int
        Images per inference batch.
    skip_invalid : bool
        Skip unreadable, corrupt or oversized photographs (listed in the
        outputs and ``run.json``) instead of stopping at the first one; still
        an error when none is readable.
    """

    out: Path = field(metadata={"help": "Output folder."})
    model: Path | None = option(None, "Model directory written by train, a .keras/.tflite "
                                      "file, or a shipped name (default: the shipped default).")
    files: list[Path] = option(help="Fundus photographs.", factory=list)
    data: DatasetSpec = field(default_factory=DatasetSpec)
    split: str = option("all", "test|val|train|all: rows of the model's splits.csv (only when "
                               "--labels is the training CSV).", choices=SPLITS)
    cache_dir: Path | None = option(None, "Preprocessed-image cache folder.", cli="cache")
    workers: int = option(2, "Preprocessing threads.", min=1)
    batch_size: int = option(32, "Images per inference batch.", min=1)
    skip_invalid: bool = option(False, "Skip unreadable photographs (listed in the outputs "
                                       "and run.json) instead of stopping.")

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.model = None if self.model is None else Path(self.model)
        self.files = [Path(f) for f in self.files]
        self.cache_dir = None if self.cache_dir is None else Path(self.cache_dir)

    def validate(self):
        """Raise :class:`ConfigError` for impossible values; return self."""
        check_ranges(self)
        return self

    def inputs(self) -> list[Path]:
        """The user's files this run reads (recorded in run.json)."""
        return [*([self.model] if self.model is not None else []), *self.files,
                *([self.data.labels] if self.data.labels else [])]


def resolve(config: InferenceConfig) -> InferenceConfig:
    """``config`` with ``model`` made a path: the shipped default when ``None``, a shipped
    model's folder for its name.  Says which shipped model on stderr (one line); whether
    it is a demo model is said by :func:`warn_demo` once the inputs are known.
    """
    lines: list[str] = []
    path = resolve_model(None if config.model is None else str(config.model), app=APP,
                         task=TASK, say=lines.append)
    for line in lines:
        if not line.startswith("warning:"):
            print(line, file=sys.stderr)
    return dataclasses.replace(config, model=Path(path))


def peek_model(config: InferenceConfig):
    """Resolve ``config.model`` and read its cards and operating points, without TensorFlow.

    Every input of a run (photographs, labels) is then read before the
    networks are loaded, so that a user's mistake is reported at once.

    Returns
    -------
    config : InferenceConfig
        With ``model`` a path.
    card : deepsci.core.models.card.ModelCard
        The first member's card (checked: this app's, all members agree).
    info : dict
        ``ensemble.json`` (or the card's ``extra.ensemble``).
    """
    from deepsci.core.ensemble import _check_agree, model_paths
    from deepsci.core.models.card import read_card

    config = resolve(config)
    model = Path(config.model)
    if not model.is_file() and not (model / "ensemble.json").is_file():
        raise InputError("expected a model directory written by `retinopathy train` "
                         "(ensemble.json), found none", model)
    paths = model_paths([model] if model.is_file() else model)
    cards = [read_card(p, expect=APP, task=TASK) for p in paths]
    _check_agree(cards, paths)
    if model.is_file():
        return config, cards[0], _file_points(cards[0], model)
    return config, cards[0], _checked_points(read_json(model / "ensemble.json"),
                                             model / "ensemble.json")


def open_model(config: InferenceConfig):
    """Resolve ``config.model`` and load its ensemble.

    Returns
    -------
    config : InferenceConfig
        With ``model`` a path (recorded so in run.json).
    ensemble : deepsci.core.ensemble.Ensemble
    info : dict
        ``ensemble.json``.
    """
    config = resolve(config)
    ensemble, info = load_trained(config.model, batch_size=config.batch_size)
    return config, ensemble, info


def warn_demo(card, paths) -> bool:
    """Print the demo-model warning when a synthetic-only model meets a photograph that
    ``retinopathy synth`` did not write (:func:`.io.is_synthetic`); return whether it did."""
    warning = demo_warning(card)
    if warning is None:
        return False
    real = [p for p in paths if not is_synthetic(p)]
    if real:
        print(f"{warning} ({len(real)} of {len(paths)} photographs are not deepsci "
              f"synthetic, e.g. {Path(real[0]).name})", file=sys.stderr)
    return bool(real)


@dataclass
class PredictConfig(InferenceConfig):
    """Settings of ``retinopathy predict`` (:func:`run_predict`).

    Attributes
    ----------
    operating_point : str
        ``high_sensitivity``, ``high_specificity`` or a probability threshold.
    html : bool
        Also write ``report.html`` (one self-contained page: thumbnails, grades,
        the decision at both operating points).
    """

    operating_point: str = option("high_sensitivity",
                                "high_sensitivity | high_specificity | a threshold.")
    html: bool = option(True, "Write report.html: each photograph, its grades and both "
                              "operating points' decisions (opens offline in any browser).")


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


def referable_decisions(p_referable, gradable, points: dict) -> pd.DataFrame:
    """The referable decision (``p >= threshold``) at each of ``ensemble.json``'s operating points.

    Parameters
    ----------
    p_referable : pandas.Series of float
    gradable : pandas.Series of bool, same index
    points : dict
        Name -> ``{"threshold": ...}``.

    Returns
    -------
    pandas.DataFrame
        ``referable_<name>`` (Int64 1/0; empty where not gradable), index of ``p_referable``.
    """
    p = p_referable.astype(float).fillna(0.0)
    ok = gradable.astype(bool)
    return pd.DataFrame({f"referable_{k}": (p >= float(v["threshold"])).astype("Int64").mask(~ok)
                         for k, v in points.items()}, index=p_referable.index)


def report_notes(card, paths) -> list[str]:
    """The lines ``report.html`` shows above its table: the demo-model warning when it applies
    (:func:`warn_demo` also prints it)."""
    return [demo_warning(card)] if warn_demo(card, paths) else []


def with_split(df: pd.DataFrame, model_dir: Path, split: str) -> pd.DataFrame:
    """Label each image with its split in the model's ``splits.csv`` and keep ``split``.

    Images are matched by their file (not their id: another label file may
    reuse ids); an image the model never saw is ``external`` and counts as
    held out, so ``test`` keeps it.  ``all`` keeps every image.
    """
    splits = Path(model_dir) / "splits.csv"
    if split == "all" and not splits.is_file():
        return df.assign(split="unknown")
    if split == "test" and not splits.is_file() and (Path(model_dir) / "ensemble.json").is_file():
        # A shipped model keeps no splits.csv: its training photographs were
        # generated at build time and are not the user's, so every image is unseen.
        return df.assign(split="external")
    if not splits.is_file():
        raise InputError("expected splits.csv written by train, found none", splits)
    try:
        s = pd.read_csv(splits, dtype=str, keep_default_na=False)
        where = dict(zip(s["path"], s["split"], strict=True))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError,
            KeyError):
        raise InputError("expected splits.csv as written by train (path, split columns), "
                         "found a file that does not parse", splits) from None
    df = df.assign(split=[where.get(p, "external") for p in df["path"]])
    if split != "all":
        held_out = ("test", "external") if split == "test" else (split,)
        df = df[df["split"].isin(held_out)].reset_index(drop=True)
    if len(df) == 0:
        raise InputError(f"expected images of split {split!r}, found none", splits)
    return df


def inference_table(config: InferenceConfig, preprocessing: dict) -> pd.DataFrame:
    """The images to run on, preprocessed with the models' own settings.

    Parameters
    ----------
    config : InferenceConfig
    preprocessing : dict
        The models' :class:`.preprocess.PreprocessConfig` (from their card).

    Returns
    -------
    pandas.DataFrame
        :func:`.io.read_dataset` columns (or ``image``, ``path`` for plain
        files) plus :func:`.preprocess.preprocess_table`'s and ``skipped``
        (:func:`.invalid.refuse_invalid`: unreadable photographs are an
        error unless ``skip_invalid``).
    """
    if config.data.labels is not None:
        df = with_split(read_dataset(config.data), model_home(config.model), config.split)
    else:
        if not config.files:
            raise ConfigError("expected image files or --labels, found neither")
        for p in config.files:
            if not p.is_file():
                raise InputError("expected an image file, found "
                                 + ("a folder" if p.is_dir() else "no file"), p)
        df = pd.DataFrame({"image": [p.stem for p in config.files],
                           "path": [str(p.absolute()) for p in config.files],
                           "grade": -1, "dme": -1, "patient": [p.stem for p in config.files],
                           "split": "external"})
    cache = config.cache_dir or default_cache(config.model)
    df = preprocess_table(df, PreprocessConfig(**preprocessing), cache, workers=config.workers)
    return refuse_invalid(df, skip_invalid=config.skip_invalid)


def probabilities(ensemble, df: pd.DataFrame) -> pd.DataFrame:
    """Ensemble probabilities per row of an :func:`inference_table`; NaN where no image.

    Returns
    -------
    pandas.DataFrame
        ``p_grade0`` .. ``p_grade4``, ``p_referable`` (and ``p_dme``), index of ``df``.
    """
    ok = (df["cache"] != "").to_numpy()
    out = pd.DataFrame(index=df.index, columns=GRADE_COLS + ["p_referable"], dtype=float)
    if ok.any():
        probs = predict_images(ensemble, df.loc[ok, "cache"].tolist())
        out.loc[ok, GRADE_COLS] = probs["grade"]
        out.loc[ok, "p_referable"] = probs["referable"]
        if "dme" in probs:
            out.loc[ok, "p_dme"] = probs["dme"]
    return out


def run_predict(config: PredictConfig, *, overwrite: bool = False) -> pd.DataFrame:
    """Write ``predictions.csv``: per image the grade probabilities, predicted grade,
    referable probability, referable decision at the operating point (``referable``) and
    at each of the model's (``referable_high_sensitivity``, ``referable_high_specificity``)
    and gradability.  Ungradable images are flagged and get no grade or decision.
    An unreadable photograph is an error naming it; with ``skip_invalid`` its row has
    empty values and the reason in ``skipped`` (and it is listed in ``run.json``).
    With ``html``, ``report.html`` shows the same rows with each photograph.
    """
    config.validate()
    config, card, info = peek_model(config)
    name, thr = threshold_for(info, config.operating_point)
    with removed_on_error(config.out, "retinopathy predict"), RunDir(
            config.out, command="retinopathy predict", config=config, inputs=config.inputs(),
            overwrite=overwrite) as run:
        df = inference_table(config, card.preprocessing)
        _, ensemble, info = open_model(config)
        readable = (df["skipped"] == "").to_numpy()
        notes = report_notes(ensemble.card, df.loc[readable, "path"].tolist())
        res = _prediction_rows(df, probabilities(ensemble, df), thr, name,
                               info["operating_points"])
        write_text(run.file("predictions.csv"), res.to_csv(index=False, float_format="%.9g"))
        skipped = skipped_list(df)
        if config.html:
            if skipped:
                notes.append(f"{len(skipped)} unreadable photograph(s) skipped: "
                             + "; ".join(f"{r['image']} ({r['reason']})" for r in skipped))
            write_report_html(run.file("report.html"),
                              res.assign(path=df["path"])[readable].reset_index(drop=True),
                              title=f"retinopathy predict: {Path(config.model).name}",
                              points=info["operating_points"], grade_names=GRADE_NAMES,
                              notes=notes)
        run.record(images=len(res), gradable=int((res["gradable"] == 1).sum()),
                   referable=int((res["referable"] == 1).sum()), operating_point=name,
                   threshold=thr, members=len(ensemble), skipped=skipped)
    return res


def _prediction_rows(df: pd.DataFrame, probs: pd.DataFrame, thr: float, name: str,
                     points: dict) -> pd.DataFrame:
    """The rows of ``predictions.csv``: no grade or decision where ungradable; gradability
    also empty where the photograph was skipped as unreadable (not a clinical outcome)."""
    res = pd.concat([df[["image"]], probs], axis=1)
    gradable = df["gradable"].astype(int) == 1
    skipped = df["skipped"] != ""
    res["grade"] = np.where(gradable, probs[GRADE_COLS].fillna(0).to_numpy().argmax(1), -1)
    res["referable"] = np.where(gradable, (probs["p_referable"].fillna(0) >= thr).astype(int), -1)
    res = pd.concat([res, referable_decisions(probs["p_referable"], gradable, points)], axis=1)
    res["gradable"] = gradable.astype("Int64").mask(skipped)
    res["quality"] = df["reasons"].mask(skipped, "")
    res["operating_point"] = name
    res["threshold"] = thr
    # Empty cells, not numbers, where no grade was given.
    for col in ("grade", "referable"):
        res[col] = res[col].astype("Int64").mask(~gradable)
    if skipped.any():
        res["skipped"] = df["skipped"]
    return res
