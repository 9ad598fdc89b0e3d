"""The hap.py-style evaluator on hand-made truth/call pairs."""
from __future__ import annotations

import pytest

from deepsci.apps.variants import io as vio
from deepsci.apps.variants.evaluate import EvaluateConfig, evaluate_calls

# Unique flanks, with a homopolymer run (positions 40..47) where indels can be placed
# in several equivalent ways.
SEQ = ("TGCATCAGTCCGATAGCTTGACCTAGGCATCGTAACGGTA" + "CAAAAAAAAG"
       + "GTCAGTACCGATGCTAGCGTCAATGCCTAGATCGGTACAGCTTACGGACTGATCCGTAGCTAGCAGTCTGACGATCGT"
       + "TACGCATGGACTACGTTAGCATCGACTGCATGCGATTCAGGCTACGATCCAGTAGTGACATCGATG")


def _vcf(path, recs, sample="S"):
    h = vio.vcf_header({"c1": len(SEQ)}, sample)
    out = []
    for pos, ref, alts, gt, *filt in recs:
        assert SEQ[pos:pos + len(ref)] == ref, (pos, ref)
        out.append({"contig": "c1", "pos": pos, "ref": ref, "alts": tuple(alts),
                    "filter": filt[0] if filt else "PASS", "qual": 30.0, "sample": {"GT": gt}})
    return vio.write_vcf(out, path, h)


def _row(rows, kind, filt="PASS"):
    return next(r for r in rows if r["Type"] == kind and r["Filter"] == filt)


@pytest.fixture
def ref(tmp_path, vt):
    return vt.write_ref(tmp_path / "ref.fa", {"c1": SEQ})


def test_counts_and_metrics(tmp_path, ref):
    truth = _vcf(tmp_path / "t.vcf.gz", [
        (5, SEQ[5], ["A" if SEQ[5] != "A" else "C"], (0, 1)),       # SNP found
        (20, SEQ[20], ["A" if SEQ[20] != "A" else "C"], (1, 1)),    # SNP, wrong genotype
        (60, SEQ[60], ["A" if SEQ[60] != "A" else "C"], (0, 1)),    # SNP missed
        (39, SEQ[39:41], [SEQ[39]], (0, 1)),                        # 1 bp deletion of C
    ])
    calls = _vcf(tmp_path / "c.vcf.gz", [
        (5, SEQ[5], ["A" if SEQ[5] != "A" else "C"], (0, 1)),
        (20, SEQ[20], ["A" if SEQ[20] != "A" else "C"], (0, 1)),
        (100, SEQ[100], ["A" if SEQ[100] != "A" else "C"], (0, 1)),  # FP
        (110, SEQ[110], ["A" if SEQ[110] != "A" else "C"], (0, 1), "LowQual"),  # filtered FP
        (39, SEQ[39:41], [SEQ[39]], (0, 1)),
    ])
    rows = evaluate_calls(EvaluateConfig(calls=str(calls), truth=str(truth), ref=str(ref),
                                         out=str(tmp_path / "summary.csv")))
    snp = _row(rows, "SNP")
    assert (snp["TRUTH.TOTAL"], snp["TRUTH.TP"], snp["TRUTH.FN"]) == (3, 1, 2)
    assert (snp["QUERY.TOTAL"], snp["QUERY.TP"], snp["QUERY.FP"], snp["FP.gt"]) == (3, 1, 2, 1)
    assert snp["METRIC.Recall"] == pytest.approx(1 / 3)
    assert snp["METRIC.Precision"] == pytest.approx(1 / 3)
    assert snp["METRIC.F1_Score"] == pytest.approx(1 / 3)
    assert _row(rows, "SNP", "ALL")["QUERY.FP"] == 3          # the LowQual call counts in ALL
    indel = _row(rows, "INDEL")
    assert indel["METRIC.F1_Score"] == 1.0
    text = (tmp_path / "summary.csv").read_text().splitlines()
    assert text[0].startswith("Type,Filter,TRUTH.TOTAL,TRUTH.TP")
    assert len(text) == 5


def test_normalisation_resolves_indel_representation(tmp_path, ref):
    # Truth deletes one A at the left of the run; the caller wrote it at the right end.
    truth = _vcf(tmp_path / "t.vcf.gz", [(40, "CA", ["C"], (0, 1)),
                                         (50, "G", ["GTT"], (1, 1))])
    # The same insertion of TT shifted right by one base and padded with an extra base.
    calls = _vcf(tmp_path / "c.vcf.gz", [(47, "AA", ["A"], (0, 1)),
                                         (51, "TC", ["TTTC"], (1, 1))])
    rows = evaluate_calls(EvaluateConfig(calls=str(calls), truth=str(truth), ref=str(ref),
                                         out=str(tmp_path / "s.csv")))
    indel = _row(rows, "INDEL")
    assert indel["TRUTH.TP"] == 2 and indel["QUERY.FP"] == 0


