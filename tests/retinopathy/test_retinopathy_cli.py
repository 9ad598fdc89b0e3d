"""End to end through the CLI: synth -> train -> evaluate -> predict -> explain, and bad input.

One short training run (64-px small Inception, 5 epochs) is shared by the
module; it must learn: referable AUC on held-out validation patients >= 0.8.
"""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage as ndi
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from deepsci.apps.cli import main
from deepsci.apps.retinopathy.synth import synth_image

AUC_BOUND = 0.8


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("retino")
    assert main(["retinopathy", "synth", str(root / "data"), "--patients", "40", "--size", "256",
                 "--seed", "3"]) == 0
    rc = main(["retinopathy", "train", "--labels", str(root / "data" / "trainLabels.csv"),
               "--out", str(root / "model"), "--size", "64", "--width", "8", "--epochs", "5",
               "--batch-size", "16", "--val-frac", "0.25", "--test-frac", "0.25",
               "--no-tensorboard"])
    assert rc == 0
    return root


def test_training_learns(trained):
    info = json.loads((trained / "model" / "ensemble.json").read_text())
    assert info["validation"]["auc"] >= AUC_BOUND
    assert info["heads"] == {"grade": 5, "referable": 1, "dme": 1}
    for f in ("member_0/model.keras", "member_0/model.card.json", "run.json",
              "splits.csv", "member_0/history.json"):
        assert (trained / "model" / f).is_file(), f
    splits = pd.read_csv(trained / "model" / "splits.csv", dtype={"patient": str})
    assert (splits.groupby("patient")["split"].nunique() == 1).all()
    card = json.loads((trained / "model" / "member_0" / "model.card.json").read_text())
    assert card["app"] == "retinopathy" and card["task"] == "dr-grade"
    assert card["preprocessing"]["size"] == 64 and card["input_spec"]["shape"] == [64, 64, 3]
    assert card["data"]["synthetic"] is True and card["training"]["config"]["epochs"] == 5
    run = json.loads((trained / "model" / "run.json").read_text())
    assert run["status"] == "done" and run["command"] == "retinopathy train"
    assert run["config"]["train"]["epochs"] == 5 and run["config"]["preprocess"]["size"] == 64
    assert run["results"]["validation"]["auc"] == info["validation"]["auc"]


