"""Candidate thresholds, multi-allelic sites and labelling from a truth VCF + BED."""
from __future__ import annotations

import numpy as np
import pytest

from deepsci.apps.variants import io as vio
from deepsci.apps.variants.candidates import (
    CandidateConfig,
    ReadInfo,
    event_alleles,
    find_candidates,
    parse_read,
)
from deepsci.apps.variants.labels import Truth, allele_events, label_image

REF = ("GATCCGTAGCTAGCAGTCTGACGATCGTTACGCATGGACTACGTTAGCATCGACTGCATGCGATTCAGGCTACGATCC"
       "AGTAGTGACATCGATGGCTAACGTTCGAGTGCATCAGTCCGATAGCTTGACCTAGGCATCGTAACGGTACTCAGTTCG")
ARR = np.frombuffer(REF.encode(), np.uint8)
POS = 80


def _mut(b):
    return {"A": "C", "C": "G", "G": "T", "T": "A"}[b]


@pytest.fixture
def header():
    import pysam
    return pysam.AlignmentHeader.from_dict({"SQ": [{"SN": "c1", "LN": len(REF)}]})


def _reads(vt, header, n_total, n_snp, n_del, *, snp_qual=30, start=50):
    """``n_total`` reads over POS; the first ``n_snp`` carry a SNP, the next ``n_del`` a 2 bp
    deletion right after POS."""
    out = []
    for i in range(n_total):
        if i < n_snp:
            seq = REF[start:POS] + _mut(REF[POS]) + REF[POS + 1:start + 60]
            quals = [30] * 60
            quals[POS - start] = snp_qual
            r = vt.make_read(header, f"s{i}", start, "60M", seq, qual=quals)
        elif i < n_snp + n_del:
            seq = REF[start:POS + 1] + REF[POS + 3:start + 62]
            r = vt.make_read(header, f"d{i}", start, f"{POS + 1 - start}M2D{start + 59 - POS}M",
                             seq)
        else:
            r = vt.make_read(header, f"r{i}", start, "60M", REF[start:start + 60])
        ev, _ = parse_read(r, REF.encode(), ARR, 0, 10)
        out.append(ReadInfo(r, r.reference_start, r.reference_end, ev))
    return out


@pytest.mark.parametrize("n_total,n_snp,kept", [(20, 3, True),    # 0.15 >= 0.12
                                                (20, 2, False),   # 0.10 <  0.12
                                                (10, 1, False),   # one read is not enough
                                                (10, 2, True)])
def test_snp_thresholds(vt, header, n_total, n_snp, kept):
    reads = _reads(vt, header, n_total, n_snp, 0)
    cands = find_candidates(reads, "c1", 0, len(REF), REF.encode(), 0, CandidateConfig())
    assert bool(cands) is kept
    if kept:
        c = cands[0]
        assert (c.pos, c.ref, c.alts, c.dp, c.ad) == (POS, REF[POS], [_mut(REF[POS])], n_total,
                                                      [n_total - n_snp, n_snp])


@pytest.mark.parametrize("n_total,n_del,kept", [(30, 2, True),    # 0.067 >= 0.06
                                                (40, 2, False),   # 0.05 < 0.06
                                                (30, 1, False)])
def test_indel_thresholds(vt, header, n_total, n_del, kept):
    reads = _reads(vt, header, n_total, 0, n_del)
    cands = find_candidates(reads, "c1", 0, len(REF), REF.encode(), 0, CandidateConfig())
    assert bool(cands) is kept
    if kept:
        assert (cands[0].ref, cands[0].alts) == (REF[POS:POS + 3], [REF[POS]])


def test_thresholds_are_configurable(vt, header):
    reads = _reads(vt, header, 20, 2, 0)
    cfg = CandidateConfig(min_fraction_snps=0.1)
    assert len(find_candidates(reads, "c1", 0, len(REF), REF.encode(), 0, cfg)) == 1


def test_low_base_quality_alt_is_ignored(vt, header):
    reads = _reads(vt, header, 10, 5, 0, snp_qual=9)
    assert find_candidates(reads, "c1", 0, len(REF), REF.encode(), 0, CandidateConfig()) == []


