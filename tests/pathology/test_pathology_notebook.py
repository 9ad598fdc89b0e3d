"""The pathology notebook runs top to bottom on tiny settings and reports what it computed."""
import json

import pytest


def test_notebook_executes(run_notebook, tmp_path, monkeypatch, official):
    work = tmp_path / "work"
    monkeypatch.setenv("DEEPSCI_NOTEBOOK_WORK", str(work))
    outputs, figures = run_notebook("pathology", timeout=240)
    m = json.loads((work / "eval" / "metrics.json").read_text())
    # the FROC the notebook prints is the one its evaluation wrote ...
    assert f"FROC {m['froc']:.3f}, slide AUC {m.get('slide_auc', float('nan')):.3f}" in outputs
    # ... and that is the official Evaluation_FROC.py on the CSVs and masks the notebook wrote
    # (level 4: the quick 1024-px masks stop there, and the notebook evaluates there)
    want, _, _ = official.from_files(work / "detections", work / "test", 4)
    assert m["froc"] == pytest.approx(want, abs=1e-9)
    scores = dict(line.split(",") for line in (work / "detections" / "slides.csv").read_text().splitlines()[1:])
    assert set(scores) == {"test_tumor_001", "test_normal_001"}
    assert figures >= 1
