"""``--bam-out`` (issue #18): the reads behind each called variant, for IGV, and the model's
name and version in the VCF header, each read back with the library its format uses.

The model is a width-4 network whose genotype head ignores its input (kernel zero, bias
favouring het), so every candidate is called het: which sites are called is then known
without training. RefCalls are made by rewriting some rows of ``calls.tsv.gz`` to hom-ref
before ``postprocess-variants``, so the BAM must leave their windows out.
"""
from __future__ import annotations

import gzip
import json
import sys
from collections import Counter

import pysam
import pytest

from deepsci.apps.cli import main

REGION = "chr1:3001-7000"
HALF = 221 // 2             # the pileup window: 110 bases before a candidate, 221 in all


@pytest.fixture(scope="module")
def het_model(tmp_path_factory):
    """A model that calls every candidate het (P(het) ~ 0.96), with a named card."""
    import dataclasses

    import keras
    import numpy as np

    from deepsci.apps.variants.model import build_model, genotype_card
    from deepsci.core.models.serialization import save_model

    keras.utils.set_random_seed(0)
    model = build_model("small", width=4)
    dense = [w for w in model.weights if "kernel" in w.path or "bias" in w.path][-2:]
    kernel, bias = dense
    kernel.assign(np.zeros(kernel.shape, "float32"))
    bias.assign(np.array([0.0, 4.0, 0.0], "float32"))
    card = dataclasses.replace(genotype_card(training={}, data={}, metrics={}, extra={}),
                               name="igv test model")
    path = tmp_path_factory.mktemp("igv_model") / "model.keras"
    save_model(model, path, card=card)
    return path


@pytest.fixture(scope="module")
def called(tiny_sim, het_model, tmp_path_factory):
    """``variants run --bam-out`` on a region of the tiny simulation."""
    root = tmp_path_factory.mktemp("igv_run")
    out, bam = root / "calls", root / "evidence.bam"
    argv = ["variants", "run", "--reads", tiny_sim["bam"], "--ref", tiny_sim["ref"],
            "--model", str(het_model), "--out", str(out), "--regions", REGION,
            "--scheduler", "inline", "--bam-out", str(bam)]
    with pytest.MonkeyPatch.context() as mp:
        # The @PG command line is the user's (sys.argv), as the console script sees it.
        mp.setattr(sys, "argv", ["deepsci", *argv])
        assert main(argv) == 0
    return {"root": root, "out": out, "bam": bam, "argv": argv}


def _key(r: pysam.AlignedSegment) -> tuple:
    return (r.query_name, r.flag, r.reference_name, r.reference_start, r.cigarstring,
            r.query_sequence)


def _expected(reads: str, windows) -> Counter:
    """Every input record (read without the index) overlapping some 0-based window."""
    out: Counter = Counter()
    with pysam.AlignmentFile(reads) as f:
        for r in f.fetch(until_eof=True):
            if r.reference_id < 0:
                continue
            end = r.reference_end if r.reference_end is not None else r.reference_start + 1
            if any(c == r.reference_name and r.reference_start < e and end > s
                   for c, s, e in windows):
                out[_key(r)] += 1
    return out


def _windows(vcf) -> list[tuple[str, int, int]]:
    """The pileup windows of the VCF's non-RefCall records (0-based, end exclusive)."""
    wins = []
    for rec in pysam.VariantFile(str(vcf)):
        if "RefCall" not in rec.filter.keys():
            wins.append((rec.contig, max(0, rec.start - HALF), rec.start - HALF + 221))
    return wins


def _check_bam(bam, reads: str, windows) -> Counter:
    got: Counter = Counter()
    with pysam.AlignmentFile(str(bam)) as f:
        assert f.header.to_dict()["HD"]["SO"] == "coordinate"
        assert f.has_index() and (bam.parent / f"{bam.name}.bai").is_file()
        records = list(f.fetch(until_eof=True))
        starts = [(r.reference_id, r.reference_start) for r in records]
        assert starts == sorted(starts), "not coordinate-sorted"
        got.update(_key(r) for r in records)
        # The index answers region queries: each window's reads come back through fetch.
        c, s, e = windows[0]
        fetched = {_key(r) for r in f.fetch(c, s, e)}
    want = _expected(reads, windows)
    assert got == want, (f"{sum(got.values())} reads written, {sum(want.values())} expected; "
                         f"extra {list(got - want)[:3]}, missing {list(want - got)[:3]}")
    assert fetched and fetched <= set(want)
    with pysam.AlignmentFile(reads) as f:
        total = f.mapped + f.unmapped
    assert 0 < sum(got.values()) < total
    return got


def test_run_bam_out_holds_exactly_the_reads_of_called_windows(called, tiny_sim):
    vcf = called["out"] / "calls.vcf.gz"
    windows = _windows(vcf)
    assert len(windows) >= 5
    _check_bam(called["bam"], tiny_sim["bam"], windows)
    rec = json.loads((called["out"] / "run.json").read_text())
    assert rec["results"]["bam"] == str(called["bam"])


