"""Shared fixtures for the variants tests: hand-built BAMs and a tiny simulated data set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_ref(path: Path, seqs: dict[str, str]) -> Path:
    from deepsci.apps.variants.io import write_fasta
    return write_fasta(seqs, path)


def make_read(header, name, pos, cigar, seq, *, qual=30, mapq=60, reverse=False, tlen=0,
              flag_extra=0, contig=0):
    """A pysam AlignedSegment from explicit fields (pos 0-based, cigar string)."""
    import pysam

    r = pysam.AlignedSegment(header)
    r.query_name = name
    r.reference_id = contig
    r.reference_start = pos
    r.cigarstring = cigar
    r.query_sequence = seq
    q = [qual] * len(seq) if isinstance(qual, int) else list(qual)
    r.query_qualities = pysam.qualitystring_to_array("".join(chr(x + 33) for x in q))
    r.mapping_quality = mapq
    r.flag = (16 if reverse else 0) | flag_extra
    if tlen:
        r.flag |= 1 | 2
        r.template_length = tlen
        r.next_reference_id = contig
        r.next_reference_start = pos + 100
    return r


def write_bam(path: Path, contigs: dict[str, int], reads_fn, *, index: bool = True,
              sort: bool = True) -> Path:
    """Write reads (``reads_fn(header) -> list``) to a sorted, indexed BAM."""
    import pysam

    header = pysam.AlignmentHeader.from_dict({
        "HD": {"VN": "1.6", "SO": "coordinate" if sort else "unsorted"},
        "SQ": [{"SN": c, "LN": n} for c, n in contigs.items()],
        "RG": [{"ID": "rg", "SM": "S1"}]})
    reads = reads_fn(header)
    if sort:
        reads.sort(key=lambda r: (r.reference_id, r.reference_start))
    with pysam.AlignmentFile(str(path), "wb", header=header) as f:
        for r in reads:
            r.set_tag("RG", "rg")
            f.write(r)
    if index and sort:
        pysam.index(str(path))
    return path


@pytest.fixture
def vt():
    """Helpers to build reads, BAMs and references (importlib mode cannot import conftest)."""
    from types import SimpleNamespace
    return SimpleNamespace(make_read=make_read, write_bam=write_bam, write_ref=write_ref)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_sim(tmp_path_factory):
    """A 12 kb random genome with planted variants, 20x reads aligned with BWA-MEM."""
    from deepsci.apps.variants.synth import SimulateConfig, simulate

    out = tmp_path_factory.mktemp("variants_sim")
    return simulate(SimulateConfig(out_dir=str(out), genome_length=12_000, snp_rate=2e-3,
                                   indel_rate=8e-4, coverage=20.0, seed=3))
