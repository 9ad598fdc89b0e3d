"""simulate -> make-examples -> train -> run -> evaluate, through the CLI, on a tiny genome."""
from __future__ import annotations

import csv
import json

import pysam
import pytest

from deepsci.apps.cli import main


@pytest.fixture(scope="module")
def trained(tiny_sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("variants_e2e")
    sim = tiny_sim
    rc = main(["variants", "make-examples", "--reads", sim["bam"], "--ref", sim["ref"],
               "--out", str(out / "train_ex"), "--regions", "chr1:1-6000",
               "--truth-vcf", sim["truth"], "--confident-bed", sim["bed"],
               "--scheduler", "inline"])
    assert rc == 0
    rc = main(["variants", "train", "--examples", str(out / "train_ex"), "--out",
               str(out / "model"), "--epochs", "1", "--batch-size", "8", "--width", "8",
               # The plumbing of these options (the same folder as validation is only a test).
               "--class-weight", "balanced", "--val-examples", str(out / "train_ex"),
               "--af-augment", "0.5"])
    assert rc == 0
    return out


def test_training_examples_are_labelled(trained, tiny_sim):
    info = json.loads((trained / "train_ex" / "examples_info.json").read_text())
    assert info["training"] and info["examples"] > 0
    truth = [r for r in pysam.VariantFile(tiny_sim["truth"]) if 200 <= r.start < 6000]
    # Every planted variant of the half becomes a labelled example (20x, clean reads).
    assert info["labels"][1] + info["labels"][2] >= 0.9 * len(truth)
    import tensorflow as tf

    from deepsci.apps.variants.make_examples import example_files, parse_example
    files = example_files(trained / "train_ex")
    ex = [parse_example(r.numpy()) for r in tf.data.TFRecordDataset(
        [str(f) for f in files], compression_type="GZIP")]
    assert all(e["image"].shape == (100, 221, 7) for e in ex)
    gt = {(r.start, r.ref, r.alts[0]): sum(g == 1 for g in r.samples[0]["GT"]) for r in truth}
    for e in ex:
        key = (e["pos"], e["ref"], e["alts"][e["alt_idx"][0]])
        if len(e["alts"]) == 1 and key in gt:
            assert e["label"] == gt[key]
    assert (trained / "model" / "model.keras").exists()
    assert (trained / "model" / "run_info.json").exists()
    side = json.loads((trained / "model" / "model.json").read_text())["train_config"]
    assert side["class_counts"] == info["labels"]
    assert side["af_augment"] == 0.5 and side["af_augment_alleles"] == "snp"
    w = side["class_weights"]
    assert sum(n * x for n, x in zip(info["labels"], w, strict=True)) == \
        pytest.approx(sum(info["labels"]))
    hist = json.loads((trained / "model" / "train" / "history.json").read_text())
    assert "val_loss" in hist[-1]


def test_run_and_evaluate(trained, tiny_sim, capsys):
    out = trained / "calls"
    sim = tiny_sim
    args = ["variants", "run", "--reads", sim["bam"], "--ref", sim["ref"], "--model",
            str(trained / "model" / "model.keras"), "--out", str(out), "--regions",
            "chr1:6001-12000", "--shards", "2", "--scheduler", "inline", "--gvcf"]
    assert main(args) == 0
    vcf = out / "calls.vcf.gz"
    assert vcf.exists() and (out / "calls.vcf.gz.tbi").exists()
    vf = pysam.VariantFile(str(vcf))
    assert list(vf.header.samples) == ["SIM"]
    assert any("deepsci" in str(h) for h in vf.header.records)
    recs = list(vf)
    assert recs and all(6000 <= r.start < 12000 for r in recs)
    for r in recs:
        s = r.samples[0]
        n = len(r.alts) + 1
        assert s["DP"] >= sum(s["AD"][1:]) and len(s["PL"]) == n * (n + 1) // 2
        assert set(r.filter.keys()) <= {"PASS", "RefCall", "LowQual"}
    truth = [r for r in pysam.VariantFile(sim["truth"]) if 6000 <= r.start < 11800]
    called = {(r.start, r.ref) for r in recs}
    found = sum((t.start, t.ref) in called or any(abs(t.start - c[0]) <= 10 for c in called)
                for t in truth)
    assert found >= 0.9 * len(truth)                  # candidates cover the truth
    assert (out / "calls.g.vcf.gz").exists()
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
                                             out_dir=str(out / "examples"),
                                             regions="chr1:6001-12000", shards=2,
                                             scheduler="inline"), progress=False)
    assert again["candidates"] == len(recs)
    assert [f.stat().st_mtime_ns for f in shard_files] == mtimes

    bed = trained / "test.bed"
    bed.write_text("chr1\t6000\t11800\n")
    capsys.readouterr()
    rc = main(["variants", "evaluate", "--calls", str(vcf), "--truth", sim["truth"], "--ref",
               sim["ref"], "--confident-bed", str(bed), "--out", str(out / "summary.csv")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "METRIC.F1_Score" in printed and "SNP" in printed
    rows = list(csv.DictReader(open(out / "summary.csv")))
    snp = next(r for r in rows if r["Type"] == "SNP" and r["Filter"] == "ALL")
    n_snp = sum(len(t.ref) == len(t.alts[0]) for t in truth)
    assert int(snp["TRUTH.TOTAL"]) == n_snp
    assert int(snp["TRUTH.TP"]) + int(snp["TRUTH.FN"]) == n_snp


def test_cli_errors_are_one_line(tiny_sim, tmp_path, capsys):
    capsys.readouterr()
    rc = main(["variants", "make-examples", "--reads", tiny_sim["bam"], "--ref",
               tiny_sim["ref"], "--out", str(tmp_path / "ex"), "--regions", "chr1:1-999999"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "ref.fa" in err[0]
    assert not (tmp_path / "ex").exists()
    rc = main(["variants", "run", "--reads", tiny_sim["bam"], "--ref", tiny_sim["ref"],
               "--model", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert not (tmp_path / "o" / "calls.vcf.gz").exists()


def test_run_reports_make_examples_errors(trained, tiny_sim, tmp_path, capsys):
    # make-examples runs in a child process during `run`; its user errors must still come
    # out as one `error:` line naming the file, and nothing is written.
    capsys.readouterr()
    rc = main(["variants", "run", "--reads", tiny_sim["bam"], "--ref", tiny_sim["ref"],
               "--model", str(trained / "model" / "model.keras"), "--out", str(tmp_path / "o"),
               "--regions", "chr1:1-999999", "--scheduler", "inline"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "ref.fa" in err[0]
    assert not (tmp_path / "o" / "calls.vcf.gz").exists()


def test_model_round_trip(trained):
    import numpy as np

    from deepsci.apps.variants.model import load_genotype_model
    model, sidecar = load_genotype_model(trained / "model" / "model.keras")
    assert sidecar["app"] == "variants" and sidecar["input_spec"]["shape"] == [100, 221, 7]
    x = np.random.default_rng(0).integers(0, 255, (2, 100, 221, 7)).astype("float32")
    y = model(x, training=False)["genotype"]
    assert y.shape == (2, 3)
    model2, _ = load_genotype_model(trained / "model")
    np.testing.assert_allclose(model2(x, training=False)["genotype"], y, rtol=1e-5, atol=1e-5)
