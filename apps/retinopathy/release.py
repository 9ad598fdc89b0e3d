"""Build the shipped retinopathy model, ``retinopathy-synthetic-demo``, from scratch.

``deepsci models build retinopathy`` calls :func:`build`, which

1. paints a training set (:data:`FULL`: 300 patients, synth seed
   :data:`TRAIN_SEED`) and a held-out test set (100 patients, seed
   :data:`TEST_SEED`) with :mod:`.synth`;
2. trains the ensemble of :mod:`.train` (the small-Inception recipe of
   ``bench/retinopathy.py`` that reached referable AUC 0.998: 3 members,
   width 16, 128 px, 12 epochs) with the operating points chosen on its
   validation patients;
3. fits the classical baseline (:mod:`.baseline`) on the same training
   patients, its regularisation and operating points chosen on the same
   validation patients;
4. scores both on the validation patients and, once, on the test set;
5. writes ``<out_root>/retinopathy-synthetic-demo/`` (``ensemble.json``,
   ``member_*/model.keras`` + cards, ``baseline.json``) next to the old one
   and renames it over.

The model has only seen synthetic lesions painted on one real photograph
(``skimage.data.retina``), so its card marks it synthetic-only: every use on
anything but deepsci's synthetic photographs prints the demo-model warning.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepsci.core.bench import machine_line
from deepsci.core.io import atomic_dir, config_to_dict, read_json, write_json
from deepsci.core.models.card import ModelCard, card_path

from .baseline import BASELINE_FILE, FEATURE_SIZE, features_of, fit_baseline, save_baseline

NAME = "retinopathy-synthetic-demo"
#: Synth seeds the build uses; the demo's seeds must differ from both.
TRAIN_SEED, TEST_SEED = 11, 12
DATA_LICENCE = ("CC0: skimage.data.retina (Häggström, public domain, shipped with "
                "scikit-image) with lesions painted by deepsci's synth (BSD-3-Clause code)")


@dataclass(frozen=True)
class Recipe:
    """Settings of one build (see :data:`FULL` and :data:`TINY`)."""

    patients: int
    test_patients: int
    synth_size: int
    size: int
    width: int
    epochs: int
    batch_size: int
    ensemble: int
    n_boot: int


FULL = Recipe(patients=300, test_patients=100, synth_size=384, size=128, width=16, epochs=12,
              batch_size=32, ensemble=3, n_boot=1000)
TINY = Recipe(patients=20, test_patients=8, synth_size=192, size=48, width=4, epochs=1,
              batch_size=8, ensemble=1, n_boot=50)


def _synth(out: Path, patients: int, size: int, seed: int):
    from .synth import SynthConfig, run_synth

    cfg = SynthConfig(out=out, n_patients=patients, size=size, seed=seed)
    run_synth(cfg)
    return cfg


def _train(work: Path, recipe: Recipe):
    from deepsci.core.training import TrainConfig

    from .io import DatasetSpec
    from .preprocess import PreprocessConfig
    from .train import RetinopathyConfig, run_train

    cfg = RetinopathyConfig(
        out=work / "model", data=DatasetSpec(labels=work / "train" / "trainLabels.csv"),
        preprocess=PreprocessConfig(size=recipe.size), width=recipe.width,
        ensemble=recipe.ensemble,
        train=TrainConfig(epochs=recipe.epochs, batch_size=recipe.batch_size,
                          lr_schedule="cosine", monitor="val_referable_auc", mode="max",
                          restore_best=False, tensorboard=False, seed=0),
        val_frac=0.2, test_frac=0.0, cache_dir=work / "cache")
    run_train(cfg)
    return cfg


def _evaluate(work: Path, labels: Path, split: str, out: str, n_boot: int) -> dict:
    from .evaluate import EvaluateConfig, run_evaluate
    from .io import DatasetSpec

    return run_evaluate(EvaluateConfig(model=work / "model", out=work / out,
                                       data=DatasetSpec(labels=labels), split=split,
                                       n_boot=n_boot, cache_dir=work / "cache"))


def baseline_table(labels: Path, cache: Path, *, model_dir: Path | None = None,
                   split: str = "all") -> pd.DataFrame:
    """Images of a label file (one split of ``model_dir``'s splits.csv), preprocessed for the
    baseline at :data:`.baseline.FEATURE_SIZE`, gradable and graded ones only.

    Returns
    -------
    pandas.DataFrame
        :func:`.io.read_dataset` columns plus ``referable`` and the cache columns.
    """
    from .io import DatasetSpec, read_dataset, referable
    from .predict import with_split
    from .preprocess import PreprocessConfig, preprocess_table

    df = read_dataset(DatasetSpec(labels=labels))
    if model_dir is not None:
        df = with_split(df, model_dir, split)
    df = preprocess_table(df, PreprocessConfig(size=FEATURE_SIZE), cache, desc="baseline")
    df = df[(df["gradable"] == 1) & (df["grade"] >= 0) & (df["cache"] != "")].reset_index(drop=True)
    df["referable"] = referable(df["grade"].to_numpy(), df["dme"].to_numpy())
    return df


def baseline_report(params: dict, df: pd.DataFrame, n_boot: int) -> tuple[dict, pd.DataFrame]:
    """The baseline's screening metrics on ``df`` (a :func:`baseline_table`) and its predictions.

    Returns
    -------
    metrics : dict
        :func:`.evaluate.screening_report` of the baseline.
    predictions : pandas.DataFrame
        ``image``, ``patient``, ``grade``, ``referable_true``, ``p_grade0..4``, ``p_referable``.
    """
    from .baseline import baseline_probabilities
    from .evaluate import OperatingPoint, screening_report

    p = baseline_probabilities(params, features_of(df["cache"].tolist()))
    points = {k: OperatingPoint(**v) for k, v in params["operating_points"].items()}
    m = screening_report(df["referable"].to_numpy(), p["referable"], df["grade"].to_numpy(),
                         p["grade"], points, patients=df["patient"].to_numpy(), n_boot=n_boot)
    pred = df[["image", "patient", "grade"]].assign(referable_true=df["referable"].to_numpy())
    for k in range(p["grade"].shape[1]):
        pred[f"p_grade{k}"] = p["grade"][:, k]
    pred["p_referable"] = p["referable"]
    return m, pred


def _fit_baseline(work: Path, cfg) -> dict:
    """Fit the baseline on the model's training patients, choose on its validation patients."""
    labels = work / "train" / "trainLabels.csv"
    cache = work / "cache_baseline"
    tr = baseline_table(labels, cache, model_dir=work / "model", split="train")
    va = baseline_table(labels, cache, model_dir=work / "model", split="val")
    return fit_baseline(features_of(tr["cache"].tolist()), tr["grade"].to_numpy(),
                        tr["referable"].to_numpy(), features_of(va["cache"].tolist()),
                        va["grade"].to_numpy(), va["referable"].to_numpy(),
                        target_sensitivity=cfg.target_sensitivity,
                        target_specificity=cfg.target_specificity)


def _summary(m: dict) -> dict:
    """The card's numbers of one evaluation (no confusion matrix, no conventions)."""
    keep = ("n", "n_patients", "n_referable", "auc", "auc_ci_low", "auc_ci_high", "kappa",
            "accuracy", "high_sensitivity", "high_specificity")
    return {k: m[k] for k in keep if k in m}


def _card(card: ModelCard, *, recipe: Recipe, cfg, synth: dict, metrics: dict,
          baseline: dict, seconds: float, size_bytes: int, tiny: bool) -> ModelCard:
    member = card.extra.get("member", 0)
    data = {"name": "deepsci synthetic EyePACS-style fundus set (retinopathy synth)",
            "licence": DATA_LICENCE,
            "seeds": {"train": TRAIN_SEED, "test": TEST_SEED, "split": cfg.split_seed,
                      "member": card.data.get("seeds", {}).get("member")},
            "synth": synth, "synthetic_only": True, "real_input": "photographs",
            "images": {"train": card.extra.get("train_images"),
                       "val": card.extra.get("val_images"), "test": metrics["test"]["n"]}}
    training = {"command": "deepsci models build retinopathy" + (" --tiny" if tiny else ""),
                "recipe": dataclasses.asdict(recipe), "config": config_to_dict(cfg),
                "member": card.training}
    extra = {**card.extra, "shipped": {"default": True, "build_seconds": round(seconds, 1),
                                       "build_machine": machine_line(), "size_bytes": size_bytes,
                                       "tiny": tiny},
             "baseline": {"file": BASELINE_FILE, "name": baseline["name"],
                          "metrics": baseline["metrics"]}}
    return dataclasses.replace(
        card, name=NAME, data=data, training=training, metrics=metrics, extra=extra,
        description=(f"Member {member} of a {recipe.ensemble}-model small-Inception ensemble "
                     "(ICDR grade 0-4, referable DR, referable DME) trained on synthetic photographs."),
        intended_use="Demonstrating and testing deepsci's DR pipeline on deepsci's synthetic "
                     "fundus photographs (`deepsci retinopathy synth`).",
        limitations="A demo model: trained only on synthetic lesions painted on one real "
                    "photograph (skimage.data.retina); never trained or validated on real "
                    "patients, cameras or graders (EyePACS, Messidor, APTOS). Its outputs on "
                    "real photographs mean nothing. Not a medical device.")


def _stage(work: Path, stage: Path, baseline: dict) -> list[Path]:
    """Copy the shipped files (members, cards, ensemble.json, baseline.json) into the folder ``stage``."""
    info = read_json(work / "model" / "ensemble.json")
    members = []
    for rel in info["members"]:
        src = work / "model" / rel
        dst = stage / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        shutil.copy2(card_path(src), card_path(dst))
        members.append(dst)
    write_json(stage / "ensemble.json", info)
    save_baseline(baseline, stage / BASELINE_FILE)
    return members


def build(out_root: Path, *, tiny: bool = False) -> list[Path]:
    """Build ``retinopathy-synthetic-demo`` into ``out_root/retinopathy-synthetic-demo/``.

    Parameters
    ----------
    out_root : Path
        The models folder (``deepsci/data/models`` for a release).
    tiny : bool
        :data:`TINY` settings (seconds; for tests) instead of :data:`FULL`.

    Returns
    -------
    list of Path
        The written members' ``model.keras`` paths.
    """
    t0 = time.perf_counter()
    recipe = TINY if tiny else FULL
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="deepsci-build-retinopathy-"))
    try:
        synth = {"train": config_to_dict(_synth(work / "train", recipe.patients,
                                                recipe.synth_size, TRAIN_SEED)),
                 "test": config_to_dict(_synth(work / "test", recipe.test_patients,
                                               recipe.synth_size, TEST_SEED))}
        for s in synth.values():
            s.pop("out", None)
        cfg = _train(work, recipe)
        labels = work / "train" / "trainLabels.csv"
        metrics = {"validation": _summary(_evaluate(work, labels, "val", "eval_val", recipe.n_boot)),
                   "test": _summary(_evaluate(work, work / "test" / "trainLabels.csv", "test",
                                              "eval_test", recipe.n_boot))}
        baseline = _fit_baseline(work, cfg)
        test_df = baseline_table(work / "test" / "trainLabels.csv", work / "cache_baseline")
        baseline["metrics"] = {"validation": baseline["validation"],
                               "test": _summary(baseline_report(baseline, test_df,
                                                                recipe.n_boot)[0])}
        # Written beside the old folder and renamed over it only once complete.
        with atomic_dir(out_root / NAME) as stage:
            members = _stage(work, stage, baseline)
            size = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())
            seconds = time.perf_counter() - t0
            for m in members:
                card = ModelCard.from_dict(read_json(card_path(m)), card_path(m))
                card = _card(card, recipe=recipe, cfg=cfg, synth=synth, metrics=metrics,
                             baseline=baseline, seconds=seconds, size_bytes=size, tiny=tiny)
                write_json(card_path(m), card.to_dict())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    final = out_root / NAME
    return sorted(final.glob("member_*/model.keras"), key=lambda p: int(p.parent.name.split("_")[1]))


def training_seeds(card: ModelCard) -> set[int]:
    """Every synth seed a shipped model's card says its data used (train and test)."""
    seeds = card.data.get("seeds", {})
    return {int(seeds[k]) for k in ("train", "test") if seeds.get(k) is not None}


def image_seeds(seed: int, patients: int) -> np.ndarray:
    """The per-photograph seeds synth draws from ``seed`` (to check sets share no image)."""
    from .synth import SynthConfig, _plan

    return np.asarray([t[4] for t in _plan(SynthConfig(out=Path("."), n_patients=patients,
                                                        seed=seed))])
