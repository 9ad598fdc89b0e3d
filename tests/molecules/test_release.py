"""The shipped molecules model: tiny build, card, default --model, shipped names, shipped demo."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepsci.apps.cli import main
from deepsci.apps.molecules import release
from deepsci.apps.molecules.baseline import descriptors, predict_ridge
from deepsci.apps.molecules.graphs import featurize_set
from deepsci.apps.molecules.io import bundled_subset, read_molecules
from deepsci.apps.molecules.predict import predict_table
from deepsci.apps.molecules.train import load_dataset, split_indices

NAME = release.NAME


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A models root with the tiny build and a model of another app."""
    root = tmp_path_factory.mktemp("models")
    paths = release.build(root, tiny=True)
    assert paths == [root / NAME / "model.keras"]
    assert sorted(p.name for p in root.iterdir()) == [NAME]  # no work or temp folder left
    other = root / "variants-other"
    other.mkdir()
    shutil.copy(paths[0], other / "model.keras")
    card = json.loads((root / NAME / "model.card.json").read_text())
    card.update(app="variants", task="call", name="variants-other")
    card["extra"]["shipped"]["default"] = False
    (other / "model.card.json").write_text(json.dumps(card))
    return root


@pytest.fixture
def use_registry(registry, monkeypatch):
    monkeypatch.setenv("DEEPSCI_MODELS", str(registry))
    return registry


def _tiny_split():
    cfg = release.build_config(None, tiny=True)
    ms = load_dataset(cfg.data, limit=cfg.limit, seed=cfg.seed)
    return ms, split_indices(ms, kind=cfg.split, val=cfg.val, test=cfg.test, seed=cfg.seed)


def test_card_and_recorded_metrics(registry):
    folder = registry / NAME
    card = json.loads((folder / "model.card.json").read_text())
    assert card["name"] == NAME and card["app"] == "molecules"
    assert card["extra"]["shipped"]["default"] is True
    assert card["extra"]["shipped"]["build_seconds"] > 0 and card["training"]["cpu_seconds"] > 0
    assert card["training"]["steps"] == card["extra"]["shipped"]["build_steps"] > 0
    assert card["data"]["synthetic_only"] is False and "CC BY 4.0" in card["data"]["licence"]
    assert card["data"]["seeds"]["split"] == 0
    ms, (tr, va, te) = _tiny_split()
    split = json.loads((folder / "test_split.json").read_text())
    assert split["test_qm9_indices"] == [release.qm9_index(ms.ids[i]) for i in te]
    train_ids = {release.qm9_index(ms.ids[i]) for i in np.concatenate([tr, va])}
    assert not train_ids & set(split["test_qm9_indices"])
    # The card's held-out numbers are those of the saved model and baseline on those molecules.
    ridge = json.loads((folder / "baseline.json").read_text())
    names = list(card["outputs"])
    for key, idx in (("validation", va), ("test", te)):
        sub = ms.subset(idx)
        y = sub.targets[names].to_numpy(np.float64)
        pred, _ = predict_table([folder / "model.keras"], featurize_set(sub, "bond"))
        base = predict_ridge(ridge, descriptors(sub.mols))
        for j, n in enumerate(names):
            got = card["metrics"][key][n]
            assert got["mae"] == pytest.approx(np.mean(np.abs(pred[:, j] - y[:, j])), rel=1e-5)
            assert got["ridge_rdkit_mae"] == pytest.approx(np.mean(np.abs(base[:, j] - y[:, j])),
                                                           rel=1e-9)
            ca = got["chemical_accuracy"]
            assert ca is None or got["ratio_to_chemical_accuracy"] == pytest.approx(got["mae"] / ca)


def test_ridge_recovers_a_linear_law():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)) * [1, 10, 0.1, 3, 1]
    y = np.stack([x @ [1, -2, 3, 0.5, 0] + 4, x[:, 0] * 2], axis=1)
    from deepsci.apps.molecules.baseline import fit_ridge

    fit = fit_ridge(x, y, alpha=1e-8)
    assert np.allclose(predict_ridge(fit, x), y, atol=1e-5)


