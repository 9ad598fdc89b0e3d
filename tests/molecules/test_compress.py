"""Export to LiteRT and distillation for molecules, on tiny synthetic data.

Tolerances: float16 and float32 files keep the Keras predictions to 1e-3 of
each target's spread (float16 weights); int8 to 0.25 of it on these
under-trained tiny models (the export's own check measures the shift, and the
bench the MAE change on QM9).
"""
import json

import numpy as np
import pandas as pd
import pytest

from deepsci.apps.cli import main
from deepsci.apps.molecules import synth

TINY = ["--units", "16", "--edge-hidden", "8,4", "--steps", "2", "--batch-size", "16",
        "--no-tensorboard", "--lr", "3e-3", "--lr-schedule", "constant"]
TARGETS = {"gap": "eV", "u0": "eV", "mu": "D"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-member ensemble trained 1 epoch, its data and a SMILES file."""
    d = tmp_path_factory.mktemp("molc")
    data = synth.write_csv_set(synth.synthetic_set(), d / "train.csv")
    run = d / "run"
    rc = main(["molecules", "train", "--data", str(data), "--out", str(run), "--epochs", "2",
               "--targets", ",".join(TARGETS), "--val", "0.2", "--test", "0.2", "--ensemble", "2",
               *TINY])
    assert rc == 0
    smi = d / "new.smi"
    smi.write_text("CCO ethanol\nc1ccccc1 benzene\nCC(C)(C)O\nOC1CCNCC1\nN#CC(=O)O\n")
    return {"data": data, "run": run, "smi": smi, "dir": d}


def _predict(model, smi, out, capsys):
    rc = main(["molecules", "predict", str(smi), "--model", str(model), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    return pd.read_csv(out)


@pytest.mark.parametrize("quantize,tol", [("float16", 1e-3), ("none", 1e-5), ("int8", 0.25)])
def test_export_then_predict_and_evaluate_match_keras(tiny, tmp_path, capsys, quantize, tol):
    member = tiny["run"] / "member_0/model.keras"
    out = tmp_path / f"m_{quantize}.tflite"
    rc = main(["molecules", "export", str(member), "--out", str(out), "--quantize", quantize,
               "--inputs", str(tiny["data"]), "--samples", "24", "--check", "20",
               "--batch-size", "8", "--tolerance", "10"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.with_name(out.stem + ".card.json").read_text())["extra"]["litert"]
    assert report["quantize"] == quantize and report["n_inputs"] == 3
    if quantize == "int8":
        # The messages' segment sum stays float; the GRU and set2set are integer.
        assert "UNSORTED_SEGMENT_SUM" in report["float_ops"]
        assert not {"FULLY_CONNECTED", "LOGISTIC", "TANH", "SOFTMAX"} & set(report["float_ops"])
    ref = _predict(member, tiny["smi"], tmp_path / "k.csv", capsys)
    got = _predict(out, tiny["smi"], tmp_path / "t.csv", capsys)
    assert list(got["id"]) == list(ref["id"])
    train = pd.read_csv(tiny["data"])
    for name, unit in TARGETS.items():
        col = f"{name} [{unit}]"
        spread = float(train[col].std())
        np.testing.assert_allclose(got[col], ref[col], atol=tol * spread, rtol=0)
    # evaluate scores the .tflite on the held-out set like the Keras member.
    for model, folder in ((member, "ek"), (out, "et")):
        rc = main(["molecules", "evaluate", "--model", str(model), "--data",
                   str(tiny["run"] / "test_set.csv.gz"), "--out", str(tmp_path / folder)])
        assert rc == 0, capsys.readouterr().err
    mk = json.loads((tmp_path / "ek/metrics.json").read_text())["targets"]
    mt = json.loads((tmp_path / "et/metrics.json").read_text())["targets"]
    for name in TARGETS:
        spread = float(train[f"{name} [{TARGETS[name]}]"].std())
        assert mt[name]["mae"] == pytest.approx(mk[name]["mae"], abs=tol * spread)


def test_export_refuses_a_shift_over_the_tolerance(tiny, tmp_path, capsys):
    out = tmp_path / "q.tflite"
    rc = main(["molecules", "export", str(tiny["run"] / "member_0/model.keras"), "--out", str(out),
               "--inputs", str(tiny["data"]), "--samples", "24", "--check", "20",
               "--batch-size", "8", "--tolerance", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "raise --tolerance" in err[0], err
    assert not out.exists()


def test_corrupt_or_foreign_tflite_is_one_line(tiny, tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 8)
    good = tmp_path / "good.tflite"
    rc = main(["molecules", "export", str(tiny["run"] / "member_0/model.keras"), "--out", str(good),
               "--quantize", "none", "--inputs", str(tiny["data"]), "--samples", "8",
               "--check", "8", "--batch-size", "8"])
    assert rc == 0, capsys.readouterr().err
    card = json.loads(good.with_name("good.card.json").read_text())
    bad.with_name("bad.card.json").write_text(json.dumps(card))
    other = tmp_path / "other.tflite"
    other.write_bytes(good.read_bytes())
    other.with_name("other.card.json").write_text(json.dumps({**card, "app": "variants",
                                                              "task": "genotype"}))
    for path, msg in ((bad, "expected a LiteRT model"), (other, "found a variants model")):
        rc = main(["molecules", "predict", str(tiny["smi"]), "--model", str(path), "--out",
                   str(tmp_path / "o.csv")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and msg in err[0], err
    assert not (tmp_path / "o.csv").exists()


def test_distill_from_two_members_with_unlabelled_molecules(tiny, tmp_path, capsys, monkeypatch):
    from deepsci.apps.molecules import compress

    monkeypatch.setattr(compress, "TEACHER_CHUNK", 8)  # several shards, so one can go missing
    out = tmp_path / "student"
    teacher = f"{tiny['run'] / 'member_0/model.keras'},{tiny['run'] / 'member_1/model.keras'}"
    argv = ["molecules", "distill", "--teacher", teacher, "--data", str(tiny["data"]),
            "--unlabelled", str(tiny["smi"]), "--out", str(out), "--epochs", "1", "--alpha", "0.6",
            "--temperature", "2", "--units", "8", "--edge-hidden", "4,4", "--head", "8",
            "--val", "0.2", "--test", "0.2", "--batch-size", "16"]
    rc = main(argv)
    assert rc == 0, capsys.readouterr().err
    card = json.loads((out / "member_0/model.card.json").read_text())
    d = card["training"]["distillation"]
    assert d["temperature"] == 2.0 and d["alpha"] == 0.6 and len(d["teacher"]) == 2
    assert d["data"]["n_unlabelled"] == 5 and card["training"]["command"] == "molecules distill"
    assert card["extra"]["model_config"]["units"] == 8 and list(card["outputs"]) == list(TARGETS)
    # The cache holds the two members' mean on the training (+ unlabelled) and validation
    # molecules, in that order: the unlabelled ones are the last training rows.
    from deepsci.apps.molecules.graphs import featurize_set
    from deepsci.apps.molecules.io import read_molecules
    from deepsci.apps.molecules.predict import predict_table
    from deepsci.core.models.serialization import load_model

    shards = sorted((out / "teacher-cache").glob("shard-*.npz"))
    assert shards
    split = json.loads((out / "split.json").read_text())
    n_tr, n_all = len(split["train"]), len(split["train"]) + 5 + len(split["val"])
    # Each shard is one padded batch of 8 molecules (+ the padding molecule's row).
    cached = np.concatenate([np.load(s)["output"][:8] for s in shards])[:n_all]
    table = featurize_set(read_molecules(tiny["smi"]), "bond", workers=1)
    members = [load_model(tiny["run"] / f"member_{k}/model.keras", expect="molecules")[0]
               for k in (0, 1)]
    mean, _ = predict_table(members, table)
    np.testing.assert_allclose(cached[n_tr:n_tr + 5], mean, rtol=1e-4, atol=1e-4)
    # The student is a normal model folder: predict and evaluate take it.
    pred = _predict(out, tiny["smi"], tmp_path / "s.csv", capsys)
    assert len(pred) == 5 and "gap [eV]" in pred.columns
    rc = main(["molecules", "evaluate", "--model", str(out)])
    assert rc == 0, capsys.readouterr().err
    # Resumes: a removed shard is recomputed, identical, and the others are kept.
    keep = shards[0].stat().st_mtime_ns
    shards[-1].unlink()
    rc = main(argv)
    assert rc == 0, capsys.readouterr().err
    again = np.concatenate([np.load(s)["output"][:8] for s in shards])[:n_all]
    np.testing.assert_allclose(again, cached, rtol=1e-5, atol=1e-5)
    assert shards[0].stat().st_mtime_ns == keep
