"""The shipped-model build (tiny), verbs without --model, shipped names, and the shipped demo."""
import csv
import json
import shutil
from pathlib import Path

import pytest

from deepsci.apps.cli import main
from deepsci.apps.variants import release
from deepsci.apps.variants.demo import run_demo
from deepsci.core.models.card import card_path, read_card


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    work = tmp_path_factory.mktemp("work")
    [path] = release.build(root, tiny=True, work=work)
    return root, work, path


def test_tiny_build_writes_a_complete_card_whose_scores_recompute(built):
    root, work, path = built
    assert path == root / "variants-illumina" / "model.keras"
    card = read_card(path, expect="variants", task="genotype")
    assert card.name == "variants-illumina" and card.extra["shipped"]["default"] is True
    assert card.data["synthetic_reads"] is True and card.data["seeds"]["simulation"] == 0
    assert "SIMULATED" in card.limitations and card.training["command"] == "deepsci models build variants"
    # Re-score the installed model on the recorded held-out region: the card's numbers come back.
    test = card.metrics["test"]
    contig, span = test["region"].split(":")
    start, end = (int(v) for v in span.split("-"))
    sim = {"bam": str(work / "sim" / "reads.bam"), "ref": str(work / "sim" / "ref.fa"),
           "truth": str(work / "sim" / "truth.vcf.gz")}
    again = release._score(work / "again", sim, str(path), (contig, start - 1, end))
    assert again["deepsci"] == test["deepsci"] and again["bcftools"] == test["bcftools"]


def test_run_without_model_uses_the_default_and_names_it(built, tmp_path, monkeypatch, capsys):
    root, work, path = built
    monkeypatch.setenv("DEEPSCI_MODELS", str(root))
    sim = work / "sim"
    bam, ref = sim / "reads.bam", sim / "ref.fa"
    assert main(["variants", "run", "--reads", str(bam), "--ref", str(ref), "--out",
                 str(tmp_path / "calls"), "--regions", "chr1:1-6000", "--scheduler", "inline"]) == 0
    err = capsys.readouterr().err
    assert "model: variants-illumina (shipped default; `deepsci models info variants-illumina`)" in err
    rec = json.loads((tmp_path / "calls" / "run.json").read_text())
    assert rec["config"]["model"] == str(path)
    assert main(["variants", "run", "--reads", str(bam), "--ref", str(ref), "--model", "variants-illumina",
                 "--out", str(tmp_path / "named"), "--regions", "chr1:1-6000", "--scheduler", "inline"]) == 0
    assert (tmp_path / "named" / "calls.vcf.gz").read_bytes()[:2] == b"\x1f\x8b"


def test_another_apps_shipped_model_is_refused(built, tmp_path, monkeypatch, capsys):
    root, work, path = built
    other = tmp_path / "models"
    shutil.copytree(root, other)
    mol = other / "molecules-x"
    mol.mkdir()
    shutil.copy2(path, mol / "model.keras")
    card = json.loads(card_path(path).read_text())
    card.update(app="molecules", task="qm9-properties", name="molecules-x")
    card_path(mol / "model.keras").write_text(json.dumps(card))
    monkeypatch.setenv("DEEPSCI_MODELS", str(other))
    bam, ref = work / "sim" / "reads.bam", work / "sim" / "ref.fa"
    assert main(["variants", "run", "--reads", str(bam), "--ref", str(ref), "--model", "molecules-x",
                 "--out", str(tmp_path / "x")]) == 2
    assert "expected a variants model, found a molecules model" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_shipped_demo_rows_recompute_from_its_outputs(built, tmp_path, monkeypatch):
    root, _, _ = built
    monkeypatch.setenv("DEEPSCI_MODELS", str(root))
    res = run_demo(tmp_path / "demo", quick=True)
    assert [r.metric for r in res.rows] == ["SNP F1", "INDEL F1"]
    for name, col in (("summary.csv", "deepsci"), ("bcftools_summary.csv", "baseline")):
        with open(tmp_path / "demo" / name) as fh:
            snp = next(r for r in csv.DictReader(fh) if r["Type"] == "SNP" and r["Filter"] == "PASS")
        assert getattr(res.rows[0], col) == pytest.approx(float(snp["METRIC.F1_Score"]))
    assert res.rows[0].model == "variants-illumina" and "seed 2026" in res.rows[0].data
    # The report links what IGV opens: the calls and the reads behind them (an indexed BAM).
    import pysam

    links = {v.viewer: [] for v in res.viewers}
    for v in res.viewers:
        links[v.viewer].append(Path(v.path).name)
    assert {"calls.vcf.gz", "reads.bam"} <= set(links["IGV"]), res.viewers
    with pysam.AlignmentFile(str(tmp_path / "demo" / "calls" / "reads.bam")) as bam:
        assert bam.check_index() and bam.mapped > 0
