"""export (int8 / float16 LiteRT) and distill for retinopathy, on the tiny data of conftest.py.

Tolerances (per-image referable and grade probabilities, LiteRT vs the
Keras model on the same preprocessed photographs): float16 1e-3, int8 0.05.

Cost: the fixed costs are the two LiteRT conversions and the student's first
(traced) training step, whatever the data size. The distillation therefore
runs in a second process (``distilling``: it imports TensorFlow while this one
builds the data, then runs beside the exports) under the same settings as in
this process (two logical CPUs, MirroredStrategy); its test waits for it and
reruns it here.
"""
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from deepsci.apps.cli import main
from deepsci.apps.retinopathy.preprocess import load_cached, to_input

HEADS = {"grade": 5, "referable": 1, "dme": 1}
GRADES = [f"p_grade{k}" for k in range(5)]
TOL = {"float16": 1e-3, "int8": 0.05}
SAMPLES, CHECK = 8, 4


def _one_line(capsys, args) -> str:
    capsys.readouterr()
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), (rc, err)
    return err[0]


def _distill_args(tiny, out) -> list[str]:
    return ["retinopathy", "distill", "--teacher", str(tiny.teacher), "--labels", str(tiny.labels),
            "--out", str(out), "--width", "4", "--epochs", "1", "--batch-size", "8",
            "--temperature", "2", "--alpha", "0.6", "--val-frac", "0.3", "--test-frac", "0.2",
            "--no-tensorboard", "--logical-cpus", "2"]


#: The child: imports TensorFlow while this process builds the data, then waits
#: for its command line (a JSON list written atomically by ``distilling``).
CHILD = """
import json, pathlib, sys, time
import keras, tensorflow
from deepsci.apps.cli import main
args = pathlib.Path(sys.argv[1])
deadline = time.monotonic() + 900
while not args.is_file():
    if time.monotonic() > deadline:
        sys.exit("error: no command line arrived")
    time.sleep(0.1)
sys.exit(main(json.loads(args.read_text())))
"""


