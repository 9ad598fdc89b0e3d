"""GQ/QUAL/PL from known probabilities, multi-allelic combination, gVCF blocks, VCF output."""
from __future__ import annotations

import gzip
import math

import numpy as np
import pytest

from deepsci.apps.variants.gvcf import homref_gq, reference_blocks
from deepsci.apps.variants.postprocess import (
    PostprocessConfig,
    combine_genotypes,
    genotype_fields,
    genotypes,
    postprocess_variants,
    prune_alleles,
    site_record,
)


@pytest.mark.parametrize("p", [(0.01, 0.98, 0.01), (0.2, 0.3, 0.5), (0.999, 0.0005, 0.0005)])
def test_quality_fields_from_probabilities(p):
    probs = {(0, 0): p[0], (0, 1): p[1], (1, 1): p[2]}
    f = genotype_fields(probs, 2)
    best = int(np.argmax(p))
    assert f["GT"] == [(0, 0), (0, 1), (1, 1)][best]
    assert f["GQ"] == round(-10 * math.log10(1 - p[best]))
    assert f["QUAL"] == pytest.approx(-10 * math.log10(p[0]), abs=1e-3)
    phred = [-10 * math.log10(max(x, 1e-10)) for x in p]
    assert f["PL"] == [round(x - min(phred)) for x in phred]
    assert f["GL"] == pytest.approx([math.log10(x) for x in p], abs=1e-3)
    assert min(f["PL"]) == 0 and f["PL"][best] == 0


def test_genotype_order_is_vcf_order():
    assert genotypes(3) == [(0, 0), (0, 1), (1, 1), (0, 2), (1, 2), (2, 2)]
    assert genotypes(2, ploidy=1) == [(0,), (1,)]


def test_biallelic_combination_is_identity():
    p = np.array([0.1, 0.7, 0.2])
    out = combine_genotypes(1, {(0,): p})
    assert [out[g] for g in [(0, 0), (0, 1), (1, 1)]] == pytest.approx(p.tolist())


def test_multiallelic_minimum_rule():
    # A 1/2 site: each single-alt image says "one copy", the pair image says "two copies".
    images = {(0,): np.array([0.05, 0.9, 0.05]), (1,): np.array([0.1, 0.85, 0.05]),
              (0, 1): np.array([0.02, 0.08, 0.9])}
    out = combine_genotypes(2, images)
    raw = {(0, 0): 0.02, (0, 1): 0.08, (1, 1): 0.05, (0, 2): 0.08, (1, 2): 0.85, (2, 2): 0.05}
    total = sum(raw.values())
    assert out == pytest.approx({g: v / total for g, v in raw.items()})
    assert max(out, key=out.get) == (1, 2)
    rec = site_record("c", 5, "A", ["C", "G"], 30, [1, 14, 15], images)
    assert rec["sample"]["GT"] == (1, 2) and rec["filter"] == "PASS"
    assert len(rec["sample"]["PL"]) == 6


def test_filters_and_haploid():
    refcall = site_record("c", 1, "A", ["C"], 20, [20, 0], {(0,): np.array([0.9, 0.05, 0.05])})
    assert refcall["filter"] == "RefCall" and refcall["sample"]["GT"] == (0, 0)
    low = site_record("c", 1, "A", ["C"], 20, [12, 8], {(0,): np.array([0.45, 0.5, 0.05])},
                      min_qual=5.0)
    assert low["sample"]["GT"] == (0, 1)
    assert low["filter"] == "LowQual"                 # QUAL = -10 log10(0.45) = 3.5 < 5
    hap = site_record("c", 1, "A", ["C"], 20, [0, 20], {(0,): np.array([0.1, 0.3, 0.6])},
                      ploidy=1)
    assert hap["sample"]["GT"] == (1,)                # not 1/1 (google/deepvariant#751)
    assert len(hap["sample"]["PL"]) == 2
    assert hap["sample"]["GQ"] == round(-10 * math.log10(1 - 0.6 / 0.7))


