"""The shipped connectomics models: tiny build, cards, default-model wiring of `segment`, the shipped demo."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepsci.apps.cli import main

FFN, AGGLO = "connectomics-neuroproof-ffn", "connectomics-neuroproof-agglo"
SFFN, SAGGLO = "connectomics-synthetic-ffn", "connectomics-synthetic-agglo"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from deepsci.apps.connectomics.release import build

    out = tmp_path_factory.mktemp("models")
    written = build(out, tiny=True)
    assert [p.parent.name for p in written] == [FFN, AGGLO, SFFN, SAGGLO]
    assert all(p.is_file() for p in written)
    # A model of another app, to be refused by name.
    other = out / "molecules-demo"
    other.mkdir()
    (other / "model.keras").write_bytes(b"never loaded: the card is checked first")
    (other / "model.card.json").write_text(json.dumps({"schema": "deepsci.card/1", "app": "molecules",
                                                       "task": "qm9-properties", "name": "molecules-demo"}))
    return out


@pytest.fixture
def registry(root, monkeypatch):
    monkeypatch.setenv("DEEPSCI_MODELS", str(root))
    return root


def _volume(card, split):
    from deepsci.apps.connectomics.synth import synthetic_volume

    synth = {k: tuple(v) if isinstance(v, list) else v for k, v in card.data["synth"].items()}
    return synthetic_volume(seed=card.data["seeds"][split], **synth)


def test_registry_defaults_and_cards(registry):
    from deepsci.apps.connectomics.demo import DEMO_SEED
    from deepsci.core.models.registry import default_model, shipped, shipped_models

    assert default_model("connectomics", "ffn").name == FFN
    assert default_model("connectomics", "agglo").name == AGGLO
    names = {m.name for m in shipped_models() if m.card.app == "connectomics"}
    assert names == {FFN, AGGLO, SFFN, SAGGLO}
    for name in names:
        m = shipped(name)
        c = m.card
        assert c.name == name and m.default == (name in (FFN, AGGLO))
        assert c.data["synthetic_only"] is True and c.data["licence"] and c.data["seeds"]
        assert DEMO_SEED not in c.data["seeds"].values()
        assert set(c.metrics) == {"validation", "test"}
        for split in ("validation", "test"):
            assert c.metrics[split]["vi_total"] == pytest.approx(c.metrics[split]["vi_split"]
                                                                 + c.metrics[split]["vi_merge"])
            assert "watershed_vi_total" in c.metrics[split]
        assert c.extra["shipped"]["build_seconds"] > 0 and "2 CPU cores" in c.extra["shipped"]["build_machine"]
        assert c.training["rebuild"] == "deepsci models build connectomics --tiny"
        assert c.intended_use and c.limitations and c.commit
    ffn, agglo = shipped(FFN).card, shipped(AGGLO).card
    assert ffn.task == "ffn" and agglo.task == "agglo" and ffn.extra["agglo_model"] == AGGLO
    assert agglo.metrics == ffn.metrics and agglo.training["ffn"] == FFN
    steps = ffn.training["steps_seconds"]
    assert steps["ffn_train"]["steps"] == 30 and set(steps) == {"ffn_train", "train_agglo", "scoring"}


def test_card_metrics_recomputed_from_the_saved_models(registry, tmp_path):
    """The validation scores on the card are those of the saved models on the recorded validation volume."""
    from deepsci.apps.connectomics.baseline import watershed_baseline
    from deepsci.apps.connectomics.config import BaselineConfig
    from deepsci.apps.connectomics.io import write_volume
    from deepsci.apps.connectomics.release import learned_segment, scores
    from deepsci.core.models.registry import shipped

    for ffn_name in (FFN, SFFN):
        m = shipped(ffn_name)
        agglo = shipped(m.card.extra["agglo_model"])
        img, gt = _volume(m.card, "validation")
        write_volume(tmp_path / f"{ffn_name}.zarr", {"image": img}, voxel_size=(10, 10, 10))
        seg, _ = learned_segment(m.path, agglo.path, f"{tmp_path}/{ffn_name}.zarr:image", tmp_path / ffn_name,
                                 overrides=m.card.extra["segment_options"])
        got = scores(gt, seg)
        card = m.card.metrics["validation"]
        for k in ("vi_total", "vi_split", "vi_merge", "adapted_rand_error"):
            assert got[k] == pytest.approx(card[k], abs=1e-9), (ffn_name, k)
        ws = scores(gt, watershed_baseline(img, BaselineConfig(**m.card.extra["baseline"]["config"]),
                                           voxel_size=(10, 10, 10)))
        assert ws["vi_total"] == pytest.approx(card["watershed_vi_total"], abs=1e-9)


def _options(card) -> list[str]:
    """The card's segment options as command-line flags."""
    agg = card.extra["segment_options"].get("agglomeration", {})
    flags = []
    if "radius" in agg:
        flags += ["--agglo-radius", ",".join(str(v) for v in agg["radius"])]
    if "min_contact" in agg:
        flags += ["--agglo-min-contact", str(agg["min_contact"])]
    rest = {k: v for k, v in card.extra["segment_options"].items() if k != "agglomeration"}
    for k, v in rest.items():
        flags += [f"--{k.replace('_', '-')}", str(v)]
    return flags


