"""Issue #19: every way a user's file or option reaches ``deepsci variants`` fails in one line.

Each case runs the CLI in-process through the ``bad_input`` fixture (exit 2, exactly one
``error:`` line, no traceback, nothing written or changed under the watched folders). The
inputs are built once: a 2 kb reference, a sorted and indexed BAM of 40 reads, damaged
copies of it, call tables, BED files, VCFs and model files.
"""
from __future__ import annotations

import gzip
import json
import random
import shutil

import pytest

from deepsci.apps.cli import main

LENGTH = 2000


def _reads(header, order):
    """40 reads of 50 bp, names and tags of one size, so every record encodes to as many
    bytes: a shuffled copy keeps the sorted file's index offsets valid."""
    import pysam

    rng = random.Random(1)
    out = []
    for k in range(40):
        r = pysam.AlignedSegment(header)
        r.query_name = f"read{k:03d}"
        r.reference_id = 0
        r.reference_start = 100 + 40 * k
        r.cigarstring = "50M"
        r.query_sequence = "".join(rng.choice("ACGT") for _ in range(50))
        r.query_qualities = pysam.qualitystring_to_array("I" * 50)
        r.mapping_quality = 60
        r.set_tag("RG", "rg")
        out.append(r)
    return [out[i] for i in order]


def _write_bam(path, order, header):
    import pysam

    with pysam.AlignmentFile(str(path), "wb", header=header) as f:
        for r in _reads(header, order):
            f.write(r)


