"""CLI end to end on tiny data: train → evaluate → predict, label, bad inputs; overfitting."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepsci.apps.cli import main
from deepsci.apps.molecules import synth

TINY = ["--units", "16", "--edge-hidden", "8,4", "--steps", "2", "--batch-size", "16",
        "--no-tensorboard", "--lr", "3e-3", "--lr-schedule", "constant"]


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    d = tmp_path_factory.mktemp("mol")
    ms = synth.synthetic_set()
    return synth.write_csv_set(ms, d / "train.csv")


def test_train_evaluate_predict(data_csv, tmp_path, capsys, check_reported_mae):
    run = tmp_path / "run"
    rc = main(["molecules", "train", "--data", str(data_csv), "--out", str(run), "--epochs", "1",
               "--targets", "gap,u0,mu", "--val", "0.2", "--test", "0.2", "--ensemble", "2", *TINY])
    assert rc == 0, capsys.readouterr().err
    assert "validation MAE" in capsys.readouterr().out
    for f in ("run.json", "split.json", "test_set.csv.gz", "ensemble.json", "member_0/model.keras",
              "member_1/model.card.json", "member_0/history.json"):
        assert (run / f).exists(), f
    card = json.loads((run / "member_1/model.card.json").read_text())
    assert card["app"] == "molecules" and list(card["outputs"]) == ["gap", "u0", "mu"]
    assert card["outputs"]["u0"]["unit"] == "eV" and card["training"]["seed"] == 1
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "done" and record["config"]["targets"] == ["gap", "u0", "mu"]
    assert record["results"]["n_train"] + record["results"]["n_val"] + record["results"]["n_test"] == 46

    rc = main(["molecules", "evaluate", "--model", str(run)])
    out = capsys.readouterr().out
    assert rc == 0 and "MAE / chem. acc." in out
    metrics = json.loads((run / "eval/metrics.json").read_text())["targets"]
    # The reported metrics are those of the written predictions against the held-out labels.
    check_reported_mae(metrics, run / "eval/predictions.csv", run / "test_set.csv.gz", out,
                       {"gap": "eV", "u0": "eV", "mu": "D"})
    assert (run / "eval/parity.png").stat().st_size > 1000
    # One record per output folder, and none of the old per-command copies of the config.
    assert sorted(p.relative_to(run) for p in run.rglob("run.json")) == \
        [Path("eval/run.json"), Path("run.json")]
    for old in ("config.json", "run_info.json", "summary.json", "member_0/model.json"):
        assert not (run / old).exists() and not (run / "eval" / old).exists(), old

    smi = tmp_path / "new.smi"
    smi.write_text("CCO ethanol\nc1ccccc1 benzene\nCC(C)(C)O\n")
    pred = tmp_path / "pred.csv"
    rc = main(["molecules", "predict", str(smi), "--model", str(run), "--out", str(pred)])
    assert rc == 0, capsys.readouterr().err
    df = pd.read_csv(pred)
    rc = main(["molecules", "predict", str(smi), "--model", str(run), "--out", str(tmp_path / "x.csv"), "--xla"])
    assert rc == 0, capsys.readouterr().err
    np.testing.assert_allclose(pd.read_csv(tmp_path / "x.csv")["gap [eV]"], df["gap [eV]"],
                               rtol=1e-5, atol=1e-5)
    assert list(df["id"][:2]) == ["ethanol", "benzene"] and len(df) == 3
    assert {"gap [eV]", "gap_std [eV]", "u0 [eV]", "mu [D]", "xyz"} <= set(df.columns)
    assert (tmp_path / "pred.csv.run.json").exists() and not (tmp_path / "run_info.json").exists()
    # The ensemble columns are the mean and sample std of the members' own predictions.
    members = []
    for k in (0, 1):
        rc = main(["molecules", "predict", str(smi), "--model", str(run / f"member_{k}/model.keras"), "--out",
                   str(tmp_path / f"m{k}.csv")])
        assert rc == 0, capsys.readouterr().err
        members.append(pd.read_csv(tmp_path / f"m{k}.csv"))
        assert "gap_std [eV]" not in members[-1].columns
    for col in ("gap [eV]", "u0 [eV]", "mu [D]"):
        both = np.stack([m[col].to_numpy() for m in members])
        np.testing.assert_allclose(df[col], both.mean(axis=0), rtol=1e-5, atol=1e-6)
        std_col = col.replace(" [", "_std [")
        # Members' float32 outputs vary in the last digits from run to run, which the std
        # of two close values amplifies; a population std (ddof=0) would be 29 % off.
        scale = 2e-6 * float(np.abs(both).max())
        np.testing.assert_allclose(df[std_col], both.std(axis=0, ddof=1), rtol=0.05, atol=scale)
    # atomref makes even an untrained-ish model put U0 on the right scale (~ -4200 eV for ethanol).
    assert -6000 < df["u0 [eV]"][0] < -2000

    # A bad row names the file and line; --skip-invalid skips it and says how many.
    bad = tmp_path / "bad.smi"
    bad.write_text("CCO\nC1CC broken\nCCl chloro\n")
    rc = main(["molecules", "predict", str(bad), "--model", str(run), "--out", str(tmp_path / "b.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "line 2" in err[0] and "bad.smi" in err[0]
    assert not (tmp_path / "b.csv").exists()
    rc = main(["molecules", "predict", str(bad), "--model", str(run), "--out", str(tmp_path / "b.csv"),
               "--skip-invalid"])
    assert rc == 0 and "skipped 2 invalid molecule(s)" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "b.csv")) == 1

    # Rerunning train with the same folder resumes: finished members are kept.
    before = (run / "member_0/model.keras").stat().st_mtime_ns
    rc = main(["molecules", "train", "--data", str(data_csv), "--out", str(run), "--epochs", "1",
               "--targets", "gap,u0,mu", "--val", "0.2", "--test", "0.2", "--ensemble", "2", *TINY])
    assert rc == 0 and (run / "member_0/model.keras").stat().st_mtime_ns == before


def test_label_water_hf_sto3g(tmp_path, capsys):
    pytest.importorskip("pyscf")
    xyz = tmp_path / "water.xyz"
    xyz.write_text("3\nwater\nO -0.0343604951 0.9775395708 0.0076015923\n"
                   "H 0.0647664923 0.0205721989 0.0015346341\nH 0.8717903737 1.3007924048 0.0006931336\n")
    out = tmp_path / "labels.csv"
    rc = main(["molecules", "label", str(xyz), "--out", str(out), "--method", "hf/sto-3g"])
    assert rc == 0, capsys.readouterr().err
    df = pd.read_csv(out)
    row = df.iloc[0]
    # HF/STO-3G water at the QM9 geometry: HOMO ≈ -10.65 eV, μ ≈ 1.72 D, ⟨R²⟩ ≈ 17.9 a0².
    assert row["homo [eV]"] == pytest.approx(-10.654, abs=0.02)
    assert row["gap [eV]"] == pytest.approx(row["lumo [eV]"] - row["homo [eV]"])
    assert row["mu [D]"] == pytest.approx(1.7245, abs=0.01)
    assert row["r2 [a0^2]"] == pytest.approx(17.90, abs=0.05)
    assert 1.5 < row["alpha [a0^3]"] < 4.0
    assert not (tmp_path / ".labels.csv.state").exists()
    assert json.loads((tmp_path / "labels.csv.run.json").read_text())["config"]["method"] == "hf/sto-3g"
    # The output is the format `train` reads.
    from deepsci.apps.molecules.io import read_molecules

    ms = read_molecules(out, targets=["gap", "mu"])
    assert ms.targets["mu"].iloc[0] == pytest.approx(row["mu [D]"])


@pytest.mark.parametrize("argv,msg", [
    (["molecules", "train", "--data", "missing.csv"], "expected an existing molecule file"),
    (["molecules", "train", "--split", "time"], "expected --split"),
    (["molecules", "evaluate", "--model", "nowhere.keras"], "expected a trained model"),
    (["molecules", "label", "x.smi", "--method", "b3lyp"], "expected --method"),
    (["molecules", "label", "x.smi"], "expected an existing molecule file"),
    # Out-of-range options are refused by validate() before anything is read or written.
    (["molecules", "train", "--units", "0"], "expected --units >= 1, found 0"),
    (["molecules", "train", "--edge-hidden", "8,0"], "expected --edge-hidden as sizes >= 1"),
    (["molecules", "train", "--ensemble", "0"], "expected --ensemble >= 1, found 0"),
    (["molecules", "train", "--seed", "-1"], "expected --seed >= 0, found -1"),
    (["molecules", "train", "--limit", "1"], "expected --limit >= 2, found 1"),
    (["molecules", "train", "--time-budget", "0"], "expected --time-budget > 0, found 0"),
    (["molecules", "train", "--val", "1.5"], "expected --val as a fraction < 1 or a count"),
    (["molecules", "predict", "x.smi", "--model", "m.keras", "--batch-size", "0"], "expected --batch-size >= 1"),
    (["molecules", "evaluate", "--model", "m.keras", "--batch-size", "0"], "expected --batch-size >= 1"),
    (["molecules", "label", "x.smi", "--field", "0.5"], "expected --field in (0, 0.05) au"),
])
def test_cli_bad_inputs(argv, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main([*argv, "--out", str(tmp_path / "out")] if "--out" not in argv else argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and msg in err[0], err
    assert list(tmp_path.iterdir()) == []  # nothing written, not even an empty folder


def test_cli_invalid_smiles_row_and_skip(data_csv, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    df = pd.read_csv(data_csv)
    df.loc[3, "xyz"] = np.nan
    df.loc[3, "smiles"] = "C1CC"
    df.to_csv(bad, index=False)
    args = ["molecules", "train", "--data", str(bad), "--out", str(tmp_path / "r"), "--epochs", "1",
            "--targets", "gap", *TINY]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and "row 5" in err and "C1CC" in err
    assert not (tmp_path / "r" / "member_0").exists()


def test_train_scaffold_split_with_time_budget(data_csv, tmp_path, capsys):
    from rdkit.Chem.Scaffolds import MurckoScaffold

    run = tmp_path / "run"
    rc = main(["molecules", "train", "--data", str(data_csv), "--out", str(run), "--epochs", "50",
               "--targets", "gap", "--split", "scaffold", "--val", "0.2", "--test", "0.2",
               "--time-budget", "0.02", *TINY])
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((run / "run.json").read_text())["config"]
    assert cfg["split"] == "scaffold" and cfg["time_budget"] == 0.02
    # A 1.2-second budget ends long before 50 epochs (the first one always runs).
    history = json.loads((run / "member_0/history.json").read_text())
    assert 1 <= len(history) < 50
    split = json.loads((run / "split.json").read_text())
    smiles = dict(zip(pd.read_csv(data_csv)["id"], pd.read_csv(data_csv)["smiles"], strict=True))
    scaffold = {k: MurckoScaffold.MurckoScaffoldSmiles(smiles=smiles[k]) for k in smiles}
    sets = {name: {scaffold[i] for i in split[name]} for name in ("train", "val", "test")}
    assert split["test"] and split["val"]
    assert not sets["test"] & sets["train"] and not sets["val"] & sets["train"]

    # The budget needs a schedule that does not depend on the epoch count.
    rc = main(["molecules", "train", "--data", str(data_csv), "--out", str(tmp_path / "r2"),
               "--time-budget", "1", "--lr-schedule", "cosine", *TINY[:-2]])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and "cosine" in err[0]


def test_config_rerun_reproduces_the_recorded_run(data_csv, tmp_path, capsys):
    """`--config <out>/run.json --out <other>` re-runs train and predict with the same results."""
    first, second = tmp_path / "a", tmp_path / "b"
    rc = main(["molecules", "train", "--data", str(data_csv), "--out", str(first), "--epochs", "1",
               "--targets", "gap", "--val", "0.2", "--test", "0.2", "--seed", "3", *TINY])
    assert rc == 0, capsys.readouterr().err
    rc = main(["molecules", "train", "--config", str(first / "run.json"), "--out", str(second)])
    assert rc == 0, capsys.readouterr().err
    a, b = (json.loads((d / "run.json").read_text()) for d in (first, second))
    assert b["config"] == {**a["config"], "out": str(second)}
    assert b["config"]["model"]["edge_hidden"] == [8, 4] and b["config"]["train"]["learning_rate"] == 3e-3
    assert (first / "split.json").read_text() == (second / "split.json").read_text()
    assert a["results"]["val_mae"]["gap"] == pytest.approx(b["results"]["val_mae"]["gap"], rel=1e-5)

    smi = tmp_path / "new.smi"
    smi.write_text("CCO ethanol\nN#CC#N\n")
    rc = main(["molecules", "predict", str(smi), "--model", str(first), "--out", str(tmp_path / "p.csv")])
    assert rc == 0, capsys.readouterr().err
    rc = main(["molecules", "predict", "--config", str(tmp_path / "p.csv.run.json"), "--out",
               str(tmp_path / "q.csv")])
    assert rc == 0, capsys.readouterr().err
    p, q = pd.read_csv(tmp_path / "p.csv"), pd.read_csv(tmp_path / "q.csv")
    assert list(p["id"]) == ["ethanol", "new.smi:2"]
    pd.testing.assert_frame_equal(p, q)


def test_another_apps_model_is_refused_in_one_line(data_csv, tmp_path, capsys):
    """A model whose card names another app, or that has no card, is one error line, status 2."""
    run = tmp_path / "run"
    rc = main(["molecules", "train", "--data", str(data_csv), "--out", str(run), "--epochs", "1",
               "--targets", "gap", *TINY])
    assert rc == 0, capsys.readouterr().err
    model = run / "member_0/model.keras"
    card = json.loads(model.with_suffix(".card.json").read_text())
    smi = tmp_path / "x.smi"
    smi.write_text("CCO\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.keras").write_bytes(model.read_bytes())
    (other / "model.card.json").write_text(json.dumps({**card, "app": "variants", "task": "genotype"}))
    nocard = tmp_path / "nocard"
    nocard.mkdir()
    (nocard / "model.keras").write_bytes(model.read_bytes())
    for path, msg in ((other / "model.keras", "expected a molecules model, found a variants model"),
                      (nocard / "model.keras", "expected the model card model.card.json")):
        for verb in (["predict", str(smi), "--model", str(path), "--out", str(tmp_path / "o.csv")],
                     ["evaluate", "--model", str(path), "--data", str(data_csv), "--out", str(tmp_path / "e")]):
            rc = main(["molecules", *verb])
            err = capsys.readouterr().err.strip().splitlines()
            assert rc == 2 and len(err) == 1 and msg in err[0] and str(path) in err[0], err
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "e").exists()