def test_segment_without_model_uses_the_shipped_default(registry, tmp_path, capsys):
    from deepsci.apps.connectomics.io import open_volume, write_volume
    from deepsci.apps.connectomics.release import learned_segment
    from deepsci.core.models.registry import shipped

    m, agglo = shipped(FFN), shipped(AGGLO)
    img, _ = _volume(m.card, "test")
    write_volume(tmp_path / "em.zarr", {"image": img}, voxel_size=(10, 10, 10))
    capsys.readouterr()
    rc = main(["connectomics", "segment", "--image", f"{tmp_path}/em.zarr", "--out", str(tmp_path / "seg"),
               "--scheduler", "inline", *_options(m.card)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 0, err
    model_lines = [line for line in err if line.startswith("model:")]
    assert model_lines == [f"model: {FFN} (shipped default; `deepsci models info {FFN}`) with {AGGLO}"], err
    rec = json.loads((tmp_path / "seg" / "run.json").read_text())["config"]
    assert rec["preset"] == "learned" and rec["model"] == str(m.path)
    assert rec["segment"]["inference"]["agglomeration"]["classifier"] == str(agglo.path)
    # The same labels as the learned pipeline run with these two models by path.
    want, _ = learned_segment(m.path, agglo.path, f"{tmp_path}/em.zarr", tmp_path / "want",
                              overrides=m.card.extra["segment_options"])
    got = open_volume(f"{tmp_path}/seg/segmentation.zarr:labels", kind="labels").read()
    np.testing.assert_array_equal(got, want)
    assert got.max() > 1


def test_segment_by_shipped_name_and_refusals(registry, tmp_path, capsys):
    from deepsci.apps.connectomics.io import write_volume
    from deepsci.core.models.registry import shipped

    m = shipped(SFFN)
    img, _ = _volume(m.card, "test")
    write_volume(tmp_path / "em.zarr", {"image": img}, voxel_size=(10, 10, 10))
    capsys.readouterr()
    assert main(["connectomics", "segment", "--model", SFFN, "--image", f"{tmp_path}/em.zarr",
                 "--out", str(tmp_path / "seg"), "--scheduler", "inline", *_options(m.card)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert f"model: {SFFN} (shipped) with {SAGGLO}" in err and any("demo model" in e for e in err), err
    rec = json.loads((tmp_path / "seg" / "run.json").read_text())["config"]
    assert rec["segment"]["inference"]["agglomeration"]["classifier"] == str(shipped(SAGGLO).path)
    for name, match in (("molecules-demo", "expected a connectomics model, found a molecules model"),
                        (AGGLO, "agglo"), ("no-such-model", "expected a shipped model name")):
        capsys.readouterr()
        assert main(["connectomics", "segment", "--model", name, "--image", f"{tmp_path}/em.zarr",
                     "--out", str(tmp_path / "o")]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], (name, err)
        assert not (tmp_path / "o").exists()
    # A model given by path needs its classifier: the learned pipeline refuses to guess it.
    capsys.readouterr()
    assert main(["connectomics", "segment", "--model", str(m.path), "--image", f"{tmp_path}/em.zarr",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--agglo-classifier" in capsys.readouterr().err


def test_shipped_demo_rows_recomputed_from_its_outputs(registry, tmp_path):
    from deepsci.apps.connectomics.demo import DEMO_SEED, run_demo
    from deepsci.apps.connectomics.io import open_volume
    from deepsci.apps.connectomics.release import scores

    res = run_demo(tmp_path / "demo", quick=True)
    d = tmp_path / "demo"
    gt = open_volume(f"{d}/test.zarr:labels", kind="labels").read()
    ours = scores(gt, open_volume(f"{d}/segment/segmentation.zarr:labels", kind="labels").read())
    theirs = scores(gt, open_volume(f"{d}/baseline.zarr:labels", kind="labels").read())
    keys = {"VI total (bits)": "vi_total", "VI split (bits)": "vi_split", "VI merge (bits)": "vi_merge",
            "adapted Rand error": "adapted_rand_error"}
    assert [r.metric for r in res.rows] == list(keys)
    for r in res.rows:
        assert r.deepsci == pytest.approx(ours[keys[r.metric]], abs=1e-12)
        assert r.baseline == pytest.approx(theirs[keys[r.metric]], abs=1e-12)
        assert SFFN in r.model and SAGGLO in r.model and f"seed {DEMO_SEED}" in r.data
        assert not r.higher_is_better
    assert json.loads((d / "scores.json").read_text())["seed"] == DEMO_SEED
    assert Path(res.figures[0]).is_file()


def test_import_ffn_command_is_wired(tmp_path, capsys):
    """`connectomics import-ffn CHECKPOINT --out M.keras` reaches import_ffn: a missing checkpoint is one line."""
    capsys.readouterr()
    rc = main(["connectomics", "import-ffn", str(tmp_path / "no-such-ckpt"), "--out", str(tmp_path / "m.keras")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and "no-such-ckpt" in err[0], err
    assert not (tmp_path / "m.keras").exists()
    rc = main(["connectomics", "import-ffn", str(tmp_path), "--out", str(tmp_path / "m.txt")])
    assert rc == 2 and "--out ending in .keras" in capsys.readouterr().err
