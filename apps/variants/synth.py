"""Synthetic truth sets and reads: plant variants, simulate Illumina pairs, align with BWA-MEM.

The simulation is deliberately *not* a shortcut: reads are sampled from two haplotypes with a
quality-dependent error model and then placed on the reference by a real aligner (BWA-MEM via
``pybwa``), so the caller sees the same mapping artefacts it would see on real data.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepsci.core.errors import ConfigError
from deepsci.core.io import _tmp_name, atomic_path
from deepsci.core.progress import progress
from deepsci.core.runs import RunDir

from . import io as vio

__all__ = [
    "SimulateConfig",
    "PlantedVariant",
    "random_genome",
    "plant_variants",
    "apply_haplotype",
    "simulate_pairs",
    "homopolymers",
    "align_pairs",
    "simulate",
    "run_simulate",
]

_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
_COMP = bytes.maketrans(b"ACGTN", b"TGCAN")


@dataclass
class SimulateConfig:
    """Options of ``deepsci variants simulate``.

    Attributes
    ----------
    out_dir : str
        Output folder.
    fasta : str or None
        Reference FASTA to plant variants in; None: a random genome.
    genome_length : int
        Length of the random genome (bp).
    contigs : list of str or None
        Use only these contigs of --fasta.
    snp_rate : float
        SNPs planted per base.
    indel_rate : float
        Indels (1 to ``max_indel`` bp) planted per base.
    het_fraction : float
        Share of heterozygous variants (the rest are homozygous-alt).
    max_indel : int
        Longest planted indel (bp).
    coverage : float
        Mean read depth.
    read_length : int
        Read length (bp), paired-end.
    fragment_mean : float
        Mean fragment length (bp).
    fragment_sd : float
        Standard deviation of the fragment length (bp).
    indel_error_rate : float
        Small indel sequencing errors per base.
    homopolymer_slip : float
        Slippage error chance at a 4-bp homopolymer: a read crossing a homopolymer of length
        L >= 4 gains or loses one base with probability ``homopolymer_slip * 1.9 ** (L - 4)``
        (at most 0.2), ~0.3 % at L = 8 and ~3 % at L = 12, as reported for Illumina; 0 off.
    sample : str
        Sample name (read group SM).
    threads : int
        BWA-MEM threads.
    seed : int
        Random seed (variants and reads).
    """

    out_dir: str = field(default="sim", metadata={"cli": "out"})
    fasta: str | None = None
    genome_length: int = field(default=50_000, metadata={"cli": "length"})
    contigs: list[str] | None = None
    snp_rate: float = 1e-3
    indel_rate: float = 1e-4
    het_fraction: float = 0.6
    max_indel: int = 20
    coverage: float = 30.0
    read_length: int = 150
    fragment_mean: float = 400.0
    fragment_sd: float = 50.0
    indel_error_rate: float = 2e-4
    homopolymer_slip: float = 2e-4
    sample: str = "SIM"
    threads: int = 2
    seed: int = 0

    def validate(self) -> SimulateConfig:
        for name in ("snp_rate", "indel_rate", "het_fraction", "indel_error_rate",
                     "homopolymer_slip"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"expected --{name.replace('_', '-')} in [0, 1], found {v}")
        # One message per option, naming the one that is wrong and its range.
        if not self.coverage > 0:
            raise ConfigError(f"expected --coverage > 0, found {self.coverage}")
        if self.read_length < 30:
            raise ConfigError(f"expected --read-length >= 30, found {self.read_length}")
        if self.fragment_mean < self.read_length:
            raise ConfigError(f"expected --fragment-mean >= --read-length "
                              f"({self.read_length}), found {self.fragment_mean}")
        if self.fragment_sd < 0:
            raise ConfigError(f"expected --fragment-sd >= 0, found {self.fragment_sd}")
        if not 1 <= self.max_indel <= 50:
            raise ConfigError(f"expected --max-indel in 1..50, found {self.max_indel}")
        if self.fasta is None and self.genome_length < 2_000:
            raise ConfigError(f"expected --length >= 2000, found {self.genome_length}")
        if self.threads < 1:
            raise ConfigError(f"expected --threads >= 1, found {self.threads}")
        if self.seed < 0:
            raise ConfigError(f"expected --seed >= 0, found {self.seed}")
        return self


@dataclass
class PlantedVariant:
    """One truth variant. ``pos`` is 0-based; ``gt`` is a phased pair of 0/1."""

    contig: str
    pos: int
    ref: str
    alt: str
    gt: tuple[int, int] = (0, 1)
    info: dict = field(default_factory=dict)


def random_genome(length: int, *, seed: int = 0, n_contigs: int = 1) -> dict[str, str]:
    """A random ACGT genome split into ``n_contigs`` contigs named ``chr1``, ``chr2``, ...

    A few short tandem repeats are inserted so that indel representation (left alignment)
    is exercised as on real genomes.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    per = length // n_contigs
    for c in range(n_contigs):
        seq = _BASES[rng.integers(0, 4, size=per)].copy()
        # Homopolymers and dinucleotide repeats every ~2 kb, like real sequence.
        for start in rng.integers(0, per - 20, size=max(1, per // 2000)):
            unit = _BASES[rng.integers(0, 4, size=int(rng.integers(1, 3)))]
            rep = np.tile(unit, 12)[: int(rng.integers(6, 13))]
            seq[start:start + rep.size] = rep
        out[f"chr{c + 1}"] = seq.tobytes().decode()
    return out


def _indel_length(rng: np.random.Generator, max_len: int) -> int:
    # Real indel lengths fall off roughly geometrically; keep 1..max_len.
    return int(min(max_len, rng.geometric(0.45)))


def plant_variants(genome: dict[str, str], *, snp_rate: float, indel_rate: float,
                   het_fraction: float, max_indel: int = 20, seed: int = 0,
                   min_spacing: int = 40, edge: int = 500) -> list[PlantedVariant]:
    """Choose SNPs and indels on two haplotypes; return them sorted, left-normalised.

    Parameters
    ----------
    genome : dict
        Contig name -> sequence (upper case).
    snp_rate, indel_rate : float
        Expected variants per reference base.
    het_fraction : float
        Share of heterozygous variants; heterozygous ones go to a random haplotype.
    min_spacing : int
        Minimum distance between variants, so each truth record is a separate site.
    edge : int
        No variants closer than this to a contig end (reads cannot cover them well).
    """
    rng = np.random.default_rng(seed)
    variants: list[PlantedVariant] = []
    for contig, seq in genome.items():
        n = len(seq)
        if n <= 2 * edge + 10:
            continue
        n_snp = rng.poisson(snp_rate * n)
        n_indel = rng.poisson(indel_rate * n)
        kinds = np.array([0] * n_snp + [1] * n_indel)
        rng.shuffle(kinds)
        positions = rng.integers(edge, n - edge - max_indel - 2, size=kinds.size)
        taken = np.zeros(n, dtype=bool)
        for kind, pos in zip(kinds, positions, strict=True):
            pos = int(pos)
            lo, hi = max(0, pos - min_spacing), min(n, pos + max_indel + min_spacing)
            if taken[lo:hi].any() or "N" in seq[pos:pos + max_indel + 2]:
                continue
            taken[pos:pos + max_indel + 2] = True
            gt = (1, 1) if rng.random() >= het_fraction else ((0, 1) if rng.random() < 0.5
                                                                 else (1, 0))
            if kind == 0:
                ref = seq[pos]
                alt = "ACGT".replace(ref, "")[int(rng.integers(0, 3))]
                variants.append(PlantedVariant(contig, pos, ref, alt, gt))
            else:
                length = _indel_length(rng, max_indel)
                if rng.random() < 0.5:     # deletion anchored at pos
                    ref, alt = seq[pos:pos + length + 1], seq[pos]
                else:
                    ins = _BASES[rng.integers(0, 4, size=length)].tobytes().decode()
                    ref, alt = seq[pos], seq[pos] + ins
                p, r, a = vio.left_align(seq, pos, ref, alt)
                variants.append(PlantedVariant(contig, p, r, a, gt))
    # Left alignment can move an indel onto a neighbour; keep the first of any overlap.
    variants.sort(key=lambda v: (list(genome).index(v.contig), v.pos))
    kept: list[PlantedVariant] = []
    for v in variants:
        if kept and kept[-1].contig == v.contig and v.pos <= kept[-1].pos + len(kept[-1].ref):
            continue
        kept.append(v)
    return kept


def apply_haplotype(seq: str, variants: list[PlantedVariant], hap: int) -> str:
    """The sequence of haplotype ``hap`` (0 or 1) of one contig with its variants applied."""
    parts, last = [], 0
    for v in variants:
        if v.gt[hap] != 1:
            continue
        parts.append(seq[last:v.pos])
        parts.append(v.alt)
        last = v.pos + len(v.ref)
    parts.append(seq[last:])
    return "".join(parts)


def _quality_profile(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Phred qualities (n, length): high at the start, falling toward the 3' end."""
    x = np.arange(length) / max(1, length - 1)
    mean = 37.0 - 12.0 * x ** 2                     # Illumina-like decay
    per_read = rng.normal(0.0, 2.5, size=(n, 1))    # some reads are worse overall
    q = mean[None, :] + per_read + rng.normal(0.0, 3.0, size=(n, length))
    # A few low-quality bases scattered through reads, as real base callers emit.
    q[rng.random((n, length)) < 0.01] = 8
    return np.clip(np.rint(q), 2, 41).astype(np.uint8)


def _add_errors(rng: np.random.Generator, seqs: np.ndarray, quals: np.ndarray) -> np.ndarray:
    """Substitute bases with probability 10^(-Q/10), so the qualities are calibrated."""
    p = 10.0 ** (-quals.astype(np.float64) / 10.0)
    err = rng.random(seqs.shape) < p
    shift = rng.integers(1, 4, size=seqs.shape)
    codes = np.searchsorted(_BASES, seqs)
    codes = np.where(err, (codes + shift) % 4, codes)
    return _BASES[codes]


def _indel_error(rng: np.random.Generator, frag: bytes, start: int, length: int) -> bytes:
    # One 1-2 bp insertion or deletion inside the read span (polymerase slippage).
    k = int(rng.integers(1, 3))
    at = start + int(rng.integers(10, length - 10))
    if rng.random() < 0.5:
        return frag[:at] + frag[at + k:]
    return frag[:at] + _BASES[rng.integers(0, 4, size=k)].tobytes() + frag[at:]


HP_MIN, HP_GROWTH, HP_MAX_P = 4, 1.9, 0.2


def homopolymers(seq: bytes, min_len: int = HP_MIN) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of one base at least ``min_len`` long in ``seq``."""
    a = np.frombuffer(seq, np.uint8)
    if a.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cut = np.flatnonzero(a[1:] != a[:-1]) + 1
    starts = np.concatenate([[0], cut])
    lens = np.diff(np.concatenate([starts, [a.size]]))
    keep = lens >= min_len
    return starts[keep], lens[keep]


def _slip(rng: np.random.Generator, seg: bytes, seg_start: int, hp: tuple, p4: float) -> bytes:
    """Apply homopolymer slippage to ``seg`` (haplotype bases from ``seg_start``).

    Each run lying wholly inside ``seg`` loses (60 %) or gains (40 %) one base with
    probability ``p4 * HP_GROWTH ** (L - 4)``.
    """
    starts, lens = hp
    lo = int(np.searchsorted(starts, seg_start))
    hi = int(np.searchsorted(starts, seg_start + len(seg)))
    if hi <= lo or p4 <= 0:
        return seg
    st, ln = starts[lo:hi] - seg_start, lens[lo:hi]
    inside = st + ln <= len(seg)
    p = np.minimum(HP_MAX_P, p4 * HP_GROWTH ** (ln - HP_MIN))
    hit = np.flatnonzero(inside & (rng.random(st.size) < p))
    for k in hit[::-1]:                     # right to left: earlier offsets stay valid
        a = int(st[k])
        seg = seg[:a] + seg[a + 1:] if rng.random() < 0.6 else seg[:a] + seg[a:a + 1] + seg[a:]
    return seg


def simulate_pairs(haplotypes: list[str], *, coverage: float, read_length: int,
                   fragment_mean: float, fragment_sd: float, indel_error_rate: float,
                   homopolymer_slip: float = 0.0, seed: int = 0,
                   name_prefix: str = "r") -> list[tuple[str, str, str, str, str]]:
    """Paired-end reads from a list of haplotype sequences (equal coverage each).

    Sequencing errors: substitutions at the rate the simulated base qualities promise, one
    1-2 bp indel in a share ``indel_error_rate * read_length`` of read-1s, and, with
    ``homopolymer_slip`` > 0, independent slippage in each read's homopolymers
    (:func:`_slip`).

    Returns
    -------
    list of (name, seq1, qual1, seq2, qual2)
        Read 1 is forward from the fragment start, read 2 reverse-complemented from its end;
        qualities are Phred+33 strings.
    """
    rng = np.random.default_rng(seed)
    out = []
    for h, hap in enumerate(haplotypes):
        hb = hap.encode()
        n = len(hb)
        hp = homopolymers(hb)
        margin = 8                           # spare bases for reads that lose some
        n_pairs = int(round(coverage * n / (2 * read_length) / len(haplotypes)))
        frag = np.clip(rng.normal(fragment_mean, fragment_sd, n_pairs), read_length + 20,
                       n - 1).astype(int)
        starts = rng.integers(0, np.maximum(1, n - frag), size=n_pairs)
        q1 = _quality_profile(rng, n_pairs, read_length)
        q2 = _quality_profile(rng, n_pairs, read_length)
        p_indel = min(1.0, indel_error_rate * read_length)
        r1 = np.empty((n_pairs, read_length), np.uint8)
        r2 = np.empty((n_pairs, read_length), np.uint8)
        for i in range(n_pairs):
            s, f = int(starts[i]), int(frag[i])
            piece = hb[s:s + f]
            if homopolymer_slip > 0:
                # Each mate slips on its own (separate sequencing reactions), on haplotype
                # coordinates; then read 1 may get the position-independent indel error.
                head, tail = piece[:read_length + margin], piece[-(read_length + margin):]
                head = _slip(rng, head, s, hp, homopolymer_slip)
                tail = _slip(rng, tail, s + len(piece) - len(tail), hp, homopolymer_slip)
                if rng.random() < p_indel:
                    head = _indel_error(rng, head, 0, read_length)
                a, b = head[:read_length], tail[-read_length:]
            else:
                if rng.random() < p_indel:
                    piece = _indel_error(rng, piece, 0, read_length)
                a, b = piece[:read_length], piece[-read_length:]
            b = b.translate(_COMP)[::-1]
            r1[i] = np.frombuffer(a.ljust(read_length, b"A"), np.uint8)
            r2[i] = np.frombuffer(b.ljust(read_length, b"A"), np.uint8)
        r1 = _add_errors(rng, r1, q1)
        r2 = _add_errors(rng, r2, q2)
        for i in range(n_pairs):
            out.append((f"{name_prefix}{h}_{i}", r1[i].tobytes().decode(),
                        (q1[i] + 33).tobytes().decode(), r2[i].tobytes().decode(),
                        (q2[i] + 33).tobytes().decode()))
    # Shuffle so the aligner's insert-size estimate sees a representative batch.
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def write_fastq_pairs(pairs, path1: Path, path2: Path) -> None:
    """Write pairs as two gzipped FASTQ files (the form users feed to any aligner)."""
    with atomic_path(path1) as t1, atomic_path(path2) as t2:
        with gzip.open(t1, "wt", compresslevel=1) as f1, gzip.open(t2, "wt", compresslevel=1) as f2:
            for name, s1, q1, s2, q2 in pairs:
                f1.write(f"@{name}/1\n{s1}\n+\n{q1}\n")
                f2.write(f"@{name}/2\n{s2}\n+\n{q2}\n")


def align_pairs(pairs, fasta: str | os.PathLike, bam: str | os.PathLike, *, sample: str,
                threads: int = 2, batch: int = 20_000) -> Path:
    """Align read pairs with BWA-MEM (``pybwa``), then coordinate-sort and index the BAM.

    The BWA index is built next to ``fasta`` (``<fasta>.bwt`` etc.) when missing.
    """
    import pysam
    from pybwa import BwaIndex, BwaMem, BwaMemOptions

    fasta, bam = Path(fasta), Path(bam)
    _bwa_index(fasta)
    index = BwaIndex(prefix=fasta)
    aligner = BwaMem(index=index)
    opt = BwaMemOptions(interleaved_paired_end=True, threads=threads).finalize()
    header = index.header.to_dict()
    header["RG"] = [{"ID": sample, "SM": sample, "PL": "ILLUMINA"}]
    header["PG"] = [{"ID": "bwa", "PN": "bwa", "VN": "pybwa-mem"}]
    hdr = pysam.AlignmentHeader.from_dict(header)
    # Named like atomic_path's temporaries (.reads.<random>.tmp.unsorted.bam): a killed run's
    # truncated file is removed by the rerun's RunDir, and by the finally below otherwise.
    unsorted = _tmp_name(bam.with_name(bam.stem + ".unsorted.bam"))
    try:
        _write_unsorted(unsorted, hdr, pairs, aligner, opt, sample, batch)
        with atomic_path(bam) as tmp:
            pysam.sort("-@", str(max(1, threads)), "-o", str(tmp), str(unsorted))
    finally:
        unsorted.unlink(missing_ok=True)
    with atomic_path(f"{bam}.bai") as tmp:
        pysam.index(str(bam), str(tmp))
    return bam


def _bwa_index(fasta: Path) -> None:
    """Build BWA's index of ``fasta`` (``<fasta>.bwt`` etc. and ``<stem>.dict``) unless all
    its files exist.

    Built under a temporary prefix and renamed file by file, ``.bwt`` last, so a killed
    run never leaves an index that looks complete but is not.
    """
    from pybwa import BwaIndex

    exts = (".amb", ".ann", ".pac", ".sa", ".bwt")
    # pybwa writes the sequence dictionary beside the prefix with its suffix replaced.
    finals = [fasta.with_suffix(".dict")] + [Path(f"{fasta}{e}") for e in exts]
    if all(p.exists() for p in finals):
        return
    prefix = _tmp_name(fasta.with_name(fasta.stem + ".bwa" + fasta.suffix))
    temps = [prefix.with_suffix(".dict")] + [Path(f"{prefix}{e}") for e in exts]
    try:
        BwaIndex.index(fasta=fasta, prefix=prefix)
        for tmp, final in zip(temps, finals, strict=True):
            os.replace(tmp, final)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def _write_unsorted(path: Path, hdr, pairs, aligner, opt, sample: str, batch: int) -> None:
    """Align ``pairs`` in batches and write every record, unsorted, to ``path``."""
    import pysam

    with pysam.AlignmentFile(str(path), "wb", header=hdr) as out:
        for b0 in progress(range(0, len(pairs), batch), desc="bwa-mem", unit="batch"):
            recs = []
            for name, s1, q1, s2, q2 in pairs[b0:b0 + batch]:
                recs.append(pysam.FastxRecord(name=name, sequence=s1, quality=q1))
                recs.append(pysam.FastxRecord(name=name, sequence=s2, quality=q2))
            hits = aligner.align(recs, opt)
            for k in range(0, len(hits), 2):
                for rec in _pair_records(hits[k], hits[k + 1], hdr, sample):
                    out.write(rec)


def _pair_records(hits1, hits2, hdr, sample: str):
    """Copy one pair's alignments into ``hdr`` with read-1/read-2 and proper-pair flags.

    pybwa's interleaved mode fills mate positions and TLEN but not these flags.
    """
    import pysam

    recs = []
    prim = []
    for first, hits in ((True, hits1), (False, hits2)):
        for seg in hits:
            rec = pysam.AlignedSegment.from_dict(seg.to_dict(), hdr)
            rec.is_paired = True
            rec.is_read1, rec.is_read2 = first, not first
            rec.set_tag("RG", sample)
            recs.append(rec)
            if not (rec.is_secondary or rec.is_supplementary):
                prim.append(rec)
    if len(prim) == 2:
        a, b = prim
        proper = (not a.is_unmapped and not b.is_unmapped
                  and a.reference_id == b.reference_id and a.is_reverse != b.is_reverse
                  and 0 < abs(a.template_length) <= 1000)
        a.is_proper_pair = b.is_proper_pair = proper
    return recs


def simulate(config: SimulateConfig) -> dict:
    """Run the whole simulation: reference, truth VCF + BED, reads, BWA-MEM BAM.

    Outputs in ``config.out_dir``: ``ref.fa`` (+ ``.fai``), ``truth.vcf.gz`` (+ ``.tbi``),
    ``confident.bed``, ``reads_1.fq.gz``/``reads_2.fq.gz``, ``reads.bam`` (+ ``.bai``).
    Returns the paths and counts.
    """
    config.validate()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.fasta is not None:
        genome = vio.read_fasta(config.fasta, contigs=config.contigs)
    else:
        genome = random_genome(config.genome_length, seed=config.seed)
    ref = out / "ref.fa"
    vio.write_fasta(genome, ref)
    variants = plant_variants(genome, snp_rate=config.snp_rate, indel_rate=config.indel_rate,
                              het_fraction=config.het_fraction, max_indel=config.max_indel,
                              seed=config.seed)
    truth = out / "truth.vcf.gz"
    vio.write_truth_vcf(variants, genome, truth, sample=config.sample)
    bed = out / "confident.bed"
    # Confident everywhere reads can reach: contig ends are excluded like real GIAB BEDs do.
    vio.write_bed([(c, 200, len(s) - 200) for c, s in genome.items() if len(s) > 400], bed)
    pairs = []
    for k, (contig, seq) in enumerate(genome.items()):
        vs = [v for v in variants if v.contig == contig]
        haps = [apply_haplotype(seq, vs, 0), apply_haplotype(seq, vs, 1)]
        pairs += simulate_pairs(haps, coverage=config.coverage, read_length=config.read_length,
                                fragment_mean=config.fragment_mean,
                                fragment_sd=config.fragment_sd,
                                indel_error_rate=config.indel_error_rate,
                                homopolymer_slip=config.homopolymer_slip,
                                seed=config.seed + 1000 + k, name_prefix=f"{contig}_")
    write_fastq_pairs(pairs, out / "reads_1.fq.gz", out / "reads_2.fq.gz")
    bam = align_pairs(pairs, ref, out / "reads.bam", sample=config.sample,
                      threads=config.threads)
    n_snp = sum(len(v.ref) == len(v.alt) for v in variants)
    return {"ref": str(ref), "truth": str(truth), "bed": str(bed), "bam": str(bam),
            "reads": [str(out / "reads_1.fq.gz"), str(out / "reads_2.fq.gz")],
            "n_pairs": len(pairs), "n_snps": n_snp, "n_indels": len(variants) - n_snp}


def run_simulate(config: SimulateConfig, *, overwrite: bool = False) -> dict:
    """``deepsci variants simulate``: :func:`simulate` with its ``run.json`` in the folder."""
    config.validate()
    with RunDir(config.out_dir, command="variants simulate", config=config,
                inputs=[config.fasta], overwrite=overwrite) as run:
        res = simulate(config)
        run.record(**res)
    return res
