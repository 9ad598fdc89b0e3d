"""Demo: the shipped model beside a classical baseline on fresh synthetic photographs.

By default (:func:`run_demo`) the shipped ``retinopathy-synthetic-demo``
ensemble and its classical baseline (lesion features + logistic regression,
fitted at build time on the same training patients, :mod:`.baseline`) grade
the same freshly painted photographs, from a synth seed that neither the
training nor the build's test set used; ``train=True`` runs the older demo
that trains a model from scratch (:func:`train_demo`).
"""
from __future__ import annotations

from pathlib import Path

from deepsci.core.errors import InputError
from deepsci.core.io import write_json, write_text
from deepsci.core.report import DemoResult, DemoRow, find_viewer_outputs

#: The files for the field's viewer that the demo report links (those the run wrote).
VIEWERS = (("**/report.html", "a web browser"),)


#: Synth seed of the demo's photographs (the build uses release.TRAIN_SEED, TEST_SEED).
DEMO_SEED = 2026


def _shipped():
    from deepsci.core.models.registry import default_model

    from .model import APP, TASK

    m = default_model(APP, TASK)
    if m is None:
        raise InputError("expected a shipped retinopathy model, found none (build it with "
                         "`deepsci models build retinopathy`, or run `deepsci demo --train`)")
    return m


def check_unseen(card, seed: int, patients: int) -> None:
    """Refuse a demo seed the model's data used, or one that repaints any of its photographs."""
    from .release import image_seeds, training_seeds

    if seed in training_seeds(card):
        raise InputError(f"expected a demo seed the model never saw, found {seed} "
                         f"(its data used {sorted(training_seeds(card))})")
    mine = set(image_seeds(seed, patients).tolist())
    for split, cfg in card.data.get("synth", {}).items():
        if mine & set(image_seeds(int(cfg["seed"]), int(cfg["n_patients"])).tolist()):
            raise InputError(f"expected demo photographs unseen in training, found some of the "
                             f"{split} set's (synth seed {cfg['seed']})")


def _tie(n: int) -> float:
    """One photograph's worth of a rate over ``n``: differences up to it count as a tie."""
    return 1.0 / max(n, 1) + 1e-9


def _rows(m: dict, b: dict, model: str, data: str, baseline_name: str) -> list[DemoRow]:
    n_pos, n_neg = m["n_referable"], m["n"] - m["n_referable"]
    rows = [DemoRow("referable-DR ROC AUC", m["auc"], b["auc"], baseline_name, True, model,
                    data, 0.005),
            DemoRow("quadratic kappa (ICDR 0-4)", m["kappa"], b["kappa"], baseline_name, True,
                    model, data, 0.01)]
    for point, label in (("high_sensitivity", "high-sensitivity"),
                         ("high_specificity", "high-specificity")):
        for rate, n in (("sensitivity", n_pos), ("specificity", n_neg)):
            rows.append(DemoRow(f"{rate} at the {label} point (chosen on validation)",
                                m[point][rate], b[point][rate], baseline_name, True, model,
                                data, _tie(n)))
    return rows


def shipped_demo(out_dir: Path, *, quick: bool = False) -> DemoResult:
    """Grade fresh synthetic photographs with the shipped model and the baseline.

    Parameters
    ----------
    out_dir : Path
        ``data/`` (the photographs), ``eval/`` (the model's metrics.json and
        predictions.csv), ``baseline/`` (the baseline's) are written here.
    quick : bool
        20 patients instead of 50.

    Returns
    -------
    DemoResult
        Rows: referable AUC, quadratic kappa and sensitivity/specificity at
        both operating points, deepsci beside the baseline on the same images.
    """
    from .baseline import BASELINE_FILE, load_baseline
    from .evaluate import EvaluateConfig, run_evaluate
    from .io import DatasetSpec
    from .release import baseline_report, baseline_table
    from .synth import SynthConfig, run_synth

    out_dir = Path(out_dir)
    shipped = _shipped()
    patients = 20 if quick else 50
    check_unseen(shipped.card, DEMO_SEED, patients)
    size = int(shipped.card.data.get("synth", {}).get("train", {}).get("size", 384))
    run_synth(SynthConfig(out=out_dir / "data", n_patients=patients, size=size, seed=DEMO_SEED))
    labels = out_dir / "data" / "trainLabels.csv"
    m = run_evaluate(EvaluateConfig(model=shipped.path, out=out_dir / "eval",
                                    data=DatasetSpec(labels=labels), n_boot=200 if quick else 1000,
                                    cache_dir=out_dir / "cache"))
    # The page a grader opens (report.html): a handful of the same photographs, from cache.
    from .predict import PredictConfig, run_predict

    photos = sorted((out_dir / "data" / "train").iterdir())[:6]
    run_predict(PredictConfig(model=shipped.path, out=out_dir / "predict", files=photos,
                              cache_dir=out_dir / "cache"))
    params = load_baseline(shipped.folder / BASELINE_FILE)
    b, pred = baseline_report(params, baseline_table(labels, out_dir / "cache"),
                              200 if quick else 1000)
    write_text(out_dir / "baseline" / "predictions.csv", pred.to_csv(index=False))
    write_json(out_dir / "baseline" / "metrics.json", b)
    if (b["n"], b["n_referable"]) != (m["n"], m["n_referable"]):
        raise InputError(f"expected the baseline and the model on the same photographs, found "
                         f"{b['n']} and {m['n']}", labels)
    data = (f"synthetic seed {DEMO_SEED}: {m['n']} photographs of {m['n_patients']} patients "
            f"({m['n_referable']} referable), unseen in training")
    rows = _rows(m, b, shipped.name, data, params.get("name", "classical baseline"))
    trained = shipped.card.data.get("seeds", {})
    return DemoResult(
        app="retinopathy",
        title="Diabetic-retinopathy grading (shipped demo model vs a classical baseline)",
        rows=rows, figures=[out_dir / "eval" / "roc.png"],
        metrics={"photographs": m["n"], "ungradable_excluded": m["n_ungradable_excluded"],
                 "auc_ci": f"{m['auc_ci_low']:.3f}-{m['auc_ci_high']:.3f}",
                 "baseline_auc_ci": f"{b['auc_ci_low']:.3f}-{b['auc_ci_high']:.3f}"},
        text=(f"{shipped.name} ({shipped.members} small Inceptions, trained on synth seed "
              f"{trained.get('train')}, tested at build time on seed {trained.get('test')}) and "
              "the classical baseline (lesion features + logistic regression, fitted on the same "
              "training patients) grade the same fresh photographs; both use the operating "
              "points chosen on validation patients at build time. A demo model: synthetic "
              "lesions painted on one real fundus (skimage.data.retina)."))