def test_multiallelic_split_and_confident_bed(tmp_path, ref):
    a, b = [x for x in "ACGT" if x != SEQ[30]][:2]
    truth = _vcf(tmp_path / "t.vcf.gz", [(30, SEQ[30], [a, b], (1, 2)),
                                         (150, SEQ[150], ["A" if SEQ[150] != "A" else "C"],
                                          (0, 1))])
    calls = _vcf(tmp_path / "c.vcf.gz", [(30, SEQ[30], [a], (0, 1)),
                                         (30 + 0, SEQ[30], [b], (0, 1))])
    bed = vio.write_bed([("c1", 0, 100)], tmp_path / "conf.bed")
    rows = evaluate_calls(EvaluateConfig(calls=str(calls), truth=str(truth), ref=str(ref),
                                         confident_bed=str(bed), out=str(tmp_path / "s.csv")))
    snp = _row(rows, "SNP")
    # 1/2 splits into two het alleles; the SNP at 150 is outside the confident region.
    assert snp["TRUTH.TOTAL"] == 2 and snp["TRUTH.TP"] == 2 and snp["QUERY.FP"] == 0


def _other(b):
    return "A" if b != "A" else "C"


def test_haplotype_matching_reconciles_an_mnp(tmp_path, ref):
    mnp = _other(SEQ[100]) + _other(SEQ[101])
    truth = _vcf(tmp_path / "t.vcf.gz", [(100, SEQ[100:102], [mnp], (1, 1))])   # hom MNP
    calls = _vcf(tmp_path / "c.vcf.gz", [(100, SEQ[100], [mnp[0]], (1, 1)),
                                         (101, SEQ[101], [mnp[1]], (1, 1))])
    snp = _row(evaluate_calls(EvaluateConfig(calls=str(calls), truth=str(truth), ref=str(ref),
                                             out=str(tmp_path / "s.csv"))), "SNP")
    # The MNP is atomised into the same two SNPs the caller wrote (hap.py counts per
    # atomised record; this test once expected TRUTH.TP 1 against QUERY.TP 2).
    assert (snp["TRUTH.TP"], snp["TRUTH.FN"], snp["QUERY.TP"], snp["QUERY.FP"]) == (2, 0, 2, 0)


def test_haplotype_matching_needs_the_same_genotype(tmp_path, ref):
    mnp = _other(SEQ[100]) + _other(SEQ[101])
    truth = _vcf(tmp_path / "t.vcf.gz", [(100, SEQ[100:102], [mnp], (1, 1))])
    # Two het SNPs may sit on different copies: not the hom MNP's haplotypes.
    calls = _vcf(tmp_path / "c.vcf.gz", [(100, SEQ[100], [mnp[0]], (0, 1)),
                                         (101, SEQ[101], [mnp[1]], (0, 1))])
    snp = _row(evaluate_calls(EvaluateConfig(calls=str(calls), truth=str(truth), ref=str(ref),
                                             out=str(tmp_path / "s.csv"))), "SNP")
    assert (snp["TRUTH.TP"], snp["QUERY.TP"], snp["QUERY.FP"]) == (0, 0, 2)


def test_haplotype_matching_of_a_complex_allele(tmp_path, ref):
    # Truth: SNP at 120 and a 2-bp deletion right after it on the same copy, as two records.
    snp = _other(SEQ[120])
    truth = _vcf(tmp_path / "t.vcf.gz", [(120, SEQ[120], [snp], (0, 1)),
                                         (121, SEQ[121:124], [SEQ[121]], (0, 1))])
    # Calls: one complex allele spelling the same haplotype.
    calls = _vcf(tmp_path / "c.vcf.gz", [(120, SEQ[120:124], [snp + SEQ[121]], (0, 1))])
    rows = evaluate_calls(EvaluateConfig(calls=str(calls), truth=str(truth), ref=str(ref),
                                         out=str(tmp_path / "s.csv")))
    s, i = _row(rows, "SNP"), _row(rows, "INDEL")
    assert s["TRUTH.TP"] + i["TRUTH.TP"] == 2 and s["QUERY.FP"] + i["QUERY.FP"] == 0
