"""Bad input: each gives one clear error naming the file and the cause, and no output."""
from __future__ import annotations

import gzip
import shutil

import pytest

from deepsci.apps.variants import io as vio
from deepsci.core.errors import InputError

SEQ = "ACGTTGCAAGCTTGCA" * 40


@pytest.fixture
def data(tmp_path, vt):
    ref = vt.write_ref(tmp_path / "ref.fa", {"c1": SEQ})

    def reads(h):
        return [vt.make_read(h, f"r{i}", 10 + 7 * i, "50M", SEQ[10 + 7 * i:60 + 7 * i])
                for i in range(20)]
    bam = vt.write_bam(tmp_path / "reads.bam", {"c1": len(SEQ)}, reads)
    return tmp_path, ref, bam, reads


def _me(ref, bam, out, **kw):
    from deepsci.apps.variants.make_examples import MakeExamplesConfig, make_examples
    return make_examples(MakeExamplesConfig(reads=str(bam), ref=str(ref), out_dir=str(out),
                                            scheduler="inline", **kw), progress=False)


def test_good_inputs_open(data):
    _, ref, bam, _ = data
    af = vio.open_alignments(bam, ref)
    assert af.count() == 20


def test_bam_without_index(data):
    tmp, ref, bam, _ = data
    (tmp / "reads.bam.bai").unlink()
    with pytest.raises(InputError, match="index") as e:
        vio.open_alignments(bam, ref)
    assert "reads.bam" in str(e.value)


def test_unsorted_bam(data, vt):
    tmp, ref, _, reads = data
    bam = vt.write_bam(tmp / "u.bam", {"c1": len(SEQ)}, lambda h: reads(h)[::-1], sort=False)
    import pysam
    with pytest.raises((InputError, pysam.SamtoolsError)):
        pysam.index(str(bam))           # samtools refuses; then our check names the problem
    with pytest.raises(InputError, match="index|sorted"):
        vio.open_alignments(bam, ref)


def test_sorted_header_says_unsorted(data, vt):
    import pysam
    tmp, ref, _, reads = data
    bam = vt.write_bam(tmp / "s.bam", {"c1": len(SEQ)}, reads)
    # Same records, header claims SO:unsorted, index present.
    h = pysam.AlignmentFile(str(bam)).header.to_dict()
    h["HD"]["SO"] = "unsorted"
    src = pysam.AlignmentFile(str(bam))
    with pysam.AlignmentFile(str(tmp / "v.bam"), "wb", header=h) as f:
        for r in src:
            f.write(r)
    pysam.index(str(tmp / "v.bam"))
    with pytest.raises(InputError, match="coordinate-sorted"):
        vio.open_alignments(tmp / "v.bam", ref)


def test_contig_names_do_not_match(data, vt):
    tmp, _, bam, _ = data
    other = vt.write_ref(tmp / "other.fa", {"chr1": SEQ})
    with pytest.raises(InputError, match="contigs named as in the FASTA"):
        vio.open_alignments(bam, other)


def test_fasta_without_fai_is_indexed(data):
    tmp, ref, bam, _ = data
    (tmp / "ref.fa.fai").unlink()
    vio.open_alignments(bam, ref).close()
    assert (tmp / "ref.fa.fai").exists()


def test_not_a_fasta(tmp_path):
    p = tmp_path / "x.fa"
    p.write_text("hello\n")
    with pytest.raises(InputError, match="FASTA"):
        vio.open_fasta(p)


def test_truncated_bgzf(data):
    tmp, ref, bam, _ = data
    raw = bam.read_bytes()
    cut = tmp / "cut.bam"
    cut.write_bytes(raw[:-28])
    shutil.copy(str(bam) + ".bai", str(cut) + ".bai")
    with pytest.raises(InputError, match="truncated"):
        vio.open_alignments(cut, ref)


def test_cram_without_its_reference(data):
    import pysam
    tmp, ref, bam, _ = data
    cram = tmp / "r.cram"
    pysam.view("-C", "-T", str(ref), "-o", str(cram), str(bam), catch_stdout=False)
    pysam.index(str(cram))
    assert vio.open_alignments(cram, ref).count() == 20
    wrong = tmp / "wrong.fa"
    wrong.write_text(">c1\n" + "A" * 100 + "\n")
    with pytest.raises(InputError, match="length"):
        vio.open_alignments(cram, wrong)


