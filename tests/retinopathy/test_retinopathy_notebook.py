"""The notebook runs top to bottom on tiny settings, and what it prints is what it computed.

The notebook works in ``DEEPSCI_NOTEBOOK_WORK``; the test recomputes the
held-out metrics from the predictions the notebook wrote (scikit-learn's AUC
and kappa), checks the split is by patient, and that the printed AUC and
saliency table are those numbers.
"""
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score


def test_notebook_executes(run_notebook, tmp_path, monkeypatch):
    work = tmp_path / "nb-work"
    monkeypatch.setenv("DEEPSCI_NOTEBOOK_WORK", str(work))
    outputs, _ = run_notebook("retinopathy")
    m = json.loads((work / "eval" / "metrics.json").read_text())
    preds = pd.read_csv(work / "eval" / "predictions.csv", dtype={"image": str})
    splits = pd.read_csv(work / "model" / "splits.csv", dtype={"image": str, "patient": str})
    # Held-out patients only, never a training patient.
    test_ids = set(splits.loc[splits["split"] == "test", "image"])
    assert set(preds["image"]) == test_ids
    assert not set(splits.loc[splits["split"] == "test", "patient"]) & set(
        splits.loc[splits["split"] != "test", "patient"])
    keep = (preds["gradable"] == 1) & (preds["grade"] >= 0)
    assert m["n"] == int(keep.sum()) and m["n_referable"] == int(preds.loc[keep, "referable_true"].sum())
    y, p = preds.loc[keep, "referable_true"], preds.loc[keep, "p_referable"]
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=2e-3)
    pred_grade = preds.loc[keep, [f"p_grade{k}" for k in range(5)]].to_numpy().argmax(1)
    expected_kappa = cohen_kappa_score(preds.loc[keep, "grade"], pred_grade, weights="quadratic", labels=range(5))
    assert m["kappa"] == pytest.approx(expected_kappa, abs=1e-6, nan_ok=True)
    for name in ("high_sensitivity", "high_specificity"):
        thr = m[name]["threshold"]
        assert m[name]["sensitivity"] == pytest.approx(((p >= thr) & (y == 1)).sum() / (y == 1).sum())
    # What the notebook printed is what it wrote.
    assert f"test referable AUC {m['auc']:.3f} (95% CI {m['auc_ci_low']:.3f}-" in outputs
    sal = pd.read_csv(work / "explain" / "saliency.csv", dtype={"image": str})
    assert len(sal) >= 1 and set(sal["image"]) <= set(preds.loc[preds["referable_true"] == 1, "image"])
    assert np.isfinite(sal["lesion_ratio"]).all()
    for f in sal["overlay"]:
        assert (work / "explain" / f).read_bytes()[:4] == b"\x89PNG"
