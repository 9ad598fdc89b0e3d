"""The variants notebook runs top to bottom on tiny settings (DEEPSCI_NOTEBOOK_QUICK=1), and
what it reports agrees with its own outputs, recomputed here independently."""
import csv
import re
from pathlib import Path

import pytest


@pytest.mark.timeout(400)
def test_notebook_executes(run_notebook):
    import pysam
    import tensorflow as tf

    from deepsci.apps.variants.make_examples import example_files, parse_example

    text, figures = run_notebook("variants")
    assert figures >= 1
    work = Path(re.search(r"run in (\S+)", text).group(1))
    # The label counts it prints are those of the examples it wrote.
    printed = [int(x) for x in re.search(r"labels hom-ref/het/hom-alt: \[(\d+), (\d+), (\d+)\]",
                                         text).groups()]
    labels = [0, 0, 0]
    for raw in tf.data.TFRecordDataset([str(f) for f in example_files(work / "train_examples")],
                                       compression_type="GZIP"):
        y = parse_example(raw.numpy())["label"]
        labels[y] += y >= 0
    assert printed == labels and sum(labels) > 0
    # Its evaluation counted every truth SNP of the test region, and bcftools found them.
    (contig, start, end), = [line.split("\t") for line in
                             (work / "test.bed").read_text().splitlines()]
    truth = [r for r in pysam.VariantFile(str(work / "sim" / "truth.vcf.gz"))
             if r.contig == contig and int(start) <= r.start < int(end)]
    n_snp = sum(len(r.ref) == len(r.alts[0]) for r in truth)
    for name in ("summary.csv", "bcftools.csv"):
        rows = {(r["Type"], r["Filter"]): r for r in csv.DictReader(open(work / name))}
        assert int(rows["SNP", "ALL"]["TRUTH.TOTAL"]) == n_snp > 0
    bcf = {(r["Type"], r["Filter"]): r for r in csv.DictReader(open(work / "bcftools.csv"))}
    assert float(bcf["SNP", "PASS"]["METRIC.Recall"]) >= 0.9
    # The five records it prints are the first five of its VCF.
    first = [str(r).split("\t")[:5] for r in pysam.VariantFile(str(work / "calls" /
                                                                 "calls.vcf.gz"))][:5]
    assert all("\t".join(f) in text for f in first)
