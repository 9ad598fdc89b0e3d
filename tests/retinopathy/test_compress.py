"""export (int8 / float16 LiteRT) and distill for retinopathy, on tiny data made here.

Tolerances (per-image referable and grade probabilities, LiteRT vs the
Keras model on the same preprocessed photographs): float16 1e-3, int8 0.05.
"""
import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from deepsci.apps.cli import main
from deepsci.apps.retinopathy.model import build_model, model_card
from deepsci.apps.retinopathy.preprocess import PreprocessConfig, load_cached, to_input
from deepsci.core.ensemble import write_ensemble
from deepsci.core.models.serialization import save_model

SIZE = 32
HEADS = {"grade": 5, "referable": 1, "dme": 1}
GRADES = [f"p_grade{k}" for k in range(5)]
TOL = {"float16": 1e-3, "int8": 0.05}


def _one_line(capsys, args) -> str:
    capsys.readouterr()
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), (rc, err)
    return err[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A tiny synthetic set and a 2-member untrained teacher folder (32 px, width 4)."""
    import keras

    root = tmp_path_factory.mktemp("retino-compress")
    assert main(["retinopathy", "synth", str(root / "data"), "--patients", "14", "--size", "128",
                 "--seed", "5"]) == 0
    teacher = root / "teacher"
    card = model_card(size=SIZE, heads=HEADS, variant="small", width=4,
                      preprocessing=asdict(PreprocessConfig(size=SIZE)))
    members = []
    for i in range(2):
        keras.utils.set_random_seed(i)
        members.append(teacher / f"member_{i}" / "model.keras")
        save_model(build_model(SIZE, HEADS, width=4), members[-1], card=card)
    points = {k: {"name": k, "threshold": t, "sensitivity": 1.0, "specificity": 0.5}
              for k, t in (("high_sensitivity", 0.3), ("high_specificity", 0.7))}
    write_ensemble(teacher, members, info={"heads": HEADS, "operating_points": points})
    return root


@pytest.fixture(scope="module")
def exported(root):
    model = root / "teacher" / "member_0" / "model.keras"
    out = {}
    for q in ("float16", "int8"):
        out[q] = root / f"m_{q}.tflite"
        assert main(["retinopathy", "export", str(model), "--out", str(out[q]), "--quantize", q,
                     "--inputs", str(root / "data" / "trainLabels.csv"), "--samples", "12",
                     "--check", "8", "--batch-size", "4"]) == 0
    return out


def _predict(root, model, out):
    files = sorted((root / "data" / "train").glob("*.jpeg"))[:6]
    assert main(["retinopathy", "predict", "--model", str(model), *map(str, files), "--out",
                 str(out), "--cache", str(root / "cache")]) == 0
    return pd.read_csv(out / "predictions.csv", dtype={"image": str})


@pytest.mark.parametrize("quantize", ["float16", "int8"])
def test_export_and_predict_match_the_keras_model(root, exported, quantize, tmp_path):
    card = json.loads(exported[quantize].with_suffix(".card.json").read_text())
    lite = card["extra"]["litert"]
    assert lite["quantize"] == quantize and lite["batch_size"] == 4
    assert lite["outputs"] == ["dme", "grade", "referable"]
    # The operating points travel with the file.
    assert card["extra"]["ensemble"]["operating_points"]["high_sensitivity"]["threshold"] == 0.3
    keras_pred = _predict(root, root / "teacher" / "member_0" / "model.keras", tmp_path / "k")
    lite_pred = _predict(root, exported[quantize], tmp_path / "l")
    assert list(lite_pred["image"]) == list(keras_pred["image"])
    for col in ["p_referable", "p_dme", *GRADES]:
        np.testing.assert_allclose(lite_pred[col], keras_pred[col], atol=TOL[quantize])
    assert (lite_pred["threshold"] == 0.3).all()
    # The export's own held-out check is the same measure, recorded in the run record.
    run = json.loads(exported[quantize].with_name(exported[quantize].name + ".run.json").read_text())
    assert run["results"]["difference"] <= TOL[quantize]
    assert run["results"]["measure"] == "mean |delta referable probability|"


def test_int8_is_smaller_and_evaluate_accepts_it(root, exported, tmp_path):
    keras_bytes = (root / "teacher" / "member_0" / "model.keras").stat().st_size
    assert exported["int8"].stat().st_size < exported["float16"].stat().st_size < keras_bytes
    labels = str(root / "data" / "trainLabels.csv")
    metrics = {}
    for name, model in (("keras", root / "teacher" / "member_0" / "model.keras"),
                        ("lite", exported["float16"])):
        assert main(["retinopathy", "evaluate", "--model", str(model), "--labels", labels,
                     "--split", "all", "--out", str(tmp_path / name), "--n-boot", "20",
                     "--cache", str(root / "cache")]) == 0
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert metrics["lite"]["n"] == metrics["keras"]["n"] >= 12
    assert metrics["lite"]["auc"] == pytest.approx(metrics["keras"]["auc"], abs=0.02)
    assert metrics["lite"]["confusion"] == metrics["keras"]["confusion"]


def test_bad_tflite_files_and_explain_give_one_line(root, exported, tmp_path, capsys):
    photo = str(sorted((root / "data" / "train").glob("*.jpeg"))[0])
    card = json.loads(exported["int8"].with_suffix(".card.json").read_text())
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"not a flatbuffer" * 64)
    corrupt.with_suffix(".card.json").write_text(json.dumps(card))
    err = _one_line(capsys, ["retinopathy", "predict", "--model", str(corrupt), photo, "--out",
                             str(tmp_path / "o")])
    assert "expected a LiteRT model" in err and "corrupt.tflite" in err
    other = tmp_path / "other.tflite"
    other.write_bytes(exported["int8"].read_bytes())
    other.with_suffix(".card.json").write_text(json.dumps({**card, "app": "molecules",
                                                           "task": "qm9-properties"}))
    err = _one_line(capsys, ["retinopathy", "predict", "--model", str(other), photo, "--out",
                             str(tmp_path / "o")])
    assert err == f"error: expected a retinopathy model, found a molecules model ({other})"
    err = _one_line(capsys, ["retinopathy", "explain", "--model", str(exported["int8"]), photo,
                             "--out", str(tmp_path / "o")])
    assert "expected a .keras model for explain" in err
    err = _one_line(capsys, ["retinopathy", "export", str(root / "teacher"), "--out",
                             str(tmp_path / "e.tflite")])
    assert "ensemble of 2" in err
    assert not (tmp_path / "o").exists()


def _soft(z, t):
    z = np.asarray(z, np.float64) / t
    if z.shape[-1] == 1:
        return 1 / (1 + np.exp(-z))
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_distill_writes_a_normal_model_with_cached_teacher_targets(root, tmp_path):
    import keras

    out = tmp_path / "student"
    args = ["retinopathy", "distill", "--teacher", str(root / "teacher"), "--labels",
            str(root / "data" / "trainLabels.csv"), "--out", str(out), "--width", "4",
            "--epochs", "1", "--batch-size", "8", "--temperature", "2", "--alpha", "0.6",
            "--val-frac", "0.3", "--test-frac", "0.2", "--no-tensorboard"]
    assert main(args) == 0
    card = json.loads((out / "member_0" / "model.card.json").read_text())
    d = card["training"]["distillation"]
    assert d["temperature"] == 2.0 and d["alpha"] == 0.6 and d["student"]["width"] == 4
    assert d["teacher"] == [str(root / "teacher" / f"member_{i}" / "model.keras") for i in range(2)]
    assert card["training"]["command"] == "retinopathy distill" and card["extra"]["width"] == 4
    info = json.loads((out / "ensemble.json").read_text())
    assert info["members"] == ["member_0/model.keras"] and "high_sensitivity" in info["operating_points"]
    # The cache holds the teacher's mean softened outputs on the training + validation images.
    shards = sorted((out / "teacher-cache").glob("*/shard-*.npz"))
    assert len(shards) == 1
    splits = pd.read_csv(out / "splits.csv")
    usable = splits[(splits["gradable"] == 1) & splits["cache"].notna() & (splits["grade"] >= 0)]
    rows = pd.concat([usable[usable["split"] == s] for s in ("train", "val")])
    assert d["data"]["train_images"] + d["data"]["val_images"] == len(rows)
    x = to_input(load_cached(rows["cache"].tolist()))
    outs = [keras.saving.load_model(root / "teacher" / f"member_{i}" / "model.keras")(x, training=False)
            for i in range(2)]
    with np.load(shards[0]) as z:
        for head in HEADS:
            want = np.mean([_soft(o[head].numpy(), 2.0) for o in outs], axis=0)
            np.testing.assert_allclose(z[head], want, atol=1e-5)
    # A rerun resumes: the finished student and its teacher shard are kept as they are.
    before = (shards[0].stat().st_mtime_ns, (out / "member_0" / "model.keras").stat().st_mtime_ns)
    assert main(args) == 0
    assert (shards[0].stat().st_mtime_ns,
            (out / "member_0" / "model.keras").stat().st_mtime_ns) == before
    # The student is a normal model: predict takes its folder.
    pred = _predict(root, out, tmp_path / "pred")
    assert len(pred) == 6
    np.testing.assert_allclose(pred[GRADES].sum(1), 1, atol=1e-4)
