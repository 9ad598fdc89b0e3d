"""Read filtering, per-read allele events and candidate variant selection.

A *read event* is one allele a read carries, keyed so that reads and truth sets compare
directly:

* ``("X", pos, base)``  — a substitution at 0-based ``pos``;
* ``("I", anchor, seq)`` — ``seq`` inserted after the base at ``anchor``;
* ``("D", anchor, n)``  — ``n`` bases deleted after the base at ``anchor``.

Indel events are left-aligned on the reference, so a read whose aligner placed a gap at a
different spot in a repeat still counts toward the same allele (and matches a normalised
truth VCF).
"""
from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CandidateConfig",
    "ReadInfo",
    "Candidate",
    "keep_read",
    "parse_read",
    "find_candidates",
    "event_alleles",
    "left_align_event",
]

_CMATCH, _CINS, _CDEL, _CREFSKIP, _CSOFT, _CEQUAL, _CDIFF = 0, 1, 2, 3, 4, 7, 8
_NO_POS = np.zeros(0, np.int64)


@dataclass
class CandidateConfig:
    """Read filters and allele thresholds (DeepVariant's defaults for Illumina).

    Attributes
    ----------
    min_mapq : int
        Minimum mapping quality of a read.
    min_base_quality : int
        Minimum base quality of an alt base.
    min_count_snps : int
        Reads that must show a SNP allele for a candidate.
    min_fraction_snps : float
        Share of the reads that must show a SNP allele.
    min_count_indels : int
        Reads that must show an indel allele for a candidate.
    min_fraction_indels : float
        Share of the reads that must show an indel allele.
    max_alts : int
        Most-supported alt alleles kept at one site.
    keep_duplicates : bool
        Use reads marked as duplicates.
    downsample_fraction : float
        Keep this share of read pairs (training augmentation).
    downsample_seed : int
        Seed of the read down-sampling.
    """

    min_mapq: int = 5
    min_base_quality: int = 10
    min_count_snps: int = 2
    min_fraction_snps: float = 0.12
    min_count_indels: int = 2
    min_fraction_indels: float = 0.06
    max_alts: int = 3
    keep_duplicates: bool = False
    downsample_fraction: float = 1.0
    downsample_seed: int = 0


@dataclass
class ReadInfo:
    """What the candidate finder and the pileup encoder need of one read."""

    read: object                    # pysam.AlignedSegment
    start: int
    end: int
    events: set = field(default_factory=set)


@dataclass
class Candidate:
    """A site to classify: VCF-style alleles plus per-allele read support.

    ``events[i]`` is the read event of ``alts[i]``; ``ad`` is ``[ref, alt1, ...]``.
    """

    contig: str
    pos: int
    ref: str
    alts: list[str]
    events: list[tuple]
    dp: int
    ad: list[int]

    @property
    def end(self) -> int:
        return self.pos + len(self.ref)


def keep_read(read, cfg: CandidateConfig) -> bool:
    """DeepVariant's read filters: mapped, primary, not duplicate/QC-fail, MAPQ >= min."""
    if read.is_unmapped or read.is_secondary or read.is_supplementary or read.is_qcfail:
        return False
    if read.is_duplicate and not cfg.keep_duplicates:
        return False
    if read.mapping_quality < cfg.min_mapq or read.query_sequence is None:
        return False
    if cfg.downsample_fraction < 1.0:
        # Hash the name so both mates of a pair are kept or dropped together.
        h = zlib.crc32(f"{cfg.downsample_seed}:{read.query_name}".encode()) / 2 ** 32
        return h < cfg.downsample_fraction
    return True


def left_align_event(ev: tuple, ref: bytes, off: int) -> tuple:
    """Shift an indel event left while the reference allows (``ref`` starts at ``off``)."""
    kind, anchor, val = ev
    if kind == "D":
        n = val
        while anchor - off > 0 and ref[anchor - off] == ref[anchor - off + n]:
            anchor -= 1
        return ("D", anchor, n)
    if kind == "I":
        seq = val
        while anchor - off > 0 and ref[anchor - off] == ord(seq[-1]):
            seq = chr(ref[anchor - off]) + seq[:-1]
            anchor -= 1
        return ("I", anchor, seq)
    return ev


