"""Shipped models: names, defaults, demo warnings, the `deepsci models` commands, the package's own models."""
import json
from pathlib import Path

import pytest

from deepsci.apps.cli import main
from deepsci.core.errors import InputError
from deepsci.core.io import write_json
from deepsci.core.models.card import ModelCard, card_path
from deepsci.core.models.registry import (
    default_model,
    demo_warning,
    resolve_model,
    shipped,
    shipped_models,
    shipped_root,
)


def _entry(root: Path, name: str, app: str, task: str, *, default=False, synthetic=False,
           members: int = 0, filename: str = "model.keras") -> Path:
    folder = root / name
    card = ModelCard(app=app, task=task, name=name, data={"name": "test data", "licence": "CC0",
                                                          **({"synthetic_only": True, "real_input": "slides"}
                                                             if synthetic else {})},
                     metrics={"test": {"f1": 0.5}}, extra={"shipped": {"default": default}})
    files = [folder / f"member_{i}" / filename for i in range(members)] if members else [folder / filename]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"weights")
        write_json(card_path(f), card.to_dict())
    if members:
        write_json(folder / "ensemble.json", {"members": [str(f.relative_to(folder)) for f in files]})
    return folder if members else files[0]


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "models"
    _entry(r, "variants-a", "variants", "genotype", default=True)
    _entry(r, "variants-b", "variants", "genotype")
    _entry(r, "molecules-x", "molecules", "qm9-properties", default=True, members=3)
    _entry(r, "pathology-demo", "pathology", "tumour-patch", default=True, synthetic=True)
    _entry(r, "connectomics-agglo", "connectomics", "pair-classifier", default=True,
           filename="pair_classifier.json")
    return r


def test_listing_reads_every_card_and_finds_the_model_files(root):
    models = {m.name: m for m in shipped_models(root)}
    assert sorted(models) == ["connectomics-agglo", "molecules-x", "pathology-demo", "variants-a", "variants-b"]
    assert models["variants-a"].path == root / "variants-a" / "model.keras"
    assert models["molecules-x"].path == root / "molecules-x" and models["molecules-x"].members == 3
    assert models["connectomics-agglo"].path == root / "connectomics-agglo" / "pair_classifier.json"
    assert [m.name for m in shipped_models(root) if m.default] == [
        "connectomics-agglo", "molecules-x", "pathology-demo", "variants-a"]
    assert models["variants-a"].size_bytes == len(b"weights") + card_path(models["variants-a"].path).stat().st_size
    assert default_model("variants", "genotype", root=root).name == "variants-a"
    assert default_model("variants", "other-task", root=root) is None


def test_resolve_default_name_path_and_list(root):
    said = []
    assert resolve_model(None, app="variants", task="genotype", say=said.append, root=root) == str(
        root / "variants-a" / "model.keras")
    assert said == ["model: variants-a (shipped default; `deepsci models info variants-a`)"]
    said.clear()
    got = resolve_model("runs/x/model.keras, variants-b", app="variants", say=said.append, root=root)
    assert got == f"runs/x/model.keras,{root / 'variants-b' / 'model.keras'}"
    assert said == ["model: variants-b (shipped)"]


def test_resolve_refuses_other_apps_unknown_names_and_no_default(root):
    with pytest.raises(InputError, match="expected a variants model, found a molecules model"):
        resolve_model("molecules-x", app="variants", say=None, root=root)
    with pytest.raises(InputError, match=r"expected a shipped model name \(connectomics-agglo, .*variants-b\)"
                                         r" or a model path, found 'variants-c'"):
        resolve_model("variants-c", app="variants", say=None, root=root)
    with pytest.raises(InputError, match="expected --model .no default retinopathy model ships"):
        resolve_model(None, app="retinopathy", say=None, root=root)


def test_synthetic_only_models_warn_and_real_ones_do_not(root):
    said = []
    resolve_model("", app="pathology", say=said.append, root=root)
    assert said[1] == ("warning: pathology-demo is a demo model trained on synthetic data only; "
                       "its outputs on real slides mean nothing")
    assert demo_warning(shipped("variants-a", root=root)) is None


