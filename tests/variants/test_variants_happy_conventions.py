"""hap.py/GA4GH counting conventions of ``variants evaluate`` on hand-built VCF pairs.

Every scenario is checked twice: against counts worked out by hand (in the comments), and,
where the convention allows, against an independent path written here: ``bcftools norm
--atomize -m -any`` (htslib's own left-alignment and atomisation), the copies of a
split het-alt record joined again, confident regions as a set of positions, and exact
``(contig, pos, REF, ALT, zygosity)`` matching.
"""
from __future__ import annotations

import csv
import json
import math
from collections import Counter

import pysam
import pysam.bcftools
import pytest

from deepsci.apps.variants.evaluate import (
    CONVENTIONS,
    ConfidentRegions,
    EvaluateConfig,
    atomise,
    evaluate_calls,
    run_evaluate,
)
from deepsci.apps.variants.io import Region

# Unique flanks, a homopolymer (41..48: eight A), a CA repeat (91..100); 0-based.
SEQ = ("TGCATCAGTCCGATAGCTTGACCTAGGCATCGTAACGGTA" + "CAAAAAAAAG"
       + "GTCAGTACCGATGCTAGCGTCAATGCCTAGATCGGTACAG" + "TCACACACACAG"
       + "CTTACGGACTGATCCGTAGCTAGCAGTCTGACGATCGTTACGCATGGACTACGTTAGCATCGACTGCATGCGATTCAGG")
COUNTS = ["TRUTH.TOTAL", "TRUTH.TP", "TRUTH.FN", "QUERY.TOTAL", "QUERY.TP", "QUERY.FP",
          "FP.gt", "QUERY.UNK"]