def test_homref_gq_binomial():
    gq = homref_gq(np.array([0, 10, 40, 30, 30]), np.array([0, 0, 0, 3, 15]))
    assert gq[0] == 0                  # no reads, no confidence
    assert gq[2] > gq[1] > 0           # more reads, more confidence
    assert gq[2] == 99                 # capped
    assert gq[4] == 0                  # half the reads disagree: not hom-ref
    # Against a direct evaluation of the formula for n=10, k=0, e=0.01.
    from scipy.stats import binom
    like = np.array([binom.pmf(0, 10, 0.01), binom.pmf(0, 10, 0.5), binom.pmf(0, 10, 0.99)])
    post = like / like.sum()
    assert gq[1] == int(np.floor(-10 * np.log10(1 - post[0])))


def test_reference_block_merging():
    depth = np.array([40] * 5 + [0] * 3 + [40] * 4 + [8, 9])
    nonref = np.zeros_like(depth)
    blocks = reference_blocks("c", 100, depth, nonref)
    assert blocks[0] == ("c", 100, 105, 99, 40)
    assert blocks[1] == ("c", 105, 108, 0, 0)
    assert blocks[2] == ("c", 108, 112, 99, 40)
    # Depth 8 and 9 fall into the same GQ band: one block with the minimum GQ and depth.
    assert len(blocks) == 4 and blocks[3][:2] == ("c", 112) and blocks[3][2] == 114
    assert blocks[3][4] == 8
    assert blocks[3][3] == min(homref_gq(np.array([8, 9]), np.array([0, 0])))
    # Blocks tile the interval exactly.
    assert all(a[2] == b[1] for a, b in zip(blocks, blocks[1:], strict=False))


def _calls_file(path, rows):
    with gzip.open(path, "wt") as f:
        f.write("#contig\tpos\tref\talts\talt_idx\tdp\tad\tp_homref\tp_het\tp_homalt\n")
        for r in rows:
            f.write("\t".join(map(str, r)) + "\n")


def test_postprocess_writes_valid_vcf_and_gvcf(tmp_path, vt):
    import pysam

    seq = "ACGT" * 100
    ref = vt.write_ref(tmp_path / "ref.fa", {"c1": seq, "cX": seq})
    calls = tmp_path / "calls.tsv.gz"
    _calls_file(calls, [
        ("c1", 10, "G", "T", "0", 30, "15,15", 0.01, 0.98, 0.01),
        ("c1", 50, "G", "GA,T", "0", 30, "2,14,14", 0.02, 0.9, 0.08),
        ("c1", 50, "G", "GA,T", "1", 30, "2,14,14", 0.03, 0.9, 0.07),
        ("c1", 50, "G", "GA,T", "0,1", 30, "2,14,14", 0.01, 0.04, 0.95),
        ("c1", 90, "G", "A", "0", 30, "29,1", 0.97, 0.02, 0.01),
        ("cX", 30, "G", "C", "0", 30, "0,30", 0.01, 0.04, 0.95),
    ])
    ex = tmp_path / "examples"
    ex.mkdir()
    blocks = reference_blocks("c1", 0, np.full(400, 30), np.zeros(400, int))
    with gzip.open(ex / "gvcf-00000-of-00001.tsv.gz", "wt") as f:
        for b in blocks:
            f.write("\t".join(map(str, b)) + "\n")
    out = tmp_path / "out.vcf.gz"
    counts = postprocess_variants(PostprocessConfig(
        calls=str(calls), ref=str(ref), out=str(out), gvcf_out=str(tmp_path / "out.g.vcf.gz"),
        examples=str(ex), haploid_contigs=["cX"], sample="S1"), command="test")
    assert counts["PASS"] == 3 and counts["RefCall"] == 1
    assert (tmp_path / "out.vcf.gz.tbi").exists()
    vf = pysam.VariantFile(str(out))
    assert list(vf.header.samples) == ["S1"]
    assert list(vf.header.contigs) == ["c1", "cX"]
    assert vf.header.contigs["c1"].length == 400
    recs = list(vf)
    assert [(r.contig, r.pos) for r in recs] == [("c1", 11), ("c1", 51), ("c1", 91), ("cX", 31)]
    r0 = recs[0].samples["S1"]
    assert r0["GT"] == (0, 1) and r0["AD"] == (15, 15) and r0["DP"] == 30
    assert r0["VAF"][0] == pytest.approx(0.5)
    assert recs[1].samples["S1"]["GT"] == (1, 2) and recs[1].alts == ("GA", "T")
    assert list(recs[2].filter) == ["RefCall"]
    assert recs[3].samples["S1"]["GT"] == (1,)
    assert len(list(vf.fetch("c1", 40, 60))) == 1        # the index works
    # gVCF: variant records carry <*>, blocks tile the rest of c1 around them.
    g = list(pysam.VariantFile(str(tmp_path / "out.g.vcf.gz")))
    c1 = [r for r in g if r.contig == "c1"]
    assert all("<*>" in r.alts for r in c1)
    covered = sorted((r.start, r.stop) for r in c1)
    assert covered[0][0] == 0 and covered[-1][1] == 400
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False))


