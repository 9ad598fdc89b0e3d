"""Demo: synthesise a graded fundus set, train, evaluate on held-out patients, explain."""
from __future__ import annotations

from pathlib import Path

from deepsci.core.report import DemoResult


def run_demo(out_dir: Path, *, quick: bool = False) -> DemoResult:
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