def test_evaluate(trained):
    out = trained / "eval"
    assert main(["retinopathy", "evaluate", "--model", str(trained / "model"), "--labels",
                 str(trained / "data" / "trainLabels.csv"), "--split", "test", "--out", str(out),
                 "--n-boot", "200"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    info = json.loads((trained / "model" / "ensemble.json").read_text())
    assert m["auc_ci_low"] <= m["auc"] <= m["auc_ci_high"]
    assert m["auc"] >= 0.75
    # The metrics are those of the written predictions (test patients only).
    preds = pd.read_csv(out / "predictions.csv", dtype={"image": str})
    splits = pd.read_csv(trained / "model" / "splits.csv", dtype={"image": str})
    assert set(preds["image"]) == set(splits.loc[splits["split"] == "test", "image"])
    keep = (preds["gradable"] == 1) & (preds["grade"] >= 0)
    y, p = preds.loc[keep, "referable_true"], preds.loc[keep, "p_referable"]
    assert m["n"] == int(keep.sum()) and m["n_referable"] == int(y.sum())
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=2e-3)
    pred_grade = preds.loc[keep, [f"p_grade{k}" for k in range(5)]].to_numpy().argmax(1)
    assert m["kappa"] == pytest.approx(
        cohen_kappa_score(preds.loc[keep, "grade"], pred_grade, weights="quadratic", labels=range(5)), abs=1e-6)
    for name in ("high_sensitivity", "high_specificity"):
        # Chosen on validation, applied unchanged.
        thr = m[name]["threshold"]
        assert thr == info["operating_points"][name]["threshold"]
        assert m[name]["sensitivity"] == pytest.approx(((p >= thr) & (y == 1)).sum() / y.sum())
        assert m[name]["specificity"] == pytest.approx(((p < thr) & (y == 0)).sum() / (y == 0).sum())
    cm = np.zeros((5, 5), int)
    np.add.at(cm, (preds.loc[keep, "grade"].to_numpy(), pred_grade), 1)
    assert m["confusion"] == cm.tolist()
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert (pd.read_csv(out / "confusion.csv", index_col=0).to_numpy() == cm).all()
    # predict on the same images gives the same probabilities.
    assert main(["retinopathy", "predict", "--model", str(trained / "model"), "--labels",
                 str(trained / "data" / "trainLabels.csv"), "--split", "test",
                 "--out", str(trained / "pred_test")]) == 0
    again = pd.read_csv(trained / "pred_test" / "predictions.csv", dtype={"image": str})
    merged = preds.merge(again, on="image", suffixes=("", "_pred"))
    assert len(merged) == len(preds)
    np.testing.assert_allclose(merged["p_referable_pred"], merged["p_referable"], atol=2e-5)


def test_predict_flags_ungradable(trained, tmp_path):
    rng = np.random.default_rng(7)
    files = []
    for i, g in enumerate([0, 3]):
        img, _, _ = synth_image(g, size=256, rng=rng)
        files.append(tmp_path / f"eye{i}.jpeg")
        Image.fromarray(img).save(files[-1])
    blurred = np.stack([ndi.gaussian_filter(img[..., c], 10) for c in range(3)], -1)
    files.append(tmp_path / "blurred.png")
    Image.fromarray(blurred).save(files[-1])
    files.append(tmp_path / "black.png")
    Image.fromarray(np.zeros((200, 300, 3), np.uint8)).save(files[-1])
    out = tmp_path / "pred"
    assert main(["retinopathy", "predict", "--model", str(trained / "model"), *map(str, files), "--out",
                 str(out), "--operating-point", "high_specificity",
                 "--cache", str(tmp_path / "cache")]) == 0
    df = pd.read_csv(out / "predictions.csv")
    assert list(df["image"]) == ["eye0", "eye1", "blurred", "black"]
    assert {"p_grade0", "p_grade4", "grade", "p_referable", "referable", "gradable",
            "quality"} <= set(df.columns)
    assert list(df["gradable"]) == [1, 1, 0, 0]
    assert df["grade"].iloc[2:].isna().all() and df["referable"].iloc[2:].isna().all()
    assert "too blurred" in df["quality"].iloc[2] and "no field of view" in df["quality"].iloc[3]
    thr = df["threshold"].iloc[0]
    assert ((df["p_referable"].iloc[:2] >= thr).astype(int) == df["referable"].iloc[:2]).all()
    np.testing.assert_allclose(df[[f"p_grade{k}" for k in range(5)]].iloc[:2].sum(1), 1, atol=1e-4)


def test_explain_saliency_on_lesions(trained):
    out = trained / "explain"
    splits = pd.read_csv(trained / "model" / "splits.csv", dtype={"image": str})
    assert main(["retinopathy", "explain", "--model", str(trained / "model"), "--labels",
                 str(trained / "data" / "trainLabels.csv"), "--split", "test", "--out", str(out),
                 "--masks", str(trained / "data" / "masks"), "--steps", "16", "--limit", "8"]) == 0
    table = pd.read_csv(out / "saliency.csv")
    ref = set(splits.loc[splits["referable"] == 1, "image"])
    ratios = table.loc[table["image"].isin(ref), "lesion_ratio"].dropna()
    assert len(ratios) >= 2
    # Saliency mass falls on the painted lesions more than on the background.
    assert ratios.median() > 1.5
    overlay = np.asarray(Image.open(out / table["overlay"].iloc[0]))
    assert overlay.shape == (448, 896, 3)  # photograph | overlay, at least 448 px


def _err(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def test_bad_inputs_exit_2(trained, tmp_path, capsys):
    model = str(trained / "model")
    rc, err = _err(capsys, ["retinopathy", "evaluate", "--model", model, "--labels",
                            str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and "expected a CSV label file, found no file" in err[0]
    (tmp_path / "train").mkdir()
    (tmp_path / "trainLabels.csv").write_text("image,level\n5_left,7\n")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "train" / "5_left.jpeg")
    rc, err = _err(capsys, ["retinopathy", "evaluate", "--model", model, "--labels",
                            str(tmp_path / "trainLabels.csv"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "ICDR grade in 0-4, found '7'" in err[0]
    rc, err = _err(capsys, ["retinopathy", "predict", "--model", model, str(tmp_path / "missing.jpeg"),
                            "--out", str(tmp_path / "o")])
    assert rc == 2 and "missing.jpeg" in err[0]
    rc, err = _err(capsys, ["retinopathy", "predict", "--model", model, str(tmp_path / "train" / "5_left.jpeg"),
                            "--out", str(tmp_path / "o"), "--operating-point", "loose"])
    assert rc == 2 and "operating point" in err[0]
    rc, err = _err(capsys, ["retinopathy", "predict", "--model", str(tmp_path), str(tmp_path / "x.png"),
                            "--out", str(tmp_path / "o")])
    assert rc == 2 and err[0].startswith("error: expected a model directory")
    rc, err = _err(capsys, ["retinopathy", "train", "--labels", str(tmp_path / "trainLabels.csv"),
                            "--out", str(tmp_path / "m"), "--variant", "v4"])
    assert rc == 2 and "variant" in err[0]
    assert not (tmp_path / "o" / "predictions.csv").exists()


def test_preprocess_cli(trained, tmp_path):
    out = tmp_path / "prep"
    assert main(["retinopathy", "preprocess", "--labels", str(trained / "data" / "trainLabels.csv"),
                 "--out", str(out), "--size", "64"]) == 0
    q = pd.read_csv(out / "quality.csv")
    assert len(q) == 80 and (q["gradable"] == 1).all()
    assert np.asarray(Image.open(q["cache"].iloc[0])).shape == (64, 64, 3)
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "retinopathy preprocess" and run["config"]["preprocess"]["size"] == 64
    assert run["results"]["images"] == 80 and run["results"]["ungradable"] == 0


def test_train_rerun_reuses_finished_members(trained):
    model = trained / "model" / "member_0" / "model.keras"
    before = model.stat().st_mtime_ns
    info = json.loads((trained / "model" / "ensemble.json").read_text())
    rc = main(["retinopathy", "train", "--labels", str(trained / "data" / "trainLabels.csv"),
               "--out", str(trained / "model"), "--size", "64", "--width", "8", "--epochs", "5",
               "--batch-size", "16", "--val-frac", "0.25", "--test-frac", "0.25",
               "--no-tensorboard"])
    assert rc == 0 and model.stat().st_mtime_ns == before
    again = json.loads((trained / "model" / "ensemble.json").read_text())
    assert again["operating_points"] == info["operating_points"]


def test_config_rerun_reproduces_predictions(trained, tmp_path):
    """``--config <out>/run.json --out <other>`` re-runs the recorded predict run."""
    rng = np.random.default_rng(11)
    files = []
    for i, g in enumerate([1, 4]):
        img, _, _ = synth_image(g, size=256, rng=rng)
        files.append(tmp_path / f"photo{i}.jpeg")
        Image.fromarray(img).save(files[-1])
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["retinopathy", "predict", "--model", str(trained / "model"), *map(str, files), "--out",
                 str(first), "--operating-point", "0.3", "--cache", str(tmp_path / "c")]) == 0
    assert main(["retinopathy", "predict", "--config", str(first / "run.json"),
                 "--out", str(second)]) == 0
    a = (first / "predictions.csv").read_text()
    assert (second / "predictions.csv").read_text() == a
    assert pd.read_csv(first / "predictions.csv")["threshold"].tolist() == [0.3, 0.3]
    rec = json.loads((second / "run.json").read_text())
    assert rec["config"]["operating_point"] == "0.3" and len(rec["config"]["files"]) == 2
    assert rec["config"]["out"] == str(second)


def test_every_output_has_one_run_record(trained):
    """One run.json per output folder; none of the old config copies."""
    for folder in ("data", "model", "eval", "explain", "pred_test"):
        path = trained / folder
        if not path.is_dir():
            continue
        assert json.loads((path / "run.json").read_text())["status"] == "done", folder
        for old in ("config.json", "run_info.json", "synth_config.json"):
            assert not (path / old).exists(), f"{folder}/{old}"


@pytest.mark.parametrize("argv, message", [
    (["synth", "OUT", "--jpeg-quality", "101"], "expected --jpeg-quality <= 100, found 101"),
    (["synth", "OUT", "--grade-probs", "0.5,0.5"],
     "expected 5 non-negative --grade-probs, found (0.5, 0.5)"),
    (["train", "--labels", "L.csv", "--out", "OUT", "--ensemble", "0"],
     "expected --ensemble >= 1, found 0"),
    (["train", "--labels", "L.csv", "--out", "OUT", "--val-frac", "0.6", "--test-frac", "0.4"],
     "expected --val-frac + --test-frac < 1, found 0.6 + 0.4"),
    (["train", "--labels", "L.csv", "--out", "OUT", "--size", "16"],
     "expected --size >= 32, found 16"),
    (["train", "--out", "OUT"], "expected --labels, found none"),
    (["evaluate", "--model", "M", "--out", "OUT", "--labels", "L.csv", "--n-boot", "0"],
     "expected --n-boot >= 1, found 0"),
    (["predict", "--model", "M", "a.png", "--out", "OUT", "--batch-size", "0"],
     "expected --batch-size >= 1, found 0"),
    (["predict", "--model", "M", "a.png", "--out", "OUT", "--split", "dev"],
     "expected --split all|train|val|test, found 'dev'"),
    (["explain", "--model", "M", "a.png", "--out", "OUT", "--target", "dme"],
     "expected --target referable|grade, found 'dme'"),
])
def test_option_ranges_are_checked_first(argv, message, tmp_path, capsys):
    """Out-of-range options fail in one line before anything is read or written."""
    argv = [str(tmp_path / a) if a in ("OUT", "M", "L.csv", "a.png") else a for a in argv]
    rc = main(["retinopathy", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"error: {message}"]
    assert not (tmp_path / "OUT").exists()
