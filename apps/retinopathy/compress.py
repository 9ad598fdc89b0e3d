"""Cheaper DR grading: ``export`` (int8 / float16 LiteRT) and ``distill`` (a small Inception from an ensemble).

* :data:`EXPORT` -- what :func:`deepsci.core.compress.run_export` needs of
  this app: :func:`draw` (preprocessed photographs, (N, S, S, 3) float32 in
  [-1, 1]) and :func:`compare` (mean |change of the referable probability|).
* :func:`export` -- ``run_export`` plus the model's operating points and
  training folder in the ``.tflite``'s card, so ``predict`` / ``evaluate``
  take the file on its own.
* :class:`DistillConfig` / :func:`distill` -- a student (the small Inception
  at a smaller ``width``) trained by the app's own training path on the
  teacher ensemble's softened grade, referable and DME outputs beside the
  hard labels (Hinton et al. 2015); it writes a normal model folder
  (``member_0/model.keras``, ``ensemble.json`` with operating points chosen
  on validation patients, ``splits.csv``, ``run.json``).
"""
from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deepsci.core.accelerator import AcceleratorConfig
from deepsci.core.compress import (
    DistillSettings,
    ExportConfig,
    ExportSpec,
    distill_card_entry,
    distill_loss_fn,
    run_export,
)
from deepsci.core.config import check_ranges, option
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import read_json, write_json
from deepsci.core.training import TrainConfig

from .io import DatasetSpec, load_image, read_dataset
from .model import APP, TASK
from .preprocess import PreprocessConfig, load_cached, preprocess_image, to_input
from .synth import SynthConfig, synth_image

#: Built-in calibration photographs come from ``synth`` with this seed offset,
#: far from the seeds the shipped model and the tests train or test on.
SYNTH_SEED = 1_000_003
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".tif", ".tiff")


# ------------------------------------------------------------------ export


def _synth_photo(i: int, seed: int, size: int, pcfg: PreprocessConfig) -> np.ndarray | None:
    rng = np.random.default_rng([SYNTH_SEED, seed, i])
    probs = np.asarray(SynthConfig(out=Path(".")).grade_probs, float)
    grade = int(rng.choice(5, p=probs / probs.sum()))
    dme = bool(grade >= 2 and rng.random() < 0.3)
    img, _, _ = synth_image(grade, dme=dme, eye=("left", "right")[i % 2], size=size, rng=rng)
    return preprocess_image(img, pcfg)[0]


def _file_photo(path: str, pcfg: PreprocessConfig) -> np.ndarray | None:
    out, q, _ = preprocess_image(load_image(path), pcfg)
    return out if out is not None and q.gradable else None