def test_multiallelic_site_shares_one_ref(vt, header):
    reads = _reads(vt, header, 20, 6, 6)
    cands = find_candidates(reads, "c1", 0, len(REF), REF.encode(), 0, CandidateConfig())
    assert len(cands) == 1
    c = cands[0]
    assert c.ref == REF[POS:POS + 3]
    assert sorted(c.alts) == sorted([REF[POS], _mut(REF[POS]) + REF[POS + 1:POS + 3]])
    assert c.ad[0] == 8 and sorted(c.ad[1:]) == [6, 6]


def test_event_alleles():
    pos, ref, alts = event_alleles([("X", 10, "A"), ("I", 10, "GG"), ("D", 10, 2)],
                                   REF.encode(), 0)
    assert pos == 10 and ref == REF[10:13]
    assert alts == ["A" + REF[11:13], REF[10] + "GG" + REF[11:13], REF[10]]


def test_allele_events_normalises():
    seq = b"ACGTTTTTGCA"
    # The same 1 bp deletion written at two places of the T run gives one event.
    assert allele_events(6, "TT", "T", seq) == allele_events(2, "GT", "G", seq) == [("D", 2, 1)]
    assert allele_events(1, "CGT", "CAT", seq) == [("X", 2, "A")]          # MNP trimmed
    assert allele_events(1, "CG", "AT", seq) == [("X", 1, "A"), ("X", 2, "T")]
    assert allele_events(1, "CG", "TAA", seq) is None                     # complex


def test_labels_from_truth(tmp_path, vt, header):
    import pysam

    ref_path = vt.write_ref(tmp_path / "ref.fa", {"c1": REF})
    fa = pysam.FastaFile(str(ref_path))
    # Truth: het SNP at POS, and a hom deletion written right-shifted in a repeat-free spot
    # (no shift possible, so it stays), plus a complex record far away.
    h = vio.vcf_header({"c1": len(REF)}, "S")
    recs = [
        {"contig": "c1", "pos": POS, "ref": REF[POS], "alts": (_mut(REF[POS]),),
         "filter": "PASS", "sample": {"GT": (0, 1)}},
        {"contig": "c1", "pos": 120, "ref": REF[120:123], "alts": (REF[120],),
         "filter": "PASS", "sample": {"GT": (1, 1)}},
        {"contig": "c1", "pos": 140, "ref": REF[140:142], "alts": ("TTT",),
         "filter": "PASS", "sample": {"GT": (0, 1)}},
    ]
    vio.write_vcf(recs, tmp_path / "truth.vcf.gz", h)
    vio.write_bed([("c1", 10, 150)], tmp_path / "conf.bed")
    truth = Truth.load(tmp_path / "truth.vcf.gz", tmp_path / "conf.bed", fa)
    reads = _reads(vt, header, 20, 6, 6)
    cand = find_candidates(reads, "c1", 0, len(REF), REF.encode(), 0, CandidateConfig())[0]
    snp_i = cand.alts.index(_mut(REF[POS]) + REF[POS + 1:POS + 3])
    del_i = 1 - snp_i
    assert truth.confident(cand)
    assert label_image(truth, cand, (snp_i,)) == 1        # het SNP
    assert label_image(truth, cand, (del_i,)) == 0        # deletion not in truth: false
    assert label_image(truth, cand, (0, 1)) == 1
    from deepsci.apps.variants.candidates import Candidate
    hom = Candidate("c1", 120, REF[120:123], [REF[120]], [("D", 120, 2)], 20, [0, 20])
    assert label_image(truth, hom, (0,)) == 2
    outside = Candidate("c1", 5, REF[5], ["A"], [("X", 5, "A")], 20, [10, 10])
    assert not truth.confident(outside)                   # outside the BED
    near_complex = Candidate("c1", 140, REF[140], ["A"], [("X", 140, "A")], 20, [10, 10])
    assert not truth.confident(near_complex)              # overlaps a complex truth record


def test_downsampling_keeps_pairs_together(vt, header):
    from deepsci.apps.variants.candidates import keep_read
    cfg = CandidateConfig(downsample_fraction=0.5, downsample_seed=3)
    kept = []
    for i in range(400):
        r1 = vt.make_read(header, f"p{i}", 10, "10M", REF[10:20])
        r2 = vt.make_read(header, f"p{i}", 60, "10M", REF[60:70], reverse=True)
        k1, k2 = keep_read(r1, cfg), keep_read(r2, cfg)
        assert k1 == k2
        kept.append(k1)
    assert 0.4 < sum(kept) / len(kept) < 0.6
