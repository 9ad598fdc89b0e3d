"""Training labels: how many copies of the shown alt alleles the truth genotype carries.

Truth records are turned into the same left-aligned read events the candidate finder uses
(:mod:`.candidates`), so an indel written differently in the truth VCF and in the reads still
matches. Candidates outside the confident regions, or overlapping a truth record that is
neither a SNP, an MNP nor a simple indel, are not labelled (DeepVariant does the same).
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

from . import io as vio
from .candidates import Candidate, left_align_event

__all__ = ["Truth", "allele_events", "label_image"]


def allele_events(pos: int, ref: str, alt: str, seq: bytes, off: int = 0) -> list[tuple] | None:
    """Read events of one VCF allele (``pos`` 0-based); ``None`` for complex alleles.

    ``seq`` is the reference starting at ``off`` (needed to left-align indels). MNPs become
    one substitution per differing base.
    """
    if alt in ("*", "<*>", ".") or alt.startswith("<"):
        return []
    if len(ref) == len(alt):
        return [("X", pos + i, a) for i, (r, a) in enumerate(zip(ref, alt, strict=True))
                if r != a]
    # Trim the shared suffix, then the shared prefix down to one anchor base.
    while len(ref) > 1 and len(alt) > 1 and ref[-1] == alt[-1]:
        ref, alt = ref[:-1], alt[:-1]
    while len(ref) > 1 and len(alt) > 1 and ref[0] == alt[0] and ref[1] == alt[1]:
        pos, ref, alt = pos + 1, ref[1:], alt[1:]
    if ref[0] != alt[0] or min(len(ref), len(alt)) != 1:
        return None
    ev = ("D", pos, len(ref) - 1) if len(ref) > len(alt) else ("I", pos, alt[1:])
    return [left_align_event(ev, seq, off)]


@dataclass
class Truth:
    """Truth genotypes by event, and the confident intervals, for some regions."""

    copies: dict = field(default_factory=dict)            # event -> alt copies (0..2)
    complex_spans: dict = field(default_factory=dict)     # contig -> [(start, end)]
    confident_iv: dict = field(default_factory=dict)      # contig -> (starts, ends) sorted

    @classmethod
    def load(cls, vcf_path, bed_path, fa, *, regions=None) -> Truth:
        """Read the truth VCF (first sample) and confident BED, limited to ``regions``."""
        t = cls()
        bed = vio.read_bed(bed_path)
        by_c = defaultdict(list)
        for r in bed:
            by_c[r.contig].append((r.start, r.end))
        for c, ivs in by_c.items():
            ivs.sort()
            t.confident_iv[c] = ([a for a, _ in ivs], [b for _, b in ivs])
        vf = vio.open_vcf(vcf_path)
        copies: dict = defaultdict(int)
        spans = defaultdict(list)
        contigs = set(vf.header.contigs)
        todo = regions or [vio.Region(c, 0, n) for c, n in zip(fa.references, fa.lengths,
                                                                  strict=True)]
        for reg in todo:
            if reg.contig not in contigs:
                continue
            seq = fa.fetch(reg.contig).upper().encode()
            for rec in vf.fetch(reg.contig, max(0, reg.start - 100), reg.end + 100):
                gt = rec.samples[0]["GT"]
                if gt is None or any(g is None for g in gt):
                    continue
                for allele in gt:
                    if allele == 0:
                        continue
                    evs = allele_events(rec.start, rec.ref, rec.alleles[allele], seq)
                    if evs is None:
                        spans[reg.contig].append((rec.start, rec.stop))
                        continue
                    for ev in evs:
                        copies[ev] += 1
        vf.close()
        t.copies = {k: min(2, v) for k, v in copies.items()}
        t.complex_spans = dict(spans)
        return t

    def confident(self, cand: Candidate) -> bool:
        """Is the candidate's whole REF span inside one confident interval and not complex?"""
        starts, ends = self.confident_iv.get(cand.contig, ([], []))
        i = bisect.bisect_right(starts, cand.pos) - 1
        if i < 0 or ends[i] < cand.end:
            return False
        return not any(a < cand.end and b > cand.pos
                       for a, b in self.complex_spans.get(cand.contig, []))


def label_image(truth: Truth, cand: Candidate, alt_idx: tuple[int, ...]) -> int:
    """0, 1 or 2: truth copies of the alleles shown in this image (DeepVariant's labels)."""
    return min(2, sum(truth.copies.get(cand.events[i], 0) for i in alt_idx))