def parse_read(read, ref: bytes, ref_arr: np.ndarray, off: int, min_bq: int
               ) -> tuple[set, np.ndarray]:
    """The events of one read and the reference positions of all its mismatches.

    Parameters
    ----------
    read : pysam.AlignedSegment
    ref, ref_arr : bytes and (L,) uint8
        Upper-case reference covering the read, starting at 0-based ``off``.
    min_bq : int
        Substitutions need this base quality to become events (all are returned in the
        mismatch array, which feeds the gVCF reference model).

    Returns
    -------
    events : set of tuple
    mismatch_pos : (M,) int64
        Reference positions where the read is not the reference (any quality, incl. gaps).
    """
    if read.has_tag("NM") and read.get_tag("NM") == 0:
        # The aligner's edit distance: no mismatch and no gap, nothing to parse. Most reads
        # are like this, and parsing them was most of make-examples' time.
        return set(), _NO_POS
    seq = np.frombuffer(read.query_sequence.encode(), np.uint8)
    qual = np.asarray(read.query_qualities, dtype=np.uint8)
    rpos, qpos = read.reference_start, 0
    events: set = set()
    mism: list[np.ndarray] = []
    ops = read.cigartuples
    for k, (op, n) in enumerate(ops):
        if op in (_CMATCH, _CEQUAL, _CDIFF):
            r = ref_arr[rpos - off:rpos - off + n]
            q = seq[qpos:qpos + n]
            diff = (r != q) & (q != 78)          # 'N' in the read is no evidence
            idx = np.nonzero(diff)[0]
            if idx.size:
                mism.append(idx + rpos)
                good = idx[qual[qpos + idx] >= min_bq]
                for i in good.tolist():
                    events.add(("X", rpos + i, chr(q[i])))
            rpos += n
            qpos += n
        elif op == _CINS:
            # An insertion needs an aligned anchor base on its left.
            if k > 0 and ops[k - 1][0] in (_CMATCH, _CEQUAL, _CDIFF) and rpos > off:
                ins = read.query_sequence[qpos:qpos + n]
                events.add(left_align_event(("I", rpos - 1, ins), ref, off))
                mism.append(np.array([rpos - 1]))
            qpos += n
        elif op == _CDEL:
            if rpos > off:
                events.add(left_align_event(("D", rpos - 1, n), ref, off))
            mism.append(np.arange(rpos, rpos + n))
            rpos += n
        elif op == _CSOFT:
            qpos += n
        elif op == _CREFSKIP:
            rpos += n
    return events, (np.concatenate(mism) if mism else _NO_POS)


def event_alleles(events: list[tuple], ref: bytes, off: int) -> tuple[int, str, list[str]]:
    """VCF alleles sharing one REF for events anchored at the same position.

    Returns ``(pos, REF, [ALT, ...])``; the REF is long enough for the longest deletion.
    """
    pos = events[0][1]
    span = max(1 + e[2] if e[0] == "D" else 1 for e in events)
    r = ref[pos - off:pos - off + span].decode()
    alts = []
    for kind, _, val in events:
        if kind == "X":
            alts.append(val + r[1:])
        elif kind == "I":
            alts.append(r[0] + val + r[1:])
        else:
            alts.append(r[0] + r[1 + val:])
    return pos, r, alts


def find_candidates(reads: list[ReadInfo], contig: str, start: int, end: int, ref: bytes,
                    off: int, cfg: CandidateConfig, mism_counts: np.ndarray | None = None,
                    depth: np.ndarray | None = None) -> list[Candidate]:
    """Candidate sites in ``[start, end)`` from parsed reads.

    An allele is kept with at least ``min_count_*`` supporting reads and an allele fraction
    (support / reads spanning the site) of at least ``min_fraction_*``; the fractions differ
    for SNPs and indels as in DeepVariant. ``depth`` (reads spanning each position of the
    reference buffer) is computed when not given.
    """
    if depth is None:
        depth = coverage(reads, off, len(ref))
    counts: Counter = Counter()
    for ri in reads:
        for ev in ri.events:
            if start <= ev[1] < end:
                counts[ev] += 1
    by_pos: dict[int, list[tuple[tuple, int]]] = defaultdict(list)
    alt_reads: Counter = Counter()          # all alt-supporting reads at a position
    for ev, c in counts.items():
        alt_reads[ev[1]] += c
        dp = int(depth[ev[1] - off])
        if dp == 0:
            continue
        is_snp = ev[0] == "X"
        min_c = cfg.min_count_snps if is_snp else cfg.min_count_indels
        min_f = cfg.min_fraction_snps if is_snp else cfg.min_fraction_indels
        if c >= min_c and c / dp >= min_f:
            by_pos[ev[1]].append((ev, c))
    out = []
    for pos in sorted(by_pos):
        evs = sorted(by_pos[pos], key=lambda t: (-t[1], t[0]))[: cfg.max_alts]
        evs.sort(key=lambda t: (t[0][0], str(t[0][2])))          # stable allele order
        p, r, alts = event_alleles([e for e, _ in evs], ref, off)
        dp = int(depth[pos - off])
        alt_n = [c for _, c in evs]
        out.append(Candidate(contig, p, r, alts, [e for e, _ in evs], dp,
                             [max(0, dp - alt_reads[pos])] + alt_n))
    return out


def coverage(reads: list[ReadInfo], off: int, length: int) -> np.ndarray:
    """Reads spanning each position of ``[off, off + length)`` (deletions count as spanning)."""
    diff = np.zeros(length + 1, np.int64)
    for ri in reads:
        a, b = max(ri.start - off, 0), min(ri.end - off, length)
        if a < b:
            diff[a] += 1
            diff[b] -= 1
    return np.cumsum(diff[:-1]).astype(np.int32)