def test_a_folder_with_two_cards_is_refused(root):
    extra = root / "variants-a" / "other.keras"
    extra.write_bytes(b"x")
    write_json(card_path(extra), json.loads(card_path(root / "variants-a" / "model.keras").read_text()))
    with pytest.raises(InputError, match="expected one model card in a shipped model's folder, found 2"):
        shipped_models(root)


def test_models_commands(root, monkeypatch, capsys):
    monkeypatch.setenv("DEEPSCI_MODELS", str(root))
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["connectomics-agglo", "molecules-x", "pathology-demo",
                                               "variants-a", "variants-b"]
    assert "synthetic-only" in lines[2] and "test: f1 0.5" in lines[3]
    assert main(["models", "path", "variants-b"]) == 0
    assert capsys.readouterr().out.strip() == str(root / "variants-b" / "model.keras")
    assert main(["models", "info", "molecules-x"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["app"] == "molecules" and info["shipped"]["members"] == 3
    assert main(["models", "info", "nope"]) == 2
    assert "expected a shipped model name" in capsys.readouterr().err


def test_models_list_headline_reads_nested_metrics_and_skips_the_peers():
    from deepsci.apps.cli import _fmt_metric

    card = ModelCard(app="variants", task="genotype", metrics={
        "validation": {"loss": 0.04},
        "test": {"region": "I:1-9", "bcftools": {"SNP": {"f1": 1.0}},
                 "deepsci": {"SNP": {"f1": 0.75, "tp": 3}, "INDEL": {"f1": 0.5}}}})
    assert _fmt_metric(card) == "test: deepsci.SNP.f1 0.75, deepsci.INDEL.f1 0.5"
    card = ModelCard(app="molecules", task="qm9", metrics={
        "test": {"gap": {"mae": 0.125, "unit": "eV", "ridge_rdkit_mae": 0.3, "chemical_accuracy": 0.043}}})
    assert _fmt_metric(card) == "test: gap.mae 0.125"
    assert _fmt_metric(ModelCard(app="x", task="y", metrics={"validation": {"loss": 0.5}})) == \
        "validation: loss 0.5"
    assert _fmt_metric(ModelCard(app="x", task="y")) == "-"


# --------------------------------------------------------------------------- the package's own models

def test_the_shipped_models_have_complete_cards_and_fit_the_size_budget():
    models = shipped_models()
    root = shipped_root()
    assert sum(m.size_bytes for m in models) <= 40e6, "shipped models over the 40 MB budget"
    defaults: dict = {}
    for m in models:
        c = m.card
        assert c.name == m.name, f"{m.folder}: card name {c.name!r} differs from the folder"
        assert m.folder.parent == root
        for key in ("name", "licence"):
            assert c.data.get(key), f"{m.name}: the card's data lacks {key}"
        assert c.intended_use and c.limitations, f"{m.name}: intended use and limitations are required"
        assert c.metrics.get("validation") or c.metrics.get("test"), f"{m.name}: no held-out metrics"
        assert c.training, f"{m.name}: no recipe"
        assert c.commit, f"{m.name}: no commit"
        if m.default:
            key = (c.app, c.task)
            assert key not in defaults, f"two defaults for {key}: {defaults.get(key)} and {m.name}"
            defaults[key] = m.name


def test_notes_held_until_work_begins_and_dropped_on_an_error(capsys):
    """The shipped-model note must not turn a user's error into two lines (issue #19), but a
    run that starts its work or ends shows it."""
    from deepsci.core.errors import InputError
    from deepsci.core.logs import held_notes, note
    from deepsci.core.progress import progress

    with pytest.raises(InputError), held_notes():
        note("model: a (shipped default)")
        raise InputError("expected x, found y", "f")
    assert capsys.readouterr().err == ""
    with held_notes():
        note("model: b")
        assert capsys.readouterr().err == ""
        list(progress(range(2), disable=True))
        assert capsys.readouterr().err == "model: b\n"
        note("later")
    assert capsys.readouterr().err == "later\n"
    note("outside")
    assert capsys.readouterr().err == "outside\n"