def test_predict_without_model_uses_default(use_registry, tmp_path, capsys):
    smi = tmp_path / "new.smi"
    smi.write_text("CCO\nc1ccccc1\n")
    out = tmp_path / "p.csv"
    assert main(["molecules", "predict", str(smi), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"model: {NAME} (shipped default; `deepsci models info {NAME}`)" in err.splitlines()
    by_name = tmp_path / "q.csv"
    assert main(["molecules", "predict", str(smi), "--model", NAME, "--out", str(by_name)]) == 0
    assert f"model: {NAME} (shipped)" in capsys.readouterr().err.splitlines()
    a, b = pd.read_csv(out), pd.read_csv(by_name)
    assert a.shape[0] == 2 and a.equals(b)
    # The same numbers as the model file given by path.
    by_path = tmp_path / "r.csv"
    assert main(["molecules", "predict", str(smi), "--model", str(use_registry / NAME / "model.keras"),
                 "--out", str(by_path)]) == 0
    assert pd.read_csv(by_path).equals(a)


def test_other_apps_model_name_is_refused(use_registry, tmp_path, capsys):
    smi = tmp_path / "new.smi"
    smi.write_text("CCO\n")
    rc = main(["molecules", "predict", str(smi), "--model", "variants-other", "--out",
               str(tmp_path / "o.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "molecules" in err[0] and "variants" in err[0], err
    assert not (tmp_path / "o.csv").exists()
    rc = main(["molecules", "predict", str(smi), "--model", "no-such-model", "--out",
               str(tmp_path / "o.csv")])
    assert rc == 2 and NAME in capsys.readouterr().err


def test_evaluate_without_model(use_registry, tmp_path, capsys):
    data = tmp_path / "held.csv"
    sub = pd.read_csv(bundled_subset()).head(20)
    sub.to_csv(data, index=False)
    assert main(["molecules", "evaluate", "--data", str(data), "--out", str(tmp_path / "e")]) == 0
    assert f"model: {NAME} (shipped default" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "e/metrics.json").read_text())["targets"]
    pred = pd.read_csv(tmp_path / "e/predictions.csv")
    ms = read_molecules(data)
    assert metrics["gap"]["mae"] == pytest.approx(
        np.mean(np.abs(pred["gap [eV]"].to_numpy() - ms.targets["gap"].to_numpy())), rel=1e-6)


def test_shipped_demo_rows_recomputable(use_registry, tmp_path):
    from deepsci.apps.molecules.demo import run_demo

    res = run_demo(tmp_path / "d", quick=True)
    pred = pd.read_csv(tmp_path / "d/predictions.csv")
    split = json.loads((use_registry / NAME / "test_split.json").read_text())
    # Only held-out molecules are scored.
    assert len(pred) > 0 and set(pred["qm9_index"]) <= set(split["test_qm9_indices"])
    rows = {r.metric: r for r in res.rows}
    for n, unit in (("gap", "eV"), ("u0", "eV"), ("mu", "D"), ("alpha", "a0^3")):
        r = rows[f"{n} MAE [{unit}]"]
        assert r.model == NAME and f"{len(pred)} QM9 molecules" in r.data
        assert r.deepsci == pytest.approx((pred[f"{n}_mpnn"] - pred[f"{n}_true"]).abs().mean(),
                                          abs=1e-4)
        assert r.baseline == pytest.approx((pred[f"{n}_ridge"] - pred[f"{n}_true"]).abs().mean(),
                                           abs=1e-4)
        assert r.verdict == ("ahead" if r.deepsci < r.baseline else "behind")
    # The SDF the report links: the same molecules, with the MPNN's predictions as tags.
    from rdkit import Chem

    assert [Path(v.path).name for v in res.viewers] == ["predictions.sdf"]
    sdf = [m for m in Chem.SDMolSupplier(str(tmp_path / "d/predictions.sdf"), removeHs=False)]
    assert len(sdf) == len(pred) and all(m is not None and m.GetNumConformers() == 1 for m in sdf)
    for m, (_, row) in zip(sdf, pred.iterrows(), strict=True):
        assert m.GetProp("id") == str(row["id"])
        assert float(m.GetProp("gap [eV]")) == pytest.approx(row["gap_mpnn"], rel=1e-6, abs=1e-9)
    speed = rows["CPU ms per molecule (network vs DFT)"]
    assert speed.baseline == 307.2e3 and 0 < speed.deepsci < speed.baseline