@pytest.mark.parametrize("spec,msg", [("c1:700-800", "inside"), ("c9:1-10", "contig"),
                                      ("c1:50-40", "non-empty"), ("c1:abc", "region like")])
def test_bad_regions(spec, msg):
    with pytest.raises(InputError, match=msg):
        vio.parse_regions(spec, {"c1": 640})


def test_regions_parse_and_merge(tmp_path):
    r = vio.parse_regions("c1:1-100,c1:50-200", {"c1": 640, "c2": 10})
    assert r == [vio.Region("c1", 0, 200)]
    bed = vio.write_bed([("c2", 0, 5), ("c1", 10, 20)], tmp_path / "r.bed")
    assert vio.parse_regions(str(bed), {"c1": 640, "c2": 10}) == [vio.Region("c1", 10, 20),
                                                                  vio.Region("c2", 0, 5)]
    assert len(vio.parse_regions(None, {"c1": 640, "c2": 10})) == 2


def test_vcf_without_samples(tmp_path):
    import pysam
    p = tmp_path / "nos.vcf"
    h = pysam.VariantHeader()
    h.contigs.add("c1", length=100)
    with pysam.VariantFile(str(p), "w", header=h) as f:
        r = f.new_record(contig="c1", start=5, alleles=("A", "C"))
        f.write(r)
    with pytest.raises(InputError, match="sample"):
        vio.open_vcf(p)


def test_truncated_vcf(tmp_path):
    h = vio.vcf_header({"c1": 100}, "S")
    p = vio.write_vcf([{"contig": "c1", "pos": 5, "ref": "A", "alts": ("C",),
                        "sample": {"GT": (0, 1)}}], tmp_path / "a.vcf.gz", h)
    t = tmp_path / "t.vcf.gz"
    t.write_bytes(p.read_bytes()[:-28])
    with pytest.raises(InputError, match="truncated"):
        vio.open_vcf(t)


def test_make_examples_bad_input_leaves_nothing(data):
    tmp, ref, bam, _ = data
    with pytest.raises(InputError, match="inside"):
        _me(ref, bam, tmp / "ex", regions="c1:1-100000")
    assert not (tmp / "ex").exists()
    (tmp / "reads.bam.bai").unlink()
    with pytest.raises(InputError, match="index"):
        _me(ref, bam, tmp / "ex2")
    assert not (tmp / "ex2").exists()


def test_evaluate_with_sample_less_truth(tmp_path, vt):
    import pysam

    from deepsci.apps.variants.evaluate import EvaluateConfig, evaluate_calls
    ref = vt.write_ref(tmp_path / "ref.fa", {"c1": SEQ})
    h = pysam.VariantHeader()
    h.contigs.add("c1", length=len(SEQ))
    with pysam.VariantFile(str(tmp_path / "t.vcf"), "w", header=h) as f:
        f.write(f.new_record(contig="c1", start=5, alleles=(SEQ[5], "A")))
    calls = vio.write_vcf([], tmp_path / "c.vcf.gz", vio.vcf_header({"c1": len(SEQ)}, "S"))
    with pytest.raises(InputError, match="sample") as e:
        evaluate_calls(EvaluateConfig(calls=str(calls), truth=str(tmp_path / "t.vcf"),
                                      ref=str(ref), out=str(tmp_path / "s.csv")))
    assert "t.vcf" in str(e.value)
    assert not (tmp_path / "s.csv").exists()


def test_gzip_bed(tmp_path):
    p = tmp_path / "r.bed.gz"
    with gzip.open(p, "wt") as f:
        f.write("track name=x\nc1\t0\t10\n")
    assert vio.read_bed(p) == [vio.Region("c1", 0, 10)]


def test_extra_bam_contigs_are_allowed_but_lengths_must_match(tmp_path, vt):
    ref = vt.write_ref(tmp_path / "ref.fa", {"c1": SEQ})

    def reads(h):
        return [vt.make_read(h, "r0", 10, "50M", SEQ[10:60])]
    ok = vt.write_bam(tmp_path / "extra.bam", {"c1": len(SEQ), "c2": 5000}, reads)
    assert vio.open_alignments(ok, ref).count() == 1
    bad = vt.write_bam(tmp_path / "len.bam", {"c1": len(SEQ) + 1}, reads)
    with pytest.raises(InputError, match="length"):
        vio.open_alignments(bad, ref)
