"""notebooks/compress.ipynb runs on tiny settings and its comparison is the one it claims."""
import json


def test_compress_notebook(run_notebook, tmp_path, monkeypatch):
    work = tmp_path / "work"
    monkeypatch.setenv("DEEPSCI_NOTEBOOK_WORK", str(work))
    text, _ = run_notebook("compress", timeout=600)
    metrics = [json.loads((work / "eval" / str(i) / "metrics.json").read_text()) for i in range(3)]
    teacher, student, int8 = metrics
    # The shipped ensemble grades these unseen synthetic photographs well (0.99 at release).
    assert teacher["auc"] >= 0.9
    # The int8 file is the student's: per photograph, its referable probability barely moves.
    import pandas as pd

    p = [pd.read_csv(work / "eval" / str(i) / "predictions.csv", dtype={"image": str})
         .set_index("image")["p_referable"] for i in (1, 2)]
    assert len(p[0]) == len(p[1]) > 0
    assert float((p[0] - p[1].loc[p[0].index]).abs().max()) <= 0.05
    card = json.loads((work / "student_int8.card.json").read_text())
    assert card["extra"]["litert"]["quantize"] == "int8"
    assert card["extra"]["litert"]["difference"] <= 0.02
    distilled = json.loads((work / "student" / "member_0" / "model.card.json").read_text())
    assert distilled["training"]["distillation"]["temperature"] == 3.0
    assert len(distilled["training"]["distillation"]["teacher"]) == 3
    assert "x smaller" in text and "int8 vs fp32 student" in text
