"""simulate -> make-examples -> train (the recipe) -> run -> evaluate, through the CLI.

The calls are checked against the planted truth: a truth variant counts as found only when a
PASS record carries its alleles with its genotype (het: one copy, hom-alt: two), so a model
that calls every site het, a wrong allele or a RefCall fails the test.
"""
from __future__ import annotations

import csv
import json
from collections import Counter

import pysam
import pytest

from deepsci.apps.cli import main

TRAIN, TEST = "chr1:1-15000", "chr1:15001-30000"


@pytest.fixture(scope="module")
def e2e_sim(tmp_path_factory):
    """30 kb, a variant every ~170 bp, 20x: enough examples for a model that genotypes."""
    from deepsci.apps.variants.synth import SimulateConfig, simulate

    return simulate(SimulateConfig(out_dir=str(tmp_path_factory.mktemp("variants_e2e_sim")),
                                   genome_length=30_000, snp_rate=5e-3, indel_rate=1e-3,
                                   coverage=20.0, seed=3))


@pytest.fixture(scope="module")
def trained(e2e_sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("variants_e2e")
    sim = e2e_sim
    rc = main(["variants", "train", "--reads", sim["bam"], "--ref", sim["ref"],
               "--truth-vcf", sim["truth"], "--confident-bed", sim["bed"], "--regions", TRAIN,
               "--out", str(out / "model"), "--replicates", "1", "--downsample", "1.0,0.6",
               "--replicate-downsample", "1.0", "--epochs", "8", "--batch-size", "8",
               "--width", "8", "--scheduler", "inline"])
    assert rc == 0
    return out


def _alleles(ref: str, alt: str, pos: int) -> tuple[int, str, str]:
    """The minimal representation of one allele (VCF-style: suffix, then prefix trimmed)."""
    while len(ref) > 1 and len(alt) > 1 and ref[-1] == alt[-1]:
        ref, alt = ref[:-1], alt[:-1]
    while len(ref) > 1 and len(alt) > 1 and ref[0] == alt[0]:
        ref, alt, pos = ref[1:], alt[1:], pos + 1
    return pos, ref, alt


def _found(vcf, truth_vcf, start: int, end: int) -> tuple[int, int]:
    """(truth variants called PASS with their alleles and genotype, truth variants)."""
    called: Counter = Counter()
    for r in pysam.VariantFile(str(vcf)):
        if "PASS" not in r.filter.keys():
            continue
        for g in r.samples[0]["GT"]:
            if g:
                called[_alleles(r.ref, r.alleles[g], r.start)] += 1
    truth = [r for r in pysam.VariantFile(truth_vcf) if start <= r.start < end]
    ok = sum(called[_alleles(t.ref, t.alts[0], t.start)] == sum(g == 1 for g in t.samples[0]["GT"])
             for t in truth)
    return ok, len(truth)


def test_training_examples_are_labelled(e2e_sim, tmp_path):
    sim = e2e_sim
    ex = tmp_path / "train_ex"
    assert main(["variants", "make-examples", "--reads", sim["bam"], "--ref", sim["ref"],
                 "--out", str(ex), "--regions", "chr1:1-6000", "--truth-vcf", sim["truth"],
                 "--confident-bed", sim["bed"], "--scheduler", "inline"]) == 0
    info = json.loads((ex / "examples_info.json").read_text())
    truth = [r for r in pysam.VariantFile(sim["truth"]) if 200 <= r.start < 6000]
    # Every planted variant of the region becomes a labelled example (20x, clean reads).
    assert info["training"] and info["labels"][1] + info["labels"][2] >= 0.9 * len(truth)
    import tensorflow as tf

    from deepsci.apps.variants.make_examples import example_files, parse_example
    ex_list = [parse_example(r.numpy()) for r in tf.data.TFRecordDataset(
        [str(f) for f in example_files(ex)], compression_type="GZIP")]
    assert all(e["image"].shape == (100, 221, 7) for e in ex_list)
    gt = {(r.start, r.ref, r.alts[0]): sum(g == 1 for g in r.samples[0]["GT"]) for r in truth}
    checked = 0
    for e in ex_list:
        key = (e["pos"], e["ref"], e["alts"][e["alt_idx"][0]])
        if len(e["alts"]) == 1 and key in gt:
            assert e["label"] == gt[key]
            checked += 1
    assert checked >= 0.8 * len(truth)
    # One record per output folder: run.json, no config copies.
    assert sorted(p.name for p in ex.glob("*.json")) == ["examples_info.json", "run.json"]
    run = json.loads((ex / "run.json").read_text())
    assert run["status"] == "done" and run["results"]["labels"] == info["labels"]

    # Training on these folders (not the recipe): class weights, validation, an ensemble. One batch
    # holds the region's ~25 examples, so each member traces one train and one validation step
    # (a partial second batch would trace both again: most of this test's time).
    out = tmp_path / "model"
    assert main(["variants", "train", "--examples", str(ex), "--out", str(out), "--epochs", "1",
                 "--batch-size", "32", "--width", "4", "--class-weight", "balanced",
                 "--val-examples", str(ex), "--af-augment", "0.5", "--ensemble", "2",
                 "--seed", "3"]) == 0
    members = json.loads((out / "ensemble.json").read_text())
    assert members == {"seeds": [3, 4], "members": ["member_0/model.keras",
                                                    "member_1/model.keras"]}
    cards = [json.loads((out / f"member_{k}" / "model.card.json").read_text()) for k in (0, 1)]
    assert [c["training"]["seed"] for c in cards] == [3, 4]
    assert [c["extra"]["member"] for c in cards] == [0, 1]
    card = cards[0]
    out = out / "member_0"
    assert card["app"] == "variants" and card["task"] == "genotype"
    assert card["training"]["class_counts"] == info["labels"]
    assert card["training"]["config"]["af_augment"] == 0.5
    w = card["training"]["class_weights"]
    assert sum(n * x for n, x in zip(info["labels"], w, strict=True)) == \
        pytest.approx(sum(info["labels"]))
    assert "loss" in card["metrics"]["validation"]
    hist = json.loads((out / "train" / "history.json").read_text())
    assert "val_loss" in hist[-1]
    # One run.json for the run; no config copies (training logs live under member_*/train/).
    records = [p.relative_to(out.parent) for p in out.parent.rglob("*.json")]
    assert sorted(str(p) for p in records if not {"train", ".state"} & set(p.parts)) == \
        ["ensemble.json", "member_0/model.card.json", "member_1/model.card.json", "run.json"]


def test_recipe_training_is_recorded(trained, e2e_sim):
    out = trained / "model"
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "done" and run["command"] == "variants train"
    assert set(run["stages"]) == {"make_examples", "train"}
    made = run["stages"]["make_examples"]["results"]
    assert made["fit_regions"] == "chr1:1-12000" and made["val_regions"] == "chr1:12001-15000"
    assert [p.split("/")[-1] for p in made["examples"]] == ["reads_1", "reads_0.6", "rep_100_1"]
    card = json.loads((out / "model.card.json").read_text())
    assert card["data"]["replicate_seeds"] == [100] and card["data"]["synthetic"]
    assert card["training"]["class_counts"] == made["labels"]
    # The kept epoch is the one with the lowest validation loss.
    hist = json.loads((out / "train" / "history.json").read_text())
    assert card["metrics"]["validation"]["loss"] == min(h["val_loss"] for h in hist)
    assert sorted(p.name for p in out.glob("*.json")) == ["model.card.json", "run.json"]


def test_run_calls_the_truth(trained, e2e_sim, capsys):
    out = trained / "calls"
    sim = e2e_sim
    args = ["variants", "run", "--reads", sim["bam"], "--ref", sim["ref"], "--model",
            str(trained / "model" / "model.keras"), "--out", str(out), "--regions", TEST,
            "--shards", "2", "--scheduler", "inline", "--gvcf"]
    assert main(args) == 0
    vcf = out / "calls.vcf.gz"
    assert vcf.exists() and (out / "calls.vcf.gz.tbi").exists()
    vf = pysam.VariantFile(str(vcf))
    assert list(vf.header.samples) == ["SIM"]
    recs = list(vf)
    assert recs and all(15000 <= r.start < 30000 for r in recs)
    for r in recs:
        s = r.samples[0]
        n = len(r.alts) + 1
        assert s["DP"] >= sum(s["AD"][1:]) and len(s["PL"]) == n * (n + 1) // 2
    ok, n = _found(vcf, sim["truth"], 15000, 29800)
    assert n >= 40 and ok >= 0.9 * n, f"{ok} of {n} truth variants called with their genotype"
    # One record for the three stages.
    assert sorted(p.name for p in out.glob("*.json")) == ["run.json"]
    run = json.loads((out / "run.json").read_text())
    assert set(run["stages"]) >= {"make_examples", "call_variants", "postprocess_variants"}
    assert run["results"]["filters"]["PASS"] == sum("PASS" in r.filter.keys() for r in recs)
    g = list(pysam.VariantFile(str(out / "calls.g.vcf.gz")))
    assert sum("<*>" in r.alts and len(r.alts) == 1 for r in g) > 0
    # Resume: both shards are marked done; a re-run reuses them (same counts, shard files
    # untouched) instead of recomputing.
    markers = sorted((out / "examples" / ".state").glob("*.done.json"))
    assert len(markers) == 2
    shard_files = sorted((out / "examples").glob("examples-*.tfrecord.gz"))
    mtimes = [f.stat().st_mtime_ns for f in shard_files]
    from deepsci.apps.variants.make_examples import MakeExamplesConfig, make_examples
    again = make_examples(MakeExamplesConfig(reads=sim["bam"], ref=sim["ref"],
                                             out_dir=str(out / "examples"), regions=TEST,
                                             shards=2, scheduler="inline"), progress=False)
    assert again["candidates"] == run["results"]["candidates"]
    assert [f.stat().st_mtime_ns for f in shard_files] == mtimes

    bed = trained / "test.bed"
    bed.write_text("chr1\t15000\t29800\n")
    capsys.readouterr()
    rc = main(["variants", "evaluate", "--calls", str(vcf), "--truth", sim["truth"], "--ref",
               sim["ref"], "--confident-bed", str(bed), "--out", str(out / "summary.csv")])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "summary.csv")))
    truth = [r for r in pysam.VariantFile(sim["truth"]) if 15000 <= r.start < 29800]
    n_snp = sum(len(t.ref) == len(t.alts[0]) for t in truth)
    snp = next(r for r in rows if r["Type"] == "SNP" and r["Filter"] == "PASS")
    assert int(snp["TRUTH.TOTAL"]) == n_snp
    assert int(snp["TRUTH.TP"]) + int(snp["TRUTH.FN"]) == n_snp
    assert float(snp["METRIC.Recall"]) >= 0.9
    rec = json.loads((out / "summary.csv.run.json").read_text())
    assert rec["results"]["SNP PASS"]["TRUTH.TP"] == int(snp["TRUTH.TP"])