def run_demo(out_dir: Path, *, quick: bool = False, train: bool = False) -> DemoResult:
    """The retinopathy demo: :func:`shipped_demo`, or :func:`train_demo` with ``train``."""
    result = train_demo(out_dir, quick=quick) if train else shipped_demo(out_dir, quick=quick)
    result.viewers = find_viewer_outputs(out_dir, VIEWERS)
    return result


def train_demo(out_dir: Path, *, quick: bool = False) -> DemoResult:
    """Run the whole retinopathy pipeline on synthetic graded photographs.

    Parameters
    ----------
    out_dir : Path
        Everything is written here (data/, model/, eval/, explain/).
    quick : bool
        Tiny settings (tests): 40 patients, 64-px network input, 6 epochs.

    Returns
    -------
    DemoResult
        Test-split referable AUC (with CI), operating points, kappa, and the
        median lesion/background saliency ratio; ROC plot and one overlay.
    """
    import pandas as pd

    from deepsci.core.training import TrainConfig

    from .evaluate import EvaluateConfig, run_evaluate
    from .explain import ExplainConfig, run_explain
    from .io import DatasetSpec
    from .preprocess import PreprocessConfig
    from .synth import SynthConfig, run_synth
    from .train import RetinopathyConfig, run_train

    out_dir = Path(out_dir)
    if quick:
        synth = SynthConfig(out=out_dir / "data", n_patients=40, size=256, seed=0)
        size, width, epochs, boot, n_explain = 64, 8, 6, 200, 2
    else:
        synth = SynthConfig(out=out_dir / "data", n_patients=150, size=384, seed=0)
        size, width, epochs, boot, n_explain = 128, 16, 10, 1000, 6
    run_synth(synth)
    spec = DatasetSpec(labels=out_dir / "data" / "trainLabels.csv")
    run_train(RetinopathyConfig(
        out=out_dir / "model", data=spec, preprocess=PreprocessConfig(size=size),
        train=TrainConfig(epochs=epochs, batch_size=16, lr_schedule="cosine",
                          monitor="val_referable_auc", mode="max", restore_best=False,
                          tensorboard=not quick),
        width=width, val_frac=0.2, test_frac=0.2, cache_dir=out_dir / "cache"))
    common = {"model": out_dir / "model", "data": spec, "split": "test",
              "cache_dir": out_dir / "cache"}
    m = run_evaluate(EvaluateConfig(out=out_dir / "eval", n_boot=boot, **common))
    # Explain referable test images: those have lesions to point at.
    preds = pd.read_csv(out_dir / "eval" / "predictions.csv", dtype={"image": str})
    chosen = preds.loc[preds["referable_true"] == 1, "image"].tolist()[:n_explain]
    table = run_explain(ExplainConfig(out=out_dir / "explain", masks=out_dir / "data" / "masks",
                                      select=chosen, steps=16 if quick else 32, **common))
    metrics = {
        "test_images": m["n"],
        "referable_auc": m["auc"],
        "auc_ci": f"{m['auc_ci_low']:.3f}-{m['auc_ci_high']:.3f}",
        "kappa": m["kappa"],
    }
    for name in ("high_sensitivity", "high_specificity"):
        metrics[f"{name}_sens"] = m[name]["sensitivity"]
        metrics[f"{name}_spec"] = m[name]["specificity"]
    if "lesion_ratio" in table and table["lesion_ratio"].notna().any():
        metrics["saliency_lesion_ratio"] = float(table["lesion_ratio"].median())
    figures = [out_dir / "eval" / "roc.png"]
    if len(table):
        figures.append(out_dir / "explain" / table["overlay"].iloc[0])
    return DemoResult(
        app="retinopathy",
        title="Diabetic-retinopathy grading (synthetic lesions on a real fundus)",
        metrics=metrics, figures=figures,
        text=(f"{synth.n_patients} synthetic patients (two eyes each, lesions painted on "
              "skimage.data.retina following ICDR rules), split by patient; small Inception at "
              f"{size} px, {epochs} epochs; operating points chosen on validation and applied "
              "unchanged to the test patients."))