def _vcf(path, recs):
    """A one-sample VCF written with pysam: ``(pos0, REF, ALTs, GT[, FILTER])`` records."""
    h = pysam.VariantHeader()
    h.contigs.add("c1", length=len(SEQ))
    h.add_line('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
    h.add_line('##FILTER=<ID=LowQual,Description="Low quality">')
    h.add_sample("S")
    with pysam.VariantFile(str(path), "w", header=h) as f:
        for pos, ref, alts, gt, *filt in sorted(recs, key=lambda r: (r[0], r[1], r[2])):
            assert SEQ[pos:pos + len(ref)] == ref, (pos, ref, SEQ[pos:pos + len(ref)])
            r = f.new_record(contig="c1", start=pos, alleles=(ref, *alts), qual=30.0,
                             filter=filt[0] if filt else "PASS")
            r.samples["S"]["GT"] = gt
            f.write(r)
    return path


def _bed(path, rows):
    path.write_text("".join(f"c1\t{s}\t{e}\n" for s, e in rows))
    return path


@pytest.fixture
def ref(tmp_path, vt):
    return vt.write_ref(tmp_path / "ref.fa", {"c1": SEQ})


def _run(tmp_path, ref, truth, calls, bed=None):
    rows = evaluate_calls(EvaluateConfig(calls=str(calls), truth=str(truth), ref=str(ref),
                                         confident_bed=str(bed) if bed else None,
                                         out=str(tmp_path / "summary.csv")))
    return {(r["Type"], r["Filter"]): r for r in rows}


# --- the independent path -------------------------------------------------------------

def _bcftools_atoms(vcf, ref, out, pass_only):
    """``{(contig, pos, REF, ALT): hom}`` from bcftools' atomised, left-aligned records."""
    pysam.bcftools.norm("-f", str(ref), "-a", "-m", "-any", "-O", "v", "-o", str(out),
                        str(vcf), catch_stdout=False)
    carriers = {}
    with pysam.VariantFile(str(out)) as f:
        for rec in f:
            if pass_only and not set(rec.filter.keys()) <= {"PASS"}:
                continue
            gt = rec.samples[0]["GT"]
            for ai, alt in enumerate(rec.alts or (), 1):
                idx = {i for i, g in enumerate(gt) if g == ai}
                if alt == "*" or not idx:
                    continue
                # bcftools splits a 1/2 record into 1/0 and 0/1 before atomising: the same
                # atom from both ALTs sits on both copies.
                key = (rec.contig, rec.start, rec.ref.upper(), alt.upper())
                had, n = carriers.get(key, (set(), len(gt)))
                carriers[key] = (had | idx, n)
    return {k: len(c) == n for k, (c, n) in carriers.items()}


def _in_conf(key, positions):
    contig, pos, ref, alt = key
    while ref and alt and ref[-1] == alt[-1]:
        ref, alt = ref[:-1], alt[:-1]
    while ref and alt and ref[0] == alt[0]:
        ref, alt, pos = ref[1:], alt[1:], pos + 1
    if not ref:      # an insertion: the bases on both sides
        return (contig, pos - 1) in positions and (contig, pos) in positions
    return any((contig, p) in positions for p in range(pos, pos + len(ref)))


def _reference_counts(tmp_path, ref, truth_vcf, calls_vcf, bed_rows=None) -> dict:
    positions = (None if bed_rows is None else
                 {("c1", p) for s, e in bed_rows for p in range(s, e)})
    out = {}
    truth = _bcftools_atoms(truth_vcf, ref, tmp_path / "t.atoms.vcf", True)
    for filt, pass_only in (("ALL", False), ("PASS", True)):
        query = _bcftools_atoms(calls_vcf, ref, tmp_path / "q.atoms.vcf", pass_only)
        c = {k: Counter() for k in ("SNP", "INDEL")}

        def kind(k):
            return "SNP" if len(k[2]) == len(k[3]) == 1 else "INDEL"
        t = {k: h for k, h in truth.items() if positions is None or _in_conf(k, positions)}
        for k, h in t.items():
            c[kind(k)].update(["TRUTH.TOTAL", "TRUTH.TP" if query.get(k) == h else "TRUTH.FN"])
        for k, h in query.items():
            if positions is not None and not _in_conf(k, positions):
                c[kind(k)].update(["QUERY.TOTAL", "QUERY.UNK"])
                continue
            c[kind(k)].update(["QUERY.TOTAL", "QUERY.TP" if t.get(k) == h else "QUERY.FP"])
            if k in t and t[k] != h:
                c[kind(k)]["FP.gt"] += 1
        for kd in c:
            out[(kd, filt)] = {col: c[kd][col] for col in COUNTS}
    return out


def _counts(rows):
    return {key: {c: r[c] for c in COUNTS} for key, r in rows.items()}


def _expect(rows, kind, filt="ALL", **want):
    got = {k: rows[(kind, filt)][k.replace("_", ".")] for k in want}
    assert got == want, (kind, filt)


# --- scenarios ------------------------------------------------------------------------

def test_mnps_are_atomised_on_both_sides(tmp_path, ref):
    truth = _vcf(tmp_path / "t.vcf", [
        (10, "CGA", ["AGT"], (0, 1)),    # het MNP: 10 C>A, 12 A>T (11 unchanged)
        (60, "AT", ["CG"], (1, 1)),      # hom MNP: 60 A>C, 61 T>G
    ])
    calls = _vcf(tmp_path / "c.vcf", [
        (10, "C", ["A"], (0, 1)), (12, "A", ["T"], (0, 1)),   # the same MNP as two SNPs
        (60, "AT", ["CA"], (1, 1)),                           # 60 right, 61 T>A wrong
        (150, "CTA", ["AGC"], (0, 1)),                        # three SNPs, none true
    ])
    rows = _run(tmp_path, ref, truth, calls)
    # Truth 4 SNPs (10, 12, 60, 61); calls 7 SNPs, 3 of them true.
    _expect(rows, "SNP", TRUTH_TOTAL=4, TRUTH_TP=3, TRUTH_FN=1, QUERY_TOTAL=7, QUERY_TP=3,
            QUERY_FP=4, FP_gt=0)
    assert rows[("SNP", "ALL")]["METRIC.Recall"] == pytest.approx(3 / 4)
    assert rows[("SNP", "ALL")]["METRIC.Precision"] == pytest.approx(3 / 7)
    assert rows[("INDEL", "ALL")]["TRUTH.TOTAL"] == 0
    assert _counts(rows) == _reference_counts(tmp_path, ref, truth, calls)


def test_multiallelic_records(tmp_path, ref):
    truth = _vcf(tmp_path / "t.vcf", [
        (20, "A", ["C", "G"], (1, 2)),            # two het SNPs
        (70, "CA", ["C", "GA"], (1, 2)),          # a deletion and a SNP, one per copy
        (120, "GC", ["AT", "AC"], (1, 2)),        # MNPs sharing 120 G>A: hom there, 121 het
        (160, "A", ["G"], (0, 1)),
    ])
    calls = _vcf(tmp_path / "c.vcf", [
        (20, "A", ["G", "C"], (1, 2)),            # ALTs in the other order
        (70, "CA", ["C"], (0, 1)), (70, "C", ["G"], (0, 1)),
        (120, "G", ["A"], (1, 1)), (121, "C", ["T"], (0, 1)),
        (160, "A", ["G", "T"], (1, 2)),           # A>T is an extra allele
    ])
    rows = _run(tmp_path, ref, truth, calls)
    _expect(rows, "SNP", TRUTH_TOTAL=6, TRUTH_TP=6, TRUTH_FN=0, QUERY_TOTAL=7, QUERY_TP=6,
            QUERY_FP=1, FP_gt=0)
    _expect(rows, "INDEL", TRUTH_TOTAL=1, TRUTH_TP=1, QUERY_TOTAL=1, QUERY_TP=1, QUERY_FP=0)
    assert _counts(rows) == _reference_counts(tmp_path, ref, truth, calls)


def test_het_alt_genotype_mismatch_is_fp_gt(tmp_path, ref):
    truth = _vcf(tmp_path / "t.vcf", [(120, "GC", ["AT", "AC"], (1, 2))])
    # Both SNPs called het: 120 G>A should be hom (both ALTs carry it).
    calls = _vcf(tmp_path / "c.vcf", [(120, "GC", ["AT"], (0, 1))])
    rows = _run(tmp_path, ref, truth, calls)
    _expect(rows, "SNP", TRUTH_TOTAL=2, TRUTH_TP=1, TRUTH_FN=1, QUERY_TOTAL=2, QUERY_TP=1,
            QUERY_FP=1, FP_gt=1)
    assert _counts(rows) == _reference_counts(tmp_path, ref, truth, calls)


def test_indel_representations_are_left_aligned(tmp_path, ref):
    truth = _vcf(tmp_path / "t.vcf", [
        (40, "CA", ["C"], (0, 1)),         # one A of the run deleted, left-aligned
        (90, "T", ["TCA"], (1, 1)),        # CA inserted into the CA repeat, left-aligned
        (150, "C", ["CTT"], (0, 1)),       # missed
    ])
    calls = _vcf(tmp_path / "c.vcf", [
        (47, "AA", ["A"], (0, 1)),         # the same deletion at the right end of the run
        (99, "CA", ["CACA"], (1, 1)),      # the same insertion, right end, padded
        (130, "TGA", ["T"], (0, 1)),       # a false deletion
    ])
    rows = _run(tmp_path, ref, truth, calls)
    _expect(rows, "INDEL", TRUTH_TOTAL=3, TRUTH_TP=2, TRUTH_FN=1, QUERY_TOTAL=3, QUERY_TP=2,
            QUERY_FP=1, FP_gt=0)
    assert _counts(rows) == _reference_counts(tmp_path, ref, truth, calls)


BED = [(30, 60), (0, 30), (60, 75), (100, 140), (80, 120), (85, 90), (150, 160), (165, 170)]


def test_confident_regions_are_merged_and_applied_as_hap_py(tmp_path, ref):
    common = [
        (27, "CATCG", ["C"], (0, 1)),   # deletes 28..31, across the abutting 0-30 | 30-60
        (59, "G", ["GT"], (0, 1)),      # insertion between 59 and 60: 30-60 | 60-75
        (95, "C", ["T"], (0, 1)),       # in 80-120, after the nested 85-90 begins
        (130, "T", ["A"], (1, 1)),      # in the overlap of 80-120 and 100-140
        (157, "AGCAT", ["A"], (0, 1)),  # deletes 158..161: overlaps 150-160, runs past it
        (164, "A", ["AG"], (0, 1)),     # insertion between 164 (outside) and 165: excluded
        (175, "T", ["C"], (0, 1)),      # outside every region
    ]
    truth = _vcf(tmp_path / "t.vcf", common)
    calls = _vcf(tmp_path / "c.vcf", common + [(135, "A", ["C"], (0, 1)),    # FP inside
                                               (178, "A", ["G"], (0, 1))])   # outside: UNK
    bed = _bed(tmp_path / "conf.bed", BED)
    rows = _run(tmp_path, ref, truth, calls, bed)
    _expect(rows, "INDEL", TRUTH_TOTAL=3, TRUTH_TP=3, TRUTH_FN=0, QUERY_TOTAL=4, QUERY_TP=3,
            QUERY_FP=0, QUERY_UNK=1)
    _expect(rows, "SNP", TRUTH_TOTAL=2, TRUTH_TP=2, QUERY_TOTAL=5, QUERY_TP=2, QUERY_FP=1,
            QUERY_UNK=2)
    assert rows[("SNP", "ALL")]["METRIC.Frac_NA"] == pytest.approx(2 / 5)
    assert rows[("SNP", "ALL")]["METRIC.Precision"] == pytest.approx(2 / 3)
    assert _counts(rows) == _reference_counts(tmp_path, ref, truth, calls, BED)


def test_confident_regions_unit():
    conf = ConfidentRegions([Region("c1", s, e) for s, e in BED] + [Region("c2", 5, 5)])
    assert list(zip(*conf.iv["c1"], strict=True)) == [(0, 75), (80, 140), (150, 160), (165, 170)]
    assert "c2" not in conf.iv                                # empty intervals are dropped
    assert conf.covers("c1", 29, 31) and conf.covers("c1", 80, 140)
    assert not conf.covers("c1", 70, 81) and not conf.overlaps("c1", 75, 80)
    assert conf.overlaps("c1", 74, 76) and conf.overlaps("c1", 159, 165)
    assert conf.contains("c1", 27, "CATCG", "C")
    assert conf.contains("c1", 157, "AGCAT", "A")          # overlap is enough
    assert not conf.contains("c1", 159, "C", "CG")         # insertion with 160 outside
    assert conf.contains("c1", 59, "G", "GT")
    assert not conf.contains("c1", 75, "C", "T") and not conf.contains("c2", 5, "A", "C")
    # The padding base does not count: a deletion anchored at 74 deletes 75.., outside.
    assert not conf.contains("c1", 74, "GC", "G")


def test_rescued_haplotypes_count_on_their_own_side(tmp_path, ref):
    truth = _vcf(tmp_path / "t.vcf", [
        (20, "A", ["G"], (0, 1)),          # found
        (60, "A", ["C"], (0, 1)),          # missed
        (111, "TG", ["T"], (0, 1)),        # 112 G deleted ...
        (112, "G", ["GC"], (0, 1)),        # ... and C inserted after it: a G>C SNP
    ])
    calls = _vcf(tmp_path / "c.vcf", [
        (20, "A", ["G"], (0, 1)),
        (80, "A", ["T"], (0, 1)),          # false
        (112, "G", ["C"], (0, 1)),         # the same haplotype as the truth's two indels
    ])
    rows = _run(tmp_path, ref, truth, calls)
    _expect(rows, "INDEL", TRUTH_TOTAL=2, TRUTH_TP=2, TRUTH_FN=0, QUERY_TOTAL=0, QUERY_TP=0)
    _expect(rows, "SNP", TRUTH_TOTAL=2, TRUTH_TP=1, TRUTH_FN=1, QUERY_TOTAL=3, QUERY_TP=2,
            QUERY_FP=1)
    snp, indel = rows[("SNP", "ALL")], rows[("INDEL", "ALL")]
    # precision from the query side (2/3), recall from the truth side (1/2)
    assert snp["METRIC.Precision"] == pytest.approx(2 / 3)
    assert snp["METRIC.Recall"] == pytest.approx(1 / 2)
    assert snp["METRIC.F1_Score"] == pytest.approx(4 / 7)
    assert indel["METRIC.Recall"] == 1.0 and math.isnan(indel["METRIC.Precision"])
    # Exact matching alone finds neither indel: the rescue is what made them TPs.
    assert _reference_counts(tmp_path, ref, truth, calls)[("INDEL", "ALL")]["TRUTH.TP"] == 0


def test_filters_truth_pass_only_and_pass_rows(tmp_path, ref):
    truth = _vcf(tmp_path / "t.vcf", [(20, "A", ["G"], (0, 1), "LowQual"),   # not truth
                                      (60, "A", ["C"], (0, 1))])
    calls = _vcf(tmp_path / "c.vcf", [(20, "A", ["G"], (0, 1)),
                                      (60, "A", ["C"], (0, 1), "LowQual")])
    rows = _run(tmp_path, ref, truth, calls)
    _expect(rows, "SNP", "ALL", TRUTH_TOTAL=1, TRUTH_TP=1, QUERY_TOTAL=2, QUERY_TP=1, QUERY_FP=1)
    _expect(rows, "SNP", "PASS", TRUTH_TOTAL=1, TRUTH_TP=0, TRUTH_FN=1, QUERY_TOTAL=1,
            QUERY_TP=0, QUERY_FP=1)
    assert _counts(rows) == _reference_counts(tmp_path, ref, truth, calls)


def test_atomise_unit(ref):
    fa = pysam.FastaFile(str(ref))

    def fetch(s, e):
        return fa.fetch("c1", s, e).upper()
    assert atomise(10, "CGA", "AGT", fetch) == [(10, "C", "A"), (12, "A", "T")]
    assert atomise(47, "AA", "A", fetch) == [(40, "CA", "C")]
    assert atomise(99, "CA", "CACA", fetch) == [(90, "T", "TCA")]
    assert atomise(0, "TG", "G", fetch) == [(0, "TG", "G")]      # no base before: after
    # Complex: GACC > AT = two SNPs and the CC deletion after them (as bcftools --atomize).
    assert atomise(19, "GACC", "AT", fetch) == [(19, "G", "A"), (20, "A", "T"), (20, "ACC", "A")]
    # A deletion next to the allele's own SNP is not shifted over it.
    assert atomise(39, "ACAA", "GA", fetch) == [(39, "A", "G"), (39, "ACA", "A")]


def test_outputs_keep_their_readers_and_say_the_conventions(tmp_path, ref):
    truth = _vcf(tmp_path / "t.vcf", [(20, "A", ["G"], (0, 1))])
    calls = _vcf(tmp_path / "c.vcf", [(20, "A", ["G"], (0, 1)), (178, "A", ["G"], (0, 1))])
    bed = _bed(tmp_path / "conf.bed", [(0, 100)])
    out = tmp_path / "summary.csv"
    rows = run_evaluate(EvaluateConfig(calls=str(calls), truth=str(truth), ref=str(ref),
                                       confident_bed=str(bed), out=str(out)))
    header = out.read_text().splitlines()[0].split(",")
    assert header[:12] == ["Type", "Filter", "TRUTH.TOTAL", "TRUTH.TP", "TRUTH.FN",
                           "QUERY.TOTAL", "QUERY.TP", "QUERY.FP", "FP.gt", "METRIC.Recall",
                           "METRIC.Precision", "METRIC.F1_Score"]
    table = list(csv.DictReader(open(out)))
    snp = next(r for r in table if r["Type"] == "SNP" and r["Filter"] == "PASS")
    # what release.f1_table, demo._f1 and bench/variants.py read
    assert float(snp["METRIC.F1_Score"]) == 1.0 and int(snp["TRUTH.TP"]) == 1
    assert int(snp["QUERY.FP"]) == 0 and int(snp["TRUTH.FN"]) == 0
    assert (int(snp["QUERY.TOTAL"]), int(snp["QUERY.UNK"])) == (2, 1)
    assert len(table) == len(rows) == 4
    rec = json.loads((tmp_path / "summary.csv.run.json").read_text())
    assert rec["results"]["conventions"] == CONVENTIONS and "atomised" in CONVENTIONS
    assert rec["results"]["SNP PASS"]["QUERY.UNK"] == 1