def test_postprocess_rejects_unknown_haploid_contig(tmp_path, vt):
    from deepsci.core.errors import InputError

    ref = vt.write_ref(tmp_path / "ref.fa", {"c1": "ACGT" * 50})
    calls = tmp_path / "calls.tsv.gz"
    _calls_file(calls, [("c1", 10, "G", "T", "0", 30, "15,15", 0.01, 0.98, 0.01)])
    with pytest.raises(InputError, match="haploid"):
        postprocess_variants(PostprocessConfig(calls=str(calls), ref=str(ref),
                                               out=str(tmp_path / "o.vcf.gz"),
                                               haploid_contigs=["chrY"]))
    assert not (tmp_path / "o.vcf.gz").exists()


def test_multiallelic_pruning_drops_alleles_their_own_images_call_reference():
    # A long homopolymer: a deletion and an insertion, each an error by its own image, but
    # together 14 of 37 reads, which the pair image takes for one copy.
    images = {(0,): np.array([0.94, 0.055, 0.005]), (1,): np.array([0.9999, 1e-4, 0.0]),
              (0, 1): np.array([0.05, 0.95, 0.0])}
    kept = site_record("c", 9, "AG", ["A", "AGG"], 37, [23, 10, 4], images,
                       multi_allelic_qual_filter=0.0)
    assert kept["sample"]["GT"] == (0, 1)             # no pruning: the pair image wins
    rec = site_record("c", 9, "AG", ["A", "AGG"], 37, [23, 10, 4], images)
    # Both below QUAL 1: the better one (QUAL 0.27 > 0.0004) stays, alone.
    assert rec["alts"] == ("A",) and rec["sample"]["AD"] == (23, 10)
    assert rec["sample"]["GT"] == (0, 0) and rec["filter"] == "RefCall"
    assert len(rec["sample"]["PL"]) == 3


def test_multiallelic_pruning_keeps_real_alleles_and_trims():
    # AGG -> AG (1-bp deletion, real, het) and AGG -> A (2-bp deletion, an error).
    images = {(0,): np.array([0.01, 0.97, 0.02]), (1,): np.array([0.9, 0.09, 0.01]),
              (0, 1): np.array([0.01, 0.9, 0.09])}
    ref, alts, ad, im = prune_alleles("AGG", ["AG", "A"], [15, 13, 3], images, 1.0)
    assert (ref, alts, ad) == ("AG", ["A"], [15, 13])
    assert list(im) == [(0,)] and im[(0,)] is images[(0,)]
    rec = site_record("c", 3, "AGG", ["AG", "A"], 31, [15, 13, 3], images)
    assert (rec["ref"], rec["alts"], rec["sample"]["GT"]) == ("AG", ("A",), (0, 1))
    # A true 1/2 site: both singles are confidently non-reference, nothing goes.
    two = {(0,): np.array([0.05, 0.9, 0.05]), (1,): np.array([0.1, 0.85, 0.05]),
           (0, 1): np.array([0.02, 0.08, 0.9])}
    assert prune_alleles("A", ["C", "G"], [1, 14, 15], two, 1.0)[1] == ["C", "G"]
    # Biallelic sites and a zero filter are left alone.
    one = {(0,): np.array([0.99, 0.01, 0.0])}
    assert prune_alleles("A", ["C"], [20, 2], one, 1.0)[1] == ["C"]
    assert prune_alleles("AGG", ["AG", "A"], [15, 13, 3], images, 0.0)[1] == ["AG", "A"]