def _photo_paths(source: Path) -> list[str]:
    source = Path(source)
    if source.is_dir():
        files = sorted(str(p) for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    elif source.is_file():
        files = read_dataset(DatasetSpec(labels=source))["path"].astype(str).tolist()
    else:
        raise InputError("expected a label CSV or a folder of photographs, found nothing", source)
    if not files:
        raise InputError("expected photographs (.jpeg, .png, .tif), found none", source)
    return files


def draw(source: Path | None, n: int, seed: int, card) -> np.ndarray:
    """``n`` preprocessed photographs for calibration and the export check.

    Parameters
    ----------
    source : Path or None
        A label CSV (any format ``train`` reads) or a folder of photographs;
        ``None``: photographs painted by ``synth`` (fixed seed
        :data:`SYNTH_SEED` + ``seed``, the grade mix of ``synth``'s default,
        at the fundus size the model's card records, else 384 px).
    n : int
    seed : int
        Which photographs (a shuffle of ``source``'s, or which synthetic ones).
    card : ModelCard
        Its preprocessing (size, contrast) is applied, as at prediction.

    Returns
    -------
    ndarray of float32, shape (n', S, S, 3), in [-1, 1]
        ``n' <= n``: fewer when ``source`` has fewer gradable photographs.
    """
    pcfg = PreprocessConfig(**card.preprocessing)
    with ThreadPoolExecutor(max_workers=2) as pool:
        if source is None:
            size = int(card.data.get("synth", {}).get("train", {}).get("size", 384))
            imgs = list(pool.map(lambda i: _synth_photo(i, seed, size, pcfg), range(n)))
        else:
            files = _photo_paths(source)
            order = np.random.default_rng(seed).permutation(len(files))[:n]
            imgs = list(pool.map(lambda i: _file_photo(files[i], pcfg), order))
    imgs = [im for im in imgs if im is not None]
    if not imgs:
        raise InputError("expected gradable photographs to calibrate on, found none", source)
    return to_input(np.stack(imgs))


def compare(float_out: dict, exported_out: dict) -> float:
    """Mean |change| of the referable probability (sigmoid of the ``referable`` logit).

    ``float_out`` and ``exported_out`` are the models' raw outputs: dicts of
    logits, ``referable`` shape (N, 1).
    """
    def prob(out):
        return 1.0 / (1.0 + np.exp(-np.asarray(out["referable"], np.float64)))

    return float(np.mean(np.abs(prob(float_out) - prob(exported_out))))


#: The default tolerance: a mean shift of 0.02 in the referable probability
#: (int8 of the shipped demo's member moves it by ~0.004, see bench/compress_retinopathy.py).
EXPORT = ExportSpec(app=APP, task=TASK, draw=draw, compare=compare,
                    measure="mean |delta referable probability|", tolerance=0.02)


def export(cfg: ExportConfig, *, overwrite: bool = False, say=None) -> dict:
    """Export one retinopathy ``.keras`` model to LiteRT; return the export report.

    Beyond :func:`~deepsci.core.compress.run_export`, the ``.tflite``'s card
    records the training folder (``extra.model_dir``: its ``splits.csv`` and
    cache) and that folder's ``ensemble.json`` (``extra.ensemble``: the
    operating points ``predict`` and ``evaluate`` apply). For one member of a
    larger ensemble those points are the ensemble's (noted in the card).
    """
    from deepsci.core.models.card import card_path

    from .predict import model_home

    report = run_export(cfg, EXPORT, overwrite=overwrite, say=say)
    home = model_home(Path(report["source"]))
    meta = card_path(cfg.out)
    card = read_json(meta)
    extra = {**card.get("extra", {}), "model_dir": str(home.absolute())}
    if (home / "ensemble.json").is_file():
        info = read_json(home / "ensemble.json")
        members = len(info.get("members", []))
        extra["ensemble"] = {k: info[k] for k in ("operating_points", "validation") if k in info}
        if members > 1:
            extra["ensemble"]["note"] = (f"operating points of the {members}-member ensemble "
                                         f"{home.name}, applied to one member")
    write_json(meta, {**card, "extra": extra})
    return report


# ------------------------------------------------------------------ distill


def _train_defaults() -> TrainConfig:
    from .train import _train_defaults as defaults

    return defaults()


@dataclass
class DistillConfig:
    """Settings of ``retinopathy distill`` (:func:`distill`, recorded in ``run.json``).

    Attributes
    ----------
    out : Path
        The student's model folder (a rerun resumes: teacher cache, checkpoints).
    distill : DistillSettings
        Teacher (models, an ensemble folder or a shipped name), T, alpha.
    data : DatasetSpec
        The labelled photographs the student learns from; split by patient as
        ``train`` splits them. The student takes the teacher's preprocessing.
    train : TrainConfig
        Core loop settings of the student.
    accel : AcceleratorConfig
    width : int
        The student's small-Inception base width (the shipped teacher's is 16).
    fraction : float
        Fraction of the training patients the student sees (Hinton et al.'s
        3 % experiment); validation patients are all kept.
    augment : bool
        Flips, rotation, colour jitter of the student's inputs (the teacher's
        targets are of the un-augmented photograph).
    """

    out: Path = field(metadata={"help": "Student model folder (resumes if present)."})
    distill: DistillSettings = field(default_factory=DistillSettings)
    data: DatasetSpec = field(default_factory=DatasetSpec)
    train: TrainConfig = field(default_factory=_train_defaults)
    accel: AcceleratorConfig = field(default_factory=AcceleratorConfig)
    width: int = option(8, "Student small-Inception base width.", min=1)
    fraction: float = option(1.0, "Fraction of training patients used (e.g. 0.03).", min=0,
                             min_exclusive=True, max=1)
    augment: bool = option(True, "Flips, rotation, colour jitter.")
    val_frac: float = option(0.15, "Fraction of patients for validation.", min=0,
                             min_exclusive=True, max=1)
    test_frac: float = option(0.15, "Fraction of patients held out for testing.", min=0, max=1)
    split_seed: int = option(0, "Seed of the patient split.")
    cache_dir: Path | None = option(None, "Preprocessed-image cache folder.", cli="cache")
    workers: int = option(2, "Preprocessing threads.", min=1)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.cache_dir = None if self.cache_dir is None else Path(self.cache_dir)

    def validate(self) -> DistillConfig:
        """Raise :class:`ConfigError` for impossible values; return self."""
        if self.data.labels is None:
            raise ConfigError("expected --labels, found none")
        self.distill.validate()
        self.data.validate()
        self.train.validate()
        self.accel.validate()
        check_ranges(self)
        if self.val_frac + self.test_frac >= 1:
            raise ConfigError("expected --val-frac + --test-frac < 1, found "
                              f"{self.val_frac} + {self.test_frac}")
        return self


def _teacher_card(settings: DistillSettings):
    from deepsci.core.ensemble import model_paths
    from deepsci.core.models.card import read_card
    from deepsci.core.models.registry import resolve_model

    spec = resolve_model(settings.teacher, app=APP, task=TASK, say=None)
    return read_card(model_paths(spec)[0], expect=APP, task=TASK)


def student_config(cfg: DistillConfig, teacher_card):
    """The :class:`.train.RetinopathyConfig` the app's training path trains the student with."""
    from .train import RetinopathyConfig

    heads = teacher_card.extra.get("heads", {})
    return RetinopathyConfig(
        out=cfg.out, data=cfg.data, preprocess=PreprocessConfig(**teacher_card.preprocessing),
        train=cfg.train, accel=cfg.accel, variant="small", width=cfg.width, ensemble=1,
        balance="none", augment=cfg.augment, val_frac=cfg.val_frac, test_frac=cfg.test_frac,
        split_seed=cfg.split_seed, dme_head="yes" if "dme" in heads else "no",
        cache_dir=cfg.cache_dir, workers=cfg.workers)


def subsample_patients(tr: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """The images of ``ceil(fraction * patients)`` training patients, drawn with ``seed``."""
    if fraction >= 1:
        return tr
    patients = np.sort(tr["patient"].astype(str).unique())
    k = max(1, math.ceil(fraction * len(patients)))
    keep = np.random.default_rng(seed).choice(patients, size=k, replace=False)
    return tr[tr["patient"].astype(str).isin(set(keep))]


def _chunks(paths: list[str], size: int = 256):
    for start in range(0, len(paths), size):
        yield to_input(load_cached(paths[start:start + size]))


def head_kinds(heads: dict[str, int]) -> dict[str, str]:
    """How each DR head's teacher output becomes a soft target."""
    return {k: ("softmax" if units > 1 else "sigmoid") for k, units in heads.items()}


def make_distill_loss(heads: dict[str, int], settings: DistillSettings):
    """Per-example loss: T^2-weighted KL to the teacher + (1 - alpha) CE to the labels, per head.

    Grade (softmax) and referable (sigmoid) through
    :func:`~deepsci.core.compress.distill_loss_fn`; DME where its label is
    unknown (-1) learns from the teacher alone.
    """
    import tensorflow as tf

    from deepsci.core.distill import distillation_loss

    kinds = head_kinds(heads)
    core = distill_loss_fn({k: v for k, v in kinds.items() if k != "dme"}, settings)
    T, alpha = float(settings.temperature), float(settings.alpha)

    def loss_fn(y, y_pred):
        total = core(y, y_pred)
        if "dme" in kinds:
            d = tf.cast(y["label"]["dme"], tf.float32)
            known = tf.reshape(d >= 0, [-1])
            labelled = distillation_loss(tf.maximum(d, 0.0), y_pred["dme"], y["teacher"]["dme"],
                                         temperature=T, alpha=alpha)
            teacher_only = distillation_loss(tf.zeros_like(d), y_pred["dme"],
                                             y["teacher"]["dme"], temperature=T, alpha=1.0)
            total = total + tf.where(known, labelled, teacher_only)
        return total

    return loss_fn


def _cached_targets(cfg: DistillConfig, run, rows: pd.DataFrame, heads: dict[str, int]):
    """Teacher targets of ``rows``, cached under ``out/teacher-cache/<digest of the images>``."""
    from deepsci.core.compress import teacher_targets

    paths = rows["cache"].astype(str).tolist()
    digest = hashlib.sha1("\n".join(Path(p).name for p in paths).encode()).hexdigest()[:12]
    targets, teacher_paths = teacher_targets(
        cfg.distill, list(_chunks(paths)), app=APP, task=TASK,
        cache_dir=run.file("teacher-cache") / digest, heads=head_kinds(heads),
        batch_size=cfg.train.batch_size)
    n = len(next(iter(targets.values())))
    if n != len(rows):
        raise InputError(f"expected teacher outputs for {len(rows)} images, found {n} "
                         "(delete the teacher cache)", run.file("teacher-cache") / digest)
    return targets, teacher_paths


def distill(cfg: DistillConfig, *, overwrite: bool = False) -> dict:
    """Distil the teacher into one small Inception; write a normal model folder ``cfg.out``.

    Returns
    -------
    dict
        The student's ``ensemble.json`` content plus ``members`` and ``distillation``
        (what its card records in ``training["distillation"]``).
    """
    from deepsci.core.accelerator import setup
    from deepsci.core.runs import RunDir

    from .invalid import removed_on_error
    from .train import _train_val, finish_ensemble, prepare, train_member

    cfg.validate()
    teacher_card = _teacher_card(cfg.distill)
    rcfg = student_config(cfg, teacher_card)
    heads = dict(teacher_card.extra["heads"])
    with removed_on_error(cfg.out, "retinopathy distill"), RunDir(
            cfg.out, command="retinopathy distill", config=cfg, inputs=[cfg.data.labels],
            overwrite=overwrite) as run:
        strategy = setup(cfg.accel)
        df = prepare(rcfg, run.path)
        tr, va = _train_val(rcfg, df)
        tr = subsample_patients(tr, cfg.fraction, cfg.train.seed)
        targets, teacher_paths = _cached_targets(cfg, run, pd.concat([tr, va]), heads)
        split = {k: (v[:len(tr)], v[len(tr):]) for k, v in targets.items()}
        entry = distill_card_entry(
            cfg.distill, teacher_paths,
            data={"labels": str(Path(cfg.data.labels).absolute()), "fraction": cfg.fraction,
                  "train_images": len(tr), "train_patients": int(tr["patient"].nunique()),
                  "val_images": len(va)},
            student={"variant": "small", "width": cfg.width})
        member = train_member(
            rcfg, 0, tr, va, heads=heads, loss_fn=make_distill_loss(heads, cfg.distill),
            run=run, strategy=strategy,
            teacher=({k: v[0] for k, v in split.items()}, {k: v[1] for k, v in split.items()}),
            card_training={"command": "retinopathy distill", "distillation": entry})
        info = finish_ensemble(rcfg, run, df, va, [member], heads=heads)
        run.record(distillation=entry)
    return {**info, "members": [member], "distillation": entry}