def test_bam_header_keeps_sq_rg_and_adds_deepsci_pg(called, tiny_sim):
    with pysam.AlignmentFile(tiny_sim["bam"]) as f:
        src = f.header.to_dict()
    with pysam.AlignmentFile(str(called["bam"])) as f:
        h = f.header.to_dict()
    assert h["SQ"] == src["SQ"] and h["RG"] == src["RG"]
    pg = [p for p in h["PG"] if p["ID"] == "deepsci"]
    assert len(pg) == 1 and pg[0]["PN"] == "deepsci"
    assert pg[0]["CL"] == " ".join(["deepsci", *called["argv"]])
    # The input's own @PG lines (BWA's) survive, and deepsci's follows the last of them.
    assert [p for p in h["PG"] if p["ID"] != "deepsci"] == src.get("PG", [])
    if src.get("PG"):
        assert pg[0]["PP"] == src["PG"][-1]["ID"]


def test_vcf_header_names_the_model_card(called, het_model):
    card = json.loads(het_model.with_name("model.card.json").read_text())
    assert card["name"] == "igv test model" and card["deepsci_version"]
    meta = {}
    for line in pysam.VariantFile(str(called["out"] / "calls.vcf.gz")).header.records:
        meta.setdefault(line.key, line.value)
    version = card["deepsci_version"] + (f" (commit {card['commit']})" if card["commit"] else "")
    assert meta["deepsci_model"] == "igv test model"
    assert meta["deepsci_model_version"] == version
    with gzip.open(called["out"] / "calls.tsv.gz", "rt") as f:
        head = [next(f) for _ in range(3)]
    assert head[1:] == ["##model=igv test model\n", f"##model_version={version}\n"]


def _with_refcalls(src, dst) -> int:
    """calls.tsv.gz with every other site's rows set to hom-ref; returns the sites changed."""
    lines = gzip.open(src, "rt").read().splitlines(keepends=True)
    sites = sorted({tuple(ln.split("\t")[:2]) for ln in lines if not ln.startswith("#")})
    ref_sites = set(sites[::2])
    with gzip.open(dst, "wt") as f:
        for ln in lines:
            p = ln.rstrip("\n").split("\t")
            if not ln.startswith("#") and tuple(p[:2]) in ref_sites:
                ln = "\t".join([*p[:7], "0.98", "0.01", "0.01"]) + "\n"
            f.write(ln)
    return len(ref_sites)


def test_postprocess_bam_out_leaves_refcall_windows_out(called, tiny_sim, capsys):
    root = called["root"]
    calls = root / "with_refcalls.tsv.gz"
    assert _with_refcalls(called["out"] / "calls.tsv.gz", calls) >= 2
    vcf, bam = root / "pp.vcf.gz", root / "pp.bam"
    args = ["variants", "postprocess-variants", "--calls", calls, "--ref", tiny_sim["ref"],
            "--out", vcf, "--bam-out", bam, "--reads", tiny_sim["bam"]]
    assert main([str(a) for a in args]) == 0
    filters = Counter(next(iter(r.filter.keys())) for r in pysam.VariantFile(str(vcf)))
    assert filters["RefCall"] >= 2 and filters["PASS"] >= 2
    got = _check_bam(bam, tiny_sim["bam"], _windows(vcf))
    # Fewer reads than the run's BAM, which had every site's window.
    with pysam.AlignmentFile(str(called["bam"])) as f:
        assert sum(got.values()) < sum(1 for _ in f.fetch(until_eof=True))
    # An existing BAM is refused without --overwrite (and kept), even beside a new VCF;
    # with --overwrite it is replaced.
    before = bam.read_bytes()
    capsys.readouterr()
    fresh = [root / "pp2.vcf.gz" if a == vcf else a for a in args]
    assert main([str(a) for a in fresh]) == 2
    assert not (root / "pp2.vcf.gz").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0] and str(bam) in err[0]
    assert bam.read_bytes() == before
    assert main([str(a) for a in [*args, "--overwrite"]]) == 0
    assert Counter(_key(r) for r in pysam.AlignmentFile(str(bam)).fetch(until_eof=True)) == got


@pytest.mark.parametrize("case, match", [
    ("no_reads", r"expected --reads .* together with --bam-out"),
    ("folder", r"expected --bam-out to be a \.bam file, found a folder"),
    ("suffix", r"expected --bam-out ending in \.bam, found 'evidence\.sam'"),
    ("under_file", r"expected a folder on the --bam-out path, found a file"),
])
def test_bad_bam_out_is_one_line_error(called, tiny_sim, tmp_path, bad_input, case, match):
    (tmp_path / "dir.bam").mkdir()
    (tmp_path / "plain").write_text("a file")
    bam = {"no_reads": tmp_path / "e.bam", "folder": tmp_path / "dir.bam",
           "suffix": tmp_path / "evidence.sam", "under_file": tmp_path / "plain" / "e.bam"}[case]
    reads = [] if case == "no_reads" else ["--reads", tiny_sim["bam"]]
    bad_input(["variants", "postprocess-variants", "--calls", called["out"] / "calls.tsv.gz",
               "--ref", tiny_sim["ref"], "--out", tmp_path / "o.vcf.gz", "--bam-out", bam,
               *reads], watch=[tmp_path, called["out"]], match=match)


def test_run_refuses_an_existing_bam_before_any_work(called, tiny_sim, het_model, tmp_path,
                                                     bad_input):
    bam = tmp_path / "mine.bam"
    bam.write_bytes(b"the user's own file")
    bad_input(["variants", "run", "--reads", tiny_sim["bam"], "--ref", tiny_sim["ref"],
               "--model", het_model, "--out", tmp_path / "o", "--regions", REGION,
               "--scheduler", "inline", "--bam-out", bam], watch=[tmp_path],
              match=r"expected a new --bam-out, found an existing file \(pass --overwrite")