def _card(path, app, task):
    from deepsci.core.models.card import ModelCard, card_path

    path.write_bytes(b"PK\x03\x04 a damaged zip, not a .keras")
    card_path(path).write_text(json.dumps(ModelCard(app=app, task=task).to_dict()))
    return path


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """Every input of the cases, under one folder that each case watches."""
    import pysam

    from deepsci.apps.variants.io import write_fasta

    root = tmp_path_factory.mktemp("variants_bad")
    rng = random.Random(0)
    ref = write_fasta({"chr1": "".join(rng.choice("ACGT") for _ in range(LENGTH))},
                      root / "ref.fa")
    header = pysam.AlignmentHeader.from_dict({
        "HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": LENGTH}],
        "RG": [{"ID": "rg", "SM": "S1"}]})
    good = root / "good.bam"
    _write_bam(good, range(40), header)
    pysam.index(str(good))
    # Sorted header, shuffled records, the sorted file's (still consistent) index.
    order = list(range(40))
    order[10], order[25] = order[25], order[10]
    _write_bam(root / "unsorted.bam", order, header)
    shutil.copy(f"{good}.bai", root / "unsorted.bam.bai")
    shutil.copy(good, root / "noindex.bam")
    data = good.read_bytes()
    (root / "truncated.bam").write_bytes(data[: len(data) // 2])
    shutil.copy(f"{good}.bai", root / "truncated.bam.bai")
    (root / "text.bam").write_text("not a BAM\n")
    (root / "notfasta.fa").write_text("chr1 ACGT\n")
    (root / "plain.txt").write_text("a file of the user's")
    # Call tables.
    head = "##sample=S1\n#contig\tpos\tref\talts\talt_idx\tdp\tad\tp_homref\tp_het\tp_homalt\n"
    (root / "calls_plain.tsv.gz").write_text(head)
    with gzip.open(root / "calls_ok.tsv.gz", "wt") as f:
        f.write(head + "chr1\t500\tA\tC\t0\t10\t5,5\t0.1\t0.8\t0.1\n")
    with gzip.open(root / "calls_header.tsv.gz", "wt") as f:
        f.write("contig,pos\nchr1,5\n")
    with gzip.open(root / "calls_row.tsv.gz", "wt") as f:
        f.write(head + "chr1\tfive\tA\tC\t0\t10\t5,5\t0.1\t0.8\t0.1\n")
    with gzip.open(root / "calls_short.tsv.gz", "wt") as f:
        f.write(head + "chr1\t500\tA\tC\n")
    with gzip.open(root / "calls_nan.tsv.gz", "wt") as f:
        f.write(head + "chr1\t500\tA\tC\t0\t10\t5,5\tnan\t0.8\t0.1\n")
    with gzip.open(root / "calls_contig.tsv.gz", "wt") as f:
        f.write(head + "chrZ\t500\tA\tC\t0\t10\t5,5\t0.1\t0.8\t0.1\n")
    with gzip.open(root / "calls_beyond.tsv.gz", "wt") as f:
        f.write(head + f"chr1\t{LENGTH + 50}\tA\tC\t0\t10\t5,5\t0.1\t0.8\t0.1\n")
    gz = gzip.compress((head + "chr1\t500\tA\tC\t0\t10\t5,5\t0.1\t0.8\t0.1\n" * 50).encode())
    (root / "calls_cut.tsv.gz").write_bytes(gz[: len(gz) - 12])
    # BED files.
    (root / "binary.bed").write_bytes(b"\x00\xff\xfe binary \x89PNG")
    (root / "notgz.bed.gz").write_text("chr1\t0\t100\n")
    (root / "negative.bed").write_text("chr1\t-5\t100\n")
    (root / "inverted.bed").write_text("chr1\t500\t100\n")
    (root / "words.bed").write_text("chr1 start end\n")
    # VCFs.
    (root / "garbage.vcf").write_text("this is not a VCF\n")
    vcf_head = ('##fileformat=VCFv4.2\n##contig=<ID=chr1,length=2000>\n'
                '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
                '#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n')
    (root / "truth.vcf").write_text(vcf_head + "chr1\t300\t.\tA\tC\t.\tPASS\t.\tGT\t0/1\n")
    (root / "badpos.vcf").write_text(vcf_head + "chr1\tabc\t.\tA\tC\t.\tPASS\t.\tGT\t0/1\n")
    (root / "nosample.vcf").write_text(vcf_head.replace("\tFORMAT\tS1", "")
                                       + "chr1\t300\t.\tA\tC\t.\tPASS\t.\n")
    # Models: another app's, one without its card, a damaged one with a variants card.
    (root / "mol").mkdir()
    _card(root / "mol" / "model.keras", "molecules", "qm9-properties")
    (root / "nocard").mkdir()
    (root / "nocard" / "model.keras").write_bytes(b"PK\x03\x04")
    (root / "broken").mkdir()
    _card(root / "broken" / "model.keras", "variants", "genotype")
    # A real (untrained, width-4) model, so that `run` gets past loading it.
    import keras

    from deepsci.apps.variants.model import build_model, genotype_card
    from deepsci.core.models.serialization import save_model

    keras.utils.set_random_seed(0)
    save_model(build_model("small", width=4), root / "tiny" / "model.keras",
               card=genotype_card(training={}, data={}, metrics={}, extra={}))
    # A finished make-examples folder (for call-variants) and a finished VCF.
    assert main(["variants", "make-examples", "--reads", str(good), "--ref", str(ref),
                 "--out", str(root / "ex"), "--scheduler", "inline", "--progress", "off"]) == 0
    assert main(["variants", "postprocess-variants", "--calls", str(root / "calls_ok.tsv.gz"),
                 "--ref", str(ref), "--out", str(root / "done.vcf.gz")]) == 0
    return root


def _me(d, *extra, reads="good.bam", out="o"):
    return ["variants", "make-examples", "--reads", d / reads, "--ref", d / "ref.fa",
            "--out", d / out, "--scheduler", "inline", *extra]


def _pp(d, calls, *extra, out="o.vcf.gz"):
    return ["variants", "postprocess-variants", "--calls", d / calls, "--ref", d / "ref.fa",
            "--out", d / out, *extra]


def _cv(d, *extra, model="broken", out="o.tsv.gz"):
    return ["variants", "call-variants", "--examples", d / "ex", "--model", d / model,
            "--out", d / out, *extra]


def _ev(d, calls, truth="truth.vcf", *extra):
    return ["variants", "evaluate", "--calls", d / calls, "--truth", d / truth,
            "--ref", d / "ref.fa", "--out", d / "o.csv", *extra]


def _run(d, *extra, out="o"):
    return ["variants", "run", "--reads", d / "good.bam", "--ref", d / "ref.fa", "--model",
            d / "broken", "--out", d / out, "--scheduler", "inline", *extra]


def _sim(d, *extra):
    return ["variants", "simulate", "--out", d / "o", *extra]


CASES = {
    # Damaged or wrong alignment and reference files.
    "bam_missing": (lambda d: _me(d, reads="none.bam"), r"expected a BAM/CRAM file, found nothing"),
    "bam_text": (lambda d: _me(d, reads="text.bam"), r"found magic"),
    "bam_truncated": (lambda d: _me(d, reads="truncated.bam"), r"truncated"),
    "bam_no_index": (lambda d: _me(d, reads="noindex.bam"), r"expected an index"),
    "bam_unsorted_records": (lambda d: _me(d, reads="unsorted.bam"),
                             r"found a record at chr1:\d+ after one at.*unsorted\.bam"),
    "ref_not_fasta": (lambda d: _me(d)[:5] + [d / "notfasta.fa"] + _me(d)[6:],
                      r"expected a FASTA file starting with '>'"),
    # Regions strings and BED files.
    "region_syntax": (lambda d: _me(d, "--regions", "chr1:10-x"), r"expected a region like"),
    "region_contig": (lambda d: _me(d, "--regions", "chrZ:1-100"), r"contig of the FASTA"),
    "region_zero_start": (lambda d: _me(d, "--regions", "chr1:0-100"), r"start >= 1"),
    "region_inverted": (lambda d: _me(d, "--regions", "chr1:500-100"), r"non-empty region"),
    "region_outside": (lambda d: _me(d, "--regions", "chr1:1-99999"), r"inside chr1"),
    "bed_binary": (lambda d: _me(d, "--regions", d / "binary.bed"), r"binary\.bed"),
    "bed_not_gzip": (lambda d: _me(d, "--regions", d / "notgz.bed.gz"), r"gzip"),
    "bed_negative": (lambda d: _me(d, "--regions", d / "negative.bed"), r"0 <= start < end"),
    "bed_inverted": (lambda d: _me(d, "--regions", d / "inverted.bed"), r"0 <= start < end"),
    "bed_words": (lambda d: _me(d, "--regions", d / "words.bed"), r"contig<TAB>start"),
    "confident_bed_binary": (lambda d: _me(d, "--truth-vcf", d / "truth.vcf",
                                           "--confident-bed", d / "binary.bed"), r"binary\.bed"),
    "truth_garbage": (lambda d: _me(d, "--truth-vcf", d / "garbage.vcf", "--confident-bed",
                                    d / "negative.bed"), r"garbage\.vcf"),
    "truth_without_bed": (lambda d: _me(d, "--truth-vcf", d / "truth.vcf"), r"together"),
    # Numbers out of range.
    "shards_0": (lambda d: _me(d, "--shards", "0"), r"--shards >= 1, found 0"),
    "downsample_0": (lambda d: _me(d, "--downsample-fraction", "0"), r"--downsample-fraction"),
    "min_mapq_negative": (lambda d: _me(d, "--min-mapq", "-1"), r"--min-mapq >= 0"),
    "min_fraction_2": (lambda d: _me(d, "--min-fraction-snps", "2"), r"--min-fraction-snps"),
    "max_alts_0": (lambda d: _me(d, "--max-alts", "0"), r"--max-alts >= 1"),
    "batch_size_0": (lambda d: _cv(d, "--batch-size", "0"), r"--batch-size >= 1, found 0"),
    "run_shards_0": (lambda d: _run(d, "--shards", "0"), r"--shards"),
    "run_batch_size_negative": (lambda d: _run(d, "--batch-size", "-3"),
                                r"^error: expected --batch-size >= 1, found -3$"),
    "min_qual_negative": (lambda d: _pp(d, "calls_ok.tsv.gz", "--min-qual", "-1"), r"--min-qual"),
    "maqf_negative": (lambda d: _pp(d, "calls_ok.tsv.gz", "--multi-allelic-qual-filter", "-1"),
                      r"--multi-allelic-qual-filter"),
    "sim_coverage_0": (lambda d: _sim(d, "--coverage", "0"), r"--coverage > 0, found 0"),
    "sim_seed_negative": (lambda d: _sim(d, "--seed", "-1"), r"^error: expected --seed >= 0, "
                                                             r"found -1$"),
    "sim_fragment_sd_negative": (lambda d: _sim(d, "--fragment-sd", "-1"), r"--fragment-sd"),
    "sim_length_small": (lambda d: _sim(d, "--length", "10"), r"--length >= 2000"),
    "sim_threads_0": (lambda d: _sim(d, "--threads", "0"), r"--threads >= 1, found 0$"),
    "sim_fasta_missing": (lambda d: _sim(d, "--fasta", d / "none.fa"), r"none\.fa"),
    # Call tables.
    "calls_not_gzip": (lambda d: _pp(d, "calls_plain.tsv.gz"), r"gzip.*calls_plain"),
    "calls_truncated_gzip": (lambda d: _pp(d, "calls_cut.tsv.gz"), r"calls_cut"),
    "calls_header": (lambda d: _pp(d, "calls_header.tsv.gz"), r"call-variants table"),
    "calls_bad_number": (lambda d: _pp(d, "calls_row.tsv.gz"), r"line 3"),
    "calls_short_row": (lambda d: _pp(d, "calls_short.tsv.gz"), r"line 3"),
    "calls_nan": (lambda d: _pp(d, "calls_nan.tsv.gz"), r"line 3"),
    "calls_contig": (lambda d: _pp(d, "calls_contig.tsv.gz"), r"contigs of the FASTA"),
    "calls_beyond_contig": (lambda d: _pp(d, "calls_beyond.tsv.gz"), r"inside chr1"),
    "calls_missing": (lambda d: _pp(d, "none.tsv.gz"), r"found nothing"),
    "haploid_unknown": (lambda d: _pp(d, "calls_ok.tsv.gz", "--haploid-contigs", "chrQ"),
                        r"--haploid-contigs"),
    "gvcf_without_examples": (lambda d: _pp(d, "calls_ok.tsv.gz", "--gvcf-out",
                                            d / "g.g.vcf.gz"), r"--examples"),
    # Models.
    "model_other_app": (lambda d: _cv(d, model="mol"), r"expected a variants model, found a "
                                                       r"molecules model"),
    "model_without_card": (lambda d: _cv(d, model="nocard"), r"model card"),
    "model_damaged": (lambda d: _cv(d, model="broken"), r"broken"),
    # run: make-examples' error comes from its forked child; the damaged model fails after
    # the run folder was opened. Neither may leave a folder or a run record behind.
    "run_unsorted_records": (lambda d: _run(d)[:3] + [d / "unsorted.bam"] + _run(d)[4:7]
                             + [d / "tiny"] + _run(d)[8:],
                             r"found a record at chr1:\d+ after one at.*unsorted\.bam"),
    "run_model_damaged": (lambda d: _run(d), r"does not load.*broken"),
    "run_model_other_app": (lambda d: _run(d)[:7] + [d / "mol"] + _run(d)[8:], r"molecules"),
    # Output locations and existing outputs.
    "out_is_a_file": (lambda d: _me(d, out="plain.txt"), r"plain\.txt"),
    "out_under_a_file": (lambda d: _me(d, out="plain.txt/sub"), r"plain\.txt"),
    "vcf_exists": (lambda d: _pp(d, "calls_ok.tsv.gz", out="done.vcf.gz"), r"--overwrite"),
    "vcf_out_is_a_folder": (lambda d: _pp(d, "calls_ok.tsv.gz", out="ex"), r"\.vcf\.gz"),
    "vcf_out_under_file": (lambda d: _pp(d, "calls_ok.tsv.gz", out="plain.txt/o.vcf.gz"),
                           r"plain\.txt"),
    "calls_out_suffix": (lambda d: _cv(d, out="o.csv"), r"\.tsv\.gz"),
    "run_out_is_a_file": (lambda d: _run(d, out="plain.txt"), r"plain\.txt"),
    "sim_out_is_a_file": (lambda d: ["variants", "simulate", "--out", d / "plain.txt"],
                          r"plain\.txt"),
    # Evaluate: VCFs htslib cannot parse; bcftools' own message joins the one line.
    "eval_calls_garbage": (lambda d: _ev(d, "garbage.vcf"),
                           r"htslib can read, found one it cannot parse \(.*garbage\.vcf\)$"),
    "eval_calls_bad_position": (lambda d: _ev(d, "badpos.vcf"), r"badpos\.vcf"),
    "eval_truth_no_sample": (lambda d: _ev(d, "truth.vcf", "nosample.vcf"), r"sample"),
    "eval_out_suffix": (lambda d: _ev(d, "truth.vcf")[:-1] + [d / "o.txt"], r"\.csv"),
    "eval_bed_negative": (lambda d: _ev(d, "truth.vcf", "truth.vcf", "--confident-bed",
                                        d / "negative.bed"), r"negative\.bed"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line(d, bad_input, case):
    argv, match = CASES[case]
    bad_input(argv(d), watch=[d], match=match)
