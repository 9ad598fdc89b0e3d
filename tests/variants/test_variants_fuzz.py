"""Issue #19: the variants text readers take arbitrary bytes and either return a valid
result or raise deepsci's InputError, never a library error (hypothesis).

Readers: BED (confident regions, --regions files), regions strings (``chr1:100-200``),
``calls.tsv.gz`` (call-variants' table, as postprocess-variants reads it) and the truth VCF
path (``open_vcf`` and the records ``evaluate`` loads, both pysam's).
"""
from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepsci.apps.variants import io as vio
from deepsci.apps.variants.predict import COLUMNS, read_calls
from deepsci.core.errors import InputError

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
LENGTHS = {"chr1": 1000, "chr2": 500}

# Text near the formats (tabs, digits, contig names, commas), and raw bytes.
_pieces = st.sampled_from(["chr1", "chr2", "chrZ", "\t", "\n", " ", ",", ":", "-", "#", "0",
                           "1", "999", "1000", "-5", "1e3", "A", "C", "0.5", "nan", "track",
                           "\r", "\x00", "é"])
near_text = st.lists(_pieces, max_size=40).map("".join)
raw = st.binary(max_size=200)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("variants_fuzz")


def _check_bed(regions) -> None:
    for r in regions:
        assert r.contig and 0 <= r.start < r.end


@FUZZ
@given(data=st.one_of(near_text.map(str.encode), raw),
       kind=st.sampled_from(["plain", "gzip", "gz name, plain data", "cut gzip"]))
def test_bed_reader(folder, data, kind):
    path = folder / ("f.bed" if kind == "plain" else "f.bed.gz")
    if kind in ("gzip", "cut gzip"):
        data = gzip.compress(data)[: -6 if kind == "cut gzip" else None]
    path.write_bytes(data)
    try:
        _check_bed(vio.read_bed(path))
    except InputError as e:
        assert e.path is not None


@FUZZ
@given(spec=st.one_of(near_text, st.text(max_size=30)))
def test_regions_string(spec):
    try:
        regions = vio.parse_regions(spec, LENGTHS, "ref.fa")
    except InputError:
        return
    for r in regions:
        assert r.contig in LENGTHS and 0 <= r.start < r.end <= LENGTHS[r.contig]


HEAD = "##sample=S\n#" + "\t".join(COLUMNS) + "\n"
_row_piece = st.sampled_from(["chr1", "100", "A", "C", "A,C", "0", "0,1", "1", "10", "5,5",
                              "3,3,3", "0.1", "0.8", "nan", "-1", "inf", "", "x"])
rows = st.lists(st.lists(_row_piece, min_size=0, max_size=12).map("\t".join), max_size=4)


@FUZZ
@given(body=st.one_of(rows.map(lambda r: HEAD + "\n".join(r)), near_text,
                      raw.map(lambda b: b.decode("latin-1"))),
       kind=st.sampled_from(["gzip", "plain", "cut"]))
def test_calls_table_reader(folder, body, kind):
    path = folder / "calls.tsv.gz"
    data = body.encode("utf-8", "surrogatepass")
    if kind == "gzip":
        data = gzip.compress(data)
    elif kind == "cut":
        data = gzip.compress(data)[:-6]
    path.write_bytes(data)
    try:
        out = read_calls(path)
    except InputError as e:
        assert str(e.path) == str(path)
        return
    for r in out:
        assert len(r["ad"]) == len(r["alts"]) + 1 and np.all(np.isfinite(r["probs"]))


VCF_HEAD = ("##fileformat=VCFv4.2\n##contig=<ID=chr1,length=1000>\n"
            '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
            "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS\n")
_vcf_piece = st.sampled_from(["chr1", "chrZ", "100", "0", "abc", ".", "A", "C", "<*>", "PASS",
                              "GT", "0/1", "1|1", "./.", "2/3", "\t", "\t", "\t"])
vcf_rows = st.lists(st.lists(_vcf_piece, max_size=12).map("".join), max_size=4)


@FUZZ
@given(body=st.one_of(vcf_rows.map(lambda r: VCF_HEAD + "\n".join(r) + "\n"), near_text,
                      raw.map(lambda b: b.decode("latin-1"))))
def test_truth_vcf_reader(folder, body, capfd):
    from deepsci.apps.variants.evaluate import load_alleles

    path = folder / "truth.vcf"
    path.write_text(body, encoding="utf-8", errors="surrogateescape")
    fa = vio.open_fasta(_fasta(folder))
    try:
        alleles = load_alleles(path, fa)
    except InputError as e:
        assert e.path is not None
        return
    finally:
        # htslib's own messages are folded into the error, never printed.
        assert "[E::" not in capfd.readouterr().err
    for (contig, _pos, _ref, _alt), (kind, _) in alleles.items():
        assert contig == "chr1" and kind in ("SNP", "INDEL")


def _fasta(folder):
    path = folder / "ref.fa"
    if not path.exists():
        rng = np.random.default_rng(0)
        vio.write_fasta({"chr1": "".join(rng.choice(list("ACGT"), 1000))}, path)
    return path