@pytest.fixture(scope="module")
def distilling(tmp_path_factory, request):
    """``retinopathy distill`` in a child process started before ``tiny`` is built.

    The child is ended at teardown if it still runs (its own pid only).
    """
    folder = tmp_path_factory.mktemp("retino-distill")
    log, argv = folder / "distill.log", folder / "argv.json"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(argv)], stdout=fh,
                                stderr=subprocess.STDOUT)
    try:
        tiny = request.getfixturevalue("tiny")
        args = _distill_args(tiny, folder / "student")
        (folder / "argv.tmp").write_text(json.dumps(args))
        (folder / "argv.tmp").rename(argv)
        yield SimpleNamespace(out=folder / "student", args=args, proc=proc, log=log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def exported(distilling, tiny):
    """float16 and int8 exports of member 0 (``distilling`` first: it runs beside them)."""
    out = {}
    for q in ("float16", "int8"):
        out[q] = tiny.root / f"m_{q}.tflite"
        assert main(["retinopathy", "export", str(tiny.members[0]), "--out", str(out[q]),
                     "--quantize", q, "--inputs", str(tiny.labels), "--samples", str(SAMPLES),
                     "--check", str(CHECK), "--batch-size", "4"]) == 0
    return out


def _predict(tiny, model, out, *extra, files=None):
    """predictions.csv of ``model`` on ``files``, or on every labelled photograph."""
    where = (list(map(str, files)) if files is not None
             else ["--labels", str(tiny.labels), "--split", "all"])
    assert main(["retinopathy", "predict", "--model", str(model), *where, "--out", str(out),
                 "--cache", str(tiny.cache), *extra]) == 0
    return pd.read_csv(out / "predictions.csv", dtype={"image": str})


@pytest.fixture(scope="module")
def keras_pred(tiny, tmp_path_factory):
    """The Keras member 0's predictions on all photographs: the reference of the exports."""
    out = tmp_path_factory.mktemp("retino-keras") / "k"
    pred = _predict(tiny, tiny.members[0], out, "--no-html")
    assert len(pred) == len(tiny.photos) and (pred["gradable"] == 1).all()
    assert not (out / "report.html").exists()
    return pred


@pytest.mark.parametrize("quantize", ["float16", "int8"])
def test_export_and_predict_match_the_keras_model(tiny, exported, keras_pred, quantize, tmp_path):
    card = json.loads(exported[quantize].with_suffix(".card.json").read_text())
    lite = card["extra"]["litert"]
    assert lite["quantize"] == quantize and lite["batch_size"] == 4
    assert lite["outputs"] == ["dme", "grade", "referable"]
    # The operating points travel with the file.
    points = card["extra"]["ensemble"]["operating_points"]
    assert {k: v["threshold"] for k, v in points.items()} == tiny.thresholds
    lite_pred = _predict(tiny, exported[quantize], tmp_path / "l")
    assert list(lite_pred["image"]) == list(keras_pred["image"])
    for col in ["p_referable", "p_dme", *GRADES]:
        np.testing.assert_allclose(lite_pred[col], keras_pred[col], atol=TOL[quantize])
    assert (lite_pred["threshold"] == tiny.thresholds["high_sensitivity"]).all()
    for k, t in tiny.thresholds.items():  # both points from the card, in the CSV and the page
        assert (lite_pred[f"referable_{k}"] == (lite_pred["p_referable"] >= t)).all()
        assert f"(p &ge; {t:.4f})" in (tmp_path / "l" / "report.html").read_text()
    # The export's own held-out check is the same measure, on exactly --check rows
    # none of which it calibrated on, recorded in the run record.
    run = json.loads(exported[quantize].with_name(exported[quantize].name + ".run.json").read_text())
    res = run["results"]
    assert res["difference"] <= TOL[quantize]
    assert res["measure"] == "mean |delta referable probability|"
    assert res["check_rows"] == CHECK
    assert res["calibration_rows"] == (SAMPLES if quantize == "int8" else 0)


def test_int8_is_smaller_and_evaluate_accepts_it(tiny, exported, keras_pred, tmp_path):
    keras_bytes = tiny.members[0].stat().st_size
    assert exported["int8"].stat().st_size < exported["float16"].stat().st_size < keras_bytes
    assert main(["retinopathy", "evaluate", "--model", str(exported["float16"]), "--labels",
                 str(tiny.labels), "--split", "all", "--out", str(tmp_path / "lite"),
                 "--n-boot", "20", "--cache", str(tiny.cache)]) == 0
    m = json.loads((tmp_path / "lite" / "metrics.json").read_text())
    # Against the Keras model's predictions of the same photographs, scored by hand.
    rows = pd.read_csv(tmp_path / "lite" / "predictions.csv", dtype={"image": str})
    ref = rows[["image", "grade", "referable_true"]].merge(keras_pred, on="image",
                                                            suffixes=("_true", ""))
    assert m["n"] == len(ref) == len(tiny.photos) >= 12
    assert m["auc"] == pytest.approx(roc_auc_score(ref["referable_true"], ref["p_referable"]),
                                     abs=0.02)
    confusion = np.zeros((5, 5), int)
    np.add.at(confusion, (ref["grade_true"].to_numpy(), ref[GRADES].to_numpy().argmax(1)), 1)
    assert m["confusion"] == confusion.tolist()


def test_bad_tflite_files_and_explain_give_one_line(tiny, exported, tmp_path, capsys):
    photo = str(tiny.photos[0])
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
    err = _one_line(capsys, ["retinopathy", "export", str(tiny.teacher), "--out",
                             str(tmp_path / "e.tflite")])
    assert "ensemble of 2" in err
    assert not (tmp_path / "o").exists()


def _soft(z, t):
    z = np.asarray(z, np.float64) / t
    if z.shape[-1] == 1:
        return 1 / (1 + np.exp(-z))
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_distill_writes_a_normal_model_with_cached_teacher_targets(tiny, distilling, tmp_path):
    out = distilling.out
    rc = distilling.proc.wait(timeout=900)
    assert rc == 0, distilling.log.read_text()[-3000:]
    card = json.loads((out / "member_0" / "model.card.json").read_text())
    d = card["training"]["distillation"]
    assert d["temperature"] == 2.0 and d["alpha"] == 0.6 and d["student"]["width"] == 4
    assert d["teacher"] == [str(m) for m in tiny.members]
    assert card["training"]["command"] == "retinopathy distill" and card["extra"]["width"] == 4
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "done" and run["config"]["accel"]["logical_cpus"] == 2
    info = json.loads((out / "ensemble.json").read_text())
    assert info["members"] == ["member_0/model.keras"] and "high_sensitivity" in info["operating_points"]
    # The cache holds the teacher's mean softened outputs on the training + validation images.
    shards = sorted((out / "teacher-cache").glob("*/shard-*.npz"))
    assert len(shards) == 1
    splits = pd.read_csv(out / "splits.csv")
    usable = splits[(splits["gradable"] == 1) & splits["cache"].notna() & (splits["grade"] >= 0)]
    rows = pd.concat([usable[usable["split"] == s] for s in ("train", "val")])
    assert d["data"]["train_images"] + d["data"]["val_images"] == len(rows)
    assert d["data"]["train_images"] > 0 and d["data"]["val_images"] > 0
    x = to_input(load_cached(rows["cache"].tolist()))
    outs = [m(x, training=False) for m in tiny.models]  # the saved members' weights
    with np.load(shards[0]) as z:
        for head in HEADS:
            want = np.mean([_soft(o[head].numpy(), 2.0) for o in outs], axis=0)
            np.testing.assert_allclose(z[head], want, atol=1e-5)
    # A rerun (here, in this process) resumes: the finished student and its
    # teacher shard are kept as they are.
    before = (shards[0].stat().st_mtime_ns, (out / "member_0" / "model.keras").stat().st_mtime_ns)
    assert main(distilling.args) == 0
    assert (shards[0].stat().st_mtime_ns,
            (out / "member_0" / "model.keras").stat().st_mtime_ns) == before
    # The student is a normal model: predict takes its folder.
    pred = _predict(tiny, out, tmp_path / "pred", files=tiny.photos[:6])
    assert len(pred) == 6
    np.testing.assert_allclose(pred[GRADES].sum(1), 1, atol=1e-4)
