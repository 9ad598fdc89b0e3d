"""The variants commands as built from their configs: --config re-runs, model cards, --help."""
from __future__ import annotations

import gzip
import json
import shutil

import pytest

from deepsci.apps.cli import main


def test_config_rerun_repeats_make_examples(tiny_sim, tmp_path):
    first, second = tmp_path / "ex1", tmp_path / "ex2"
    assert main(["variants", "make-examples", "--reads", tiny_sim["bam"], "--ref",
                 tiny_sim["ref"], "--out", str(first), "--regions", "chr1:1-4000",
                 "--truth-vcf", tiny_sim["truth"], "--confident-bed", tiny_sim["bed"],
                 "--scheduler", "inline", "--min-fraction-snps", "0.2", "--seed", "4"]) == 0
    run = json.loads((first / "run.json").read_text())
    assert run["config"]["candidates"]["min_fraction_snps"] == 0.2
    # Only --out is given again: everything else comes from the record.
    assert main(["variants", "make-examples", "--config", str(first / "run.json"),
                 "--out", str(second)]) == 0
    again = json.loads((second / "run.json").read_text())
    assert again["config"] == {**run["config"], "out_dir": str(second)}
    shards = sorted(p.name for p in first.glob("examples-*.tfrecord.gz"))
    assert shards and shards == sorted(p.name for p in second.glob("examples-*.tfrecord.gz"))
    for name in shards:     # the same examples (gzip headers carry a file name and time)
        assert gzip.decompress((first / name).read_bytes()) == \
            gzip.decompress((second / name).read_bytes())
    a, b = (json.loads((d / "examples_info.json").read_text()) for d in (first, second))
    assert a["labels"] == b["labels"] and a["examples"] == b["examples"] > 0


def _card(tmp_path, app, task):
    from deepsci.core.models.card import ModelCard, card_path

    model = tmp_path / app / "model.keras"
    model.parent.mkdir()
    model.write_bytes(b"PK\x03\x04 not read: the card is checked first")
    card_path(model).write_text(json.dumps(ModelCard(app=app, task=task).to_dict()))
    return model


@pytest.mark.parametrize("verb", ["call-variants", "run"])
def test_another_apps_model_is_refused_in_one_line(tiny_sim, tmp_path, capsys, verb):
    model = _card(tmp_path, "molecules", "qm9-properties")
    args = {"call-variants": ["--examples", str(tmp_path), "--out",
                              str(tmp_path / "o" / "calls.tsv.gz")],
            "run": ["--reads", tiny_sim["bam"], "--ref", tiny_sim["ref"], "--out",
                    str(tmp_path / "o"), "--scheduler", "inline"]}[verb]
    capsys.readouterr()
    assert main(["variants", verb, "--model", str(model), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: expected a variants model, found a molecules model ({model})"]
    assert not (tmp_path / "o").exists()


def test_a_model_without_card_is_refused(tiny_sim, tmp_path, capsys):
    model = _card(tmp_path, "variants", "genotype")
    (model.parent / "model.card.json").unlink()
    capsys.readouterr()
    assert main(["variants", "call-variants", "--examples", str(tmp_path), "--model",
                 str(model.parent), "--out", str(tmp_path / "calls.tsv.gz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected the model card model.card.json" in err[0]
    # A copy whose card names another task is refused too.
    shutil.copy(model, tmp_path / "x.keras")
    from deepsci.core.models.card import ModelCard
    (tmp_path / "x.card.json").write_text(json.dumps(ModelCard("variants", "other").to_dict()))
    assert main(["variants", "call-variants", "--examples", str(tmp_path), "--model",
                 str(tmp_path / "x.keras"), "--out", str(tmp_path / "calls.tsv.gz")]) == 2
    assert "found one for other" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["simulate", "make-examples", "train", "call-variants",
                                  "postprocess-variants", "run", "evaluate", "demo"])
def test_help_shows_at_most_15_options(verb, capsys):
    assert main(["variants", verb, "--help"]) == 0
    text = capsys.readouterr().out
    shown = [line for line in text.splitlines()
             if line.startswith("│") and line.lstrip("│ ").startswith("--")]
    assert 5 <= len(shown) <= 15, text


@pytest.mark.parametrize("verb, option, value, message", [
    ("make-examples", "--shards", "0", "expected --shards >= 1, found 0"),
    ("make-examples", "--min-fraction-snps", "1.5", "expected --min-fraction-snps in [0, 1]"),
    ("train", "--replicates", "-1", "expected --replicates >= 0, found -1"),
    ("train", "--seed", "-3", "expected --seed >= 0, found -3"),
    ("call-variants", "--batch-size", "0", "expected --batch-size >= 1, found 0"),
    ("simulate", "--coverage", "0", "expected --coverage > 0"),
])
def test_option_ranges_are_one_line_errors(tiny_sim, tmp_path, capsys, verb, option, value,
                                           message):
    inputs = {"make-examples": ["--reads", tiny_sim["bam"], "--ref", tiny_sim["ref"]],
              "train": ["--examples", str(tmp_path)],
              "call-variants": ["--examples", str(tmp_path), "--model", "m.keras",
                                "--out", str(tmp_path / "o" / "calls.tsv.gz")],
              "simulate": []}[verb]
    out = [] if verb == "call-variants" else ["--out", str(tmp_path / "o")]
    capsys.readouterr()
    assert main(["variants", verb, *inputs, *out, option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}")
    assert not (tmp_path / "o").exists()