def test_cli_errors_are_one_line(e2e_sim, tmp_path, capsys):
    capsys.readouterr()
    rc = main(["variants", "make-examples", "--reads", e2e_sim["bam"], "--ref",
               e2e_sim["ref"], "--out", str(tmp_path / "ex"), "--regions", "chr1:1-999999"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "ref.fa" in err[0]
    assert not (tmp_path / "ex").exists()
    rc = main(["variants", "run", "--reads", e2e_sim["bam"], "--ref", e2e_sim["ref"],
               "--model", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert not (tmp_path / "o").exists()


def test_run_reports_make_examples_errors(trained, e2e_sim, tmp_path, capsys):
    # make-examples runs in a child process during `run`; its user errors must still come
    # out as one `error:` line naming the file, and nothing is written.
    capsys.readouterr()
    rc = main(["variants", "run", "--reads", e2e_sim["bam"], "--ref", e2e_sim["ref"],
               "--model", str(trained / "model" / "model.keras"), "--out", str(tmp_path / "o"),
               "--regions", "chr1:1-999999", "--scheduler", "inline"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "ref.fa" in err[0]
    assert not (tmp_path / "o").exists()


def test_model_round_trip(trained):
    import numpy as np

    from deepsci.apps.variants.model import load_genotype_model
    model, card = load_genotype_model(trained / "model" / "model.keras")
    assert card.app == "variants" and card.input_spec["shape"] == [100, 221, 7]
    assert card.outputs["genotype"]["classes"] == ["hom_ref", "het", "hom_alt"]
    x = np.random.default_rng(0).integers(0, 255, (2, 100, 221, 7)).astype("float32")
    y = model(x, training=False)["genotype"]
    assert y.shape == (2, 3)
    model2, _ = load_genotype_model(trained / "model")
    np.testing.assert_allclose(model2(x, training=False)["genotype"], y, rtol=1e-5, atol=1e-5)
