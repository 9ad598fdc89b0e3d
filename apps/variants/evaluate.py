"""``evaluate``: hap.py-style comparison of a call set with a truth set.

Both VCFs pass ``bcftools norm -f ref -c w`` (REF checked against the reference), then every
ALT allele is decomposed into primitive variants, as hap.py's default preprocessing does:
an MNP becomes one SNP per changed base, a complex allele its SNPs plus one insertion or
deletion, and every indel is left-aligned against the reference. All counts are in these
atomised records, per class (``SNP``: one changed base; ``INDEL``: insertion or deletion),
on the truth side and on the query side alike:

* a truth atom whose ``(contig, pos, REF, ALT)`` is in the calls with the same zygosity is a
  true positive on both sides (``TRUTH.TP`` and ``QUERY.TP``);
* an atom present in both with a different zygosity is a genotype error: FN for the truth
  and FP for the query, counted again in ``FP.gt`` (a part of ``QUERY.FP``, as in hap.py);
* the rest are FN (truth) and FP (query).

Atoms still unmatched are then compared as haplotypes, as vcfeval does: nearby leftovers
of both sets (within ``HAP_WINDOW`` bp) form a cluster, and when some phasing of each side
spells the same pair of haplotype sequences, every atom of the cluster is a true positive
on its own side. ``TRUTH.TP`` and ``QUERY.TP`` can then differ (two truth atoms written as
one complex query allele), so both are reported, as hap.py does.

Confident regions (:class:`ConfidentRegions`) are merged first and applied with hap.py's
rule; query atoms outside them are ``QUERY.UNK`` (part of ``QUERY.TOTAL``), truth atoms
outside them are not counted. Recall = TRUTH.TP / (TRUTH.TP + TRUTH.FN), precision =
QUERY.TP / (QUERY.TP + QUERY.FP), Frac_NA = QUERY.UNK / QUERY.TOTAL, F1 the harmonic mean
of precision and recall; reported for SNPs and indels, for all non-reference calls
(``ALL``) and for calls with FILTER PASS (``PASS``). Truth records must PASS (or have no
FILTER), as in hap.py without ``--usefiltered-truth``.

Conventions
-----------
Same as hap.py (v0.3, default xcmp engine): counts per atomised record per class;
genotype match required for a TP, a genotype mismatch counted as FN, FP and ``FP.gt``;
``QUERY.TOTAL = QUERY.TP + QUERY.FP + QUERY.UNK``; confident regions merged and applied by
overlap (pure insertions: both flanking bases inside); truth limited to PASS records; the
metric formulas above. Different from hap.py: a het-alt site (``1/2``) is counted as its
atoms (hap.py keeps one record, in its ``hetalt`` genotype class); complex alleles are split
by an ungapped-plus-one-gap alignment, not hap.py's realignment; each indel is left-aligned
on its own (as ``bcftools norm``), not by hap.py's "safe" left shift that keeps records in
order; leftovers are compared as haplotypes within ``HAP_WINDOW`` bp of each other, not in
hap.py's 30 bp superloci with partial credit, and only inside the confident regions;
``PASS`` rows re-match the PASS calls alone (hap.py matches all calls once and relabels
filtered ones); an undefined metric (no truth, or no query, atoms) is NaN and F1 is 0.0
when precision and recall are both 0 (hap.py reports 0 and NaN there).
"""
from __future__ import annotations

import bisect
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import atomic_path
from deepsci.core.runs import RunDir

from . import io as vio

__all__ = ["EvaluateConfig", "evaluate_calls", "run_evaluate", "normalise", "atomise",
           "load_alleles", "ConfidentRegions", "compare", "format_table", "SUMMARY_COLUMNS",
           "CONVENTIONS"]

HAP_WINDOW = 10        # bp between leftover alleles that are compared as one haplotype cluster
# The first 12 columns keep their historical order (readers index them); hap.py's
# QUERY.UNK and METRIC.Frac_NA come after them.
SUMMARY_COLUMNS = ["Type", "Filter", "TRUTH.TOTAL", "TRUTH.TP", "TRUTH.FN", "QUERY.TOTAL",
                   "QUERY.TP", "QUERY.FP", "FP.gt", "METRIC.Recall", "METRIC.Precision",
                   "METRIC.F1_Score", "QUERY.UNK", "METRIC.Frac_NA"]
_COUNTS = ["TRUTH.TOTAL", "TRUTH.TP", "TRUTH.FN", "QUERY.TOTAL", "QUERY.TP", "QUERY.FP",
           "FP.gt", "QUERY.UNK"]
CONVENTIONS = (
    "hap.py-style: counts per atomised record (MNPs as SNPs, complex alleles as SNPs plus "
    "one indel, indels left-aligned), SNP/INDEL per atom; TP needs the same genotype "
    f"(mismatch = FN + FP + FP.gt); leftovers within {HAP_WINDOW} bp matched as haplotypes, TRUTH.TP "
    "and QUERY.TP counted on their own side; confident BED merged (overlapping or "
    "abutting), an atom is confident when its trimmed REF span overlaps it (insertion: "
    "both flanking bases inside); QUERY.TOTAL = TP + FP + UNK; truth PASS only; "
    "recall = TRUTH.TP/(TRUTH.TP+TRUTH.FN), precision = QUERY.TP/(QUERY.TP+QUERY.FP); "
    "differs from hap.py: het-alt sites counted as atoms, no 30 bp superloci or partial "
    "credit, PASS rows re-matched on PASS calls, undefined metrics NaN")


@dataclass
class EvaluateConfig:
    """Options of ``deepsci variants evaluate``.

    Attributes
    ----------
    calls : str
        Call set VCF.
    truth : str
        Truth VCF.
    ref : str
        Reference FASTA.
    confident_bed : str or None
        Confident regions BED; None: everywhere.
    out : str
        hap.py-like summary CSV.
    """

    calls: str = ""
    truth: str = ""
    ref: str = ""
    confident_bed: str | None = None
    out: str = "summary.csv"

    def validate(self) -> EvaluateConfig:
        if not (self.calls and self.truth and self.ref):
            raise ConfigError("expected --calls, --truth and --ref, found none")
        if not self.out.endswith(".csv"):
            raise ConfigError(f"expected --out ending in .csv, found {self.out!r}")
        return self


def normalise(vcf: str | os.PathLike, ref: str | os.PathLike, out: str | os.PathLike, *,
              split: bool = True) -> Path:
    """``bcftools norm -f ref -c w [-m -any]`` into a bgzipped, indexed VCF.

    Parameters
    ----------
    vcf, ref, out : path
        Input VCF, reference FASTA, output ``.vcf.gz``.
    split : bool
        Split multi-allelic records (``-m -any``). :func:`evaluate_calls` keeps them whole
        so that :func:`load_alleles` still sees which ALTs share a sample's copies.

    Returns
    -------
    Path
        ``out``.
    """
    import pysam
    import pysam.bcftools

    args = ["-f", str(ref), *(["-m", "-any"] if split else []), "-c", "w", "-O", "z",
            "-o", str(out), str(vcf)]
    # bcftools' htslib logs its reason ("[E::vcf_parse] Could not parse the position")
    # straight to stderr: it is captured and becomes part of deepsci's one error line.
    with vio.htslib_messages() as log:
        try:
            pysam.bcftools.norm(*args, catch_stdout=False)
            pysam.tabix_index(str(out), preset="vcf", force=True)
            err = None
        except (pysam.SamtoolsError, OSError, ValueError) as e:
            err = e
    if err is not None:
        raise InputError(f"expected a VCF matching the reference, found: "
                         f"{vio.htslib_reason(log, err)}", vcf) from None
    return Path(out)


def _trim(pos: int, ref: str, alt: str) -> tuple[int, str, str]:
    """Drop bases shared by REF and ALT, the suffix first, then the prefix (hap.py's order)."""
    r, a = len(ref), len(alt)
    while r and a and ref[r - 1] == alt[a - 1]:
        r, a = r - 1, a - 1
    i = 0
    while i < r and i < a and ref[i] == alt[i]:
        i += 1
    return pos + i, ref[i:r], alt[i:a]


class ConfidentRegions:
    """Confident regions of a BED file, merged, with hap.py's rule for a variant.

    Intervals of a contig are sorted and every overlapping or abutting pair merged (as
    hap.py's interval list does), so a variant on the boundary of two abutting intervals
    is judged against their union.

    A variant is confident when the reference span left after trimming the bases its REF
    and ALT share (suffix first, then prefix) overlaps a merged interval; a pure insertion
    (empty span) is confident when the bases on both sides of it lie in one merged
    interval. This is hap.py's rule (``QuantifyRegions::annotate``); a deletion or MNP
    that reaches past the end of a confident region therefore still counts.

    Parameters
    ----------
    regions : iterable
        Objects with ``contig``, ``start``, ``end`` (0-based, half-open), e.g.
        :func:`deepsci.apps.variants.io.read_bed` regions.
    """

    def __init__(self, regions):
        by = defaultdict(list)
        for r in regions:
            if r.end > r.start:
                by[r.contig].append((r.start, r.end))
        self.iv: dict[str, tuple[list[int], list[int]]] = {}
        for contig, ivs in by.items():
            merged: list[list[int]] = []
            for s, e in sorted(ivs):
                if merged and s <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], e)
                else:
                    merged.append([s, e])
            self.iv[contig] = ([s for s, _ in merged], [e for _, e in merged])

    def overlaps(self, contig: str, start: int, end: int) -> bool:
        """Whether ``[start, end)`` shares a base with a merged interval."""
        starts, ends = self.iv.get(contig, ([], []))
        i = bisect.bisect_left(starts, end) - 1
        return i >= 0 and ends[i] > start

    def covers(self, contig: str, start: int, end: int) -> bool:
        """Whether one merged interval holds all of ``[start, end)``."""
        starts, ends = self.iv.get(contig, ([], []))
        i = bisect.bisect_right(starts, start) - 1
        return i >= 0 and ends[i] >= end

    def contains(self, contig: str, pos: int, ref: str, alt: str) -> bool:
        """Whether the biallelic variant ``pos`` (0-based), ``ref``, ``alt`` is confident."""
        s, r, _ = _trim(pos, ref.upper(), alt.upper())
        return self.covers(contig, s - 1, s + 1) if not r else self.overlaps(contig, s, s + len(r))

    def split(self, atoms: dict) -> tuple[dict, dict]:
        """``atoms`` (keyed ``(contig, pos, REF, ALT)``) as (confident, outside)."""
        inside, outside = {}, {}
        for k, v in atoms.items():
            (inside if self.contains(*k) else outside)[k] = v
        return inside, outside


def _primitives(pos: int, ref: str, alt: str) -> tuple[list, tuple | None]:
    """SNPs and at most one indel spelling ``ref -> alt``: ``([(pos, r, a)], indel)``.

    The indel is ``(pos, deleted, inserted)`` without an anchor base (one of the two
    empty), placed where the bases around it mismatch least; ties go to the rightmost
    place, which is where ``bcftools norm --atomize`` puts the length change.
    """
    pos, r, a = _trim(pos, ref, alt)
    if len(r) == len(a):
        return [(pos + j, x, y) for j, (x, y) in enumerate(zip(r, a, strict=True)) if x != y], None
    d, n = abs(len(r) - len(a)), min(len(r), len(a))
    long_, short = (r, a) if len(r) > len(a) else (a, r)

    def mismatches(k):
        return (sum(long_[j] != short[j] for j in range(k))
                + sum(long_[j + d] != short[j] for j in range(k, n)))

    k = min(range(n + 1), key=lambda k: (mismatches(k), -k))
    snps = []
    for j in range(n):
        lj = j if j < k else j + d
        ri, ai = (lj, j) if len(r) > len(a) else (j, lj)
        if r[ri] != a[ai]:
            snps.append((pos + ri, r[ri], a[ai]))
    indel = (pos + k, r[k:k + d], "") if len(r) > len(a) else (pos + k, "", a[k:k + d])
    return snps, indel


def _left_align(pos: int, seq: str, fetch, lo: int) -> tuple[int, str]:
    """Shift an anchor-free indel of ``seq`` at ``pos`` left while the haplotype is unchanged.

    Moving one base left is allowed when the reference base before ``pos`` equals the last
    base of ``seq`` (true for deletions and insertions alike); ``lo`` keeps it right of the
    allele's own SNPs, whose bases it must not swallow.
    """
    while pos > lo:
        chunk = fetch(max(lo, pos - 64), pos)
        for b in reversed(chunk):
            if b != seq[-1]:
                return pos, seq
            seq, pos = b + seq[:-1], pos - 1
    return pos, seq


def atomise(pos: int, ref: str, alt: str, fetch) -> list[tuple[int, str, str]]:
    """The atomised, left-aligned records of one ALT allele, as VCF ``(pos, REF, ALT)``.

    Parameters
    ----------
    pos : int
        0-based position of ``ref``.
    ref, alt : str
        The record's REF and one ALT allele (bases only).
    fetch : callable
        ``fetch(start, end) -> str``: upper-case reference bases of the record's contig.

    Returns
    -------
    list of (int, str, str)
        SNPs as single bases; indels with the usual anchor base before them (after them at
        position 0), as ``bcftools norm`` writes them.
    """
    snps, indel = _primitives(pos, ref.upper(), alt.upper())
    out = list(snps)
    if indel is not None:
        p, r, a = indel
        lo = max((s + 1 for s, _, _ in snps if s < p), default=0)
        p, seq = _left_align(p, r or a, fetch, lo)
        r, a = (seq, "") if r else ("", seq)
        if p > 0:
            b = fetch(p - 1, p)
            out.append((p - 1, b + r, b + a))
        else:
            b = fetch(len(r), len(r) + 1)
            out.append((0, r + b, a + b))
    return sorted(out)


def load_alleles(vcf: str | os.PathLike, fasta, *, pass_only: bool = False
                 ) -> dict[tuple, tuple[str, bool]]:
    """Atomised non-reference alleles of a VCF: ``(contig, pos, REF, ALT) -> (type, hom)``.

    Parameters
    ----------
    vcf : path
        VCF with one sample.
    fasta : pysam.FastaFile
        The reference (indels are left-aligned against it).
    pass_only : bool
        Skip records whose FILTER is not PASS (or missing).

    Returns
    -------
    dict
        ``type`` is ``"SNP"`` (one base) or ``"INDEL"``; ``hom`` is True when every copy of
        the genotype carries the atom: ``1/1``, haploid ``1``, or a het-alt ``1/2`` whose
        two ALTs share it (an MNP pair with one base in common).
    """
    seen: dict[tuple, tuple[str, bool, set, int, bool]] = {}
    vf = vio.open_vcf(vcf)
    try:
        with vio.htslib_messages() as log:
            records = list(vf)
    except (OSError, ValueError) as e:
        vf.close()
        raise InputError(f"expected a readable VCF, found: {vio.htslib_reason(log, e)}",
                         vcf) from None
    for rec in records:
        if pass_only and not (set(rec.filter.keys()) <= {"PASS"}):
            continue
        gt = rec.samples[0]["GT"]
        if gt is None or all(g in (0, None) for g in gt) or not rec.alts:
            continue
        fetch, phased, here = _fetcher(fasta, rec.contig), rec.samples[0].phased, {}
        for ai, alt in enumerate(rec.alts, 1):
            if alt.startswith("<") or alt in ("*", ".") or ai not in gt:
                continue
            copies = {i for i, g in enumerate(gt) if g == ai}
            for p, r, a in atomise(rec.start, rec.ref, alt, fetch):
                # The ALTs of one record that share an atom (a het-alt MNP pair with a
                # base in common) put it on all their copies.
                here[(rec.contig, p, r, a)] = here.get((rec.contig, p, r, a), set()) | copies
        for key, copies in here.items():
            kind = "SNP" if len(key[2]) == len(key[3]) == 1 else "INDEL"
            hom = len(copies) == len(gt)
            if key in seen:
                _, hom0, copies0, n0, phased0 = seen[key]
                # Across records copy indices mean the same copy only when both are phased;
                # otherwise the atom is homozygous only if one record says so.
                if phased and phased0 and n0 == len(gt):
                    copies = copies | copies0
                    hom = len(copies) == len(gt)
                else:
                    hom = hom or hom0
            seen[key] = (kind, hom, copies, len(gt), phased)
    vf.close()
    return {k: (kind, hom) for k, (kind, hom, _, _, _) in seen.items()}


def _fetcher(fasta, contig: str):
    def fetch(start: int, end: int) -> str:
        return fasta.fetch(contig, start, end).upper()
    return fetch


def compare(truth: dict, query: dict, *, fasta=None, window: int = HAP_WINDOW,
            unknown: dict | None = None) -> dict[str, dict[str, int]]:
    """Count TP/FN/FP/FP.gt/UNK per variant type from atom dicts (:func:`load_alleles`).

    Atoms match when their keys and zygosity agree. With ``fasta`` (a
    ``pysam.FastaFile``), atoms left over are then matched as haplotypes, as vcfeval
    does: leftovers of both sets within ``window`` bp of each other form a cluster, and if
    some phasing of the truth atoms and some phasing of the query atoms spell the same
    two haplotype sequences, every atom of the cluster is a true positive on its side
    (e.g. two truth atoms called as one complex allele). ``unknown``: query atoms outside
    the confident regions, counted as ``QUERY.UNK`` and in ``QUERY.TOTAL``.
    """
    t_ok = {k for k, (_, hom) in truth.items() if k in query and query[k][1] == hom}
    q_ok = set(t_ok)
    if fasta is not None:
        rescued_t, rescued_q = _haplotype_matches(truth, query, t_ok, fasta, window)
        t_ok |= rescued_t
        q_ok |= rescued_q
    c = {t: defaultdict(int) for t in ("SNP", "INDEL")}
    for key, (kind, _) in truth.items():
        c[kind]["TRUTH.TOTAL"] += 1
        c[kind]["TRUTH.TP" if key in t_ok else "TRUTH.FN"] += 1
    for key, (kind, _) in query.items():
        c[kind]["QUERY.TOTAL"] += 1
        if key in q_ok:
            c[kind]["QUERY.TP"] += 1
        else:
            c[kind]["QUERY.FP"] += 1
            if key in truth:
                c[kind]["FP.gt"] += 1
    for kind, _ in (unknown or {}).values():
        c[kind]["QUERY.TOTAL"] += 1
        c[kind]["QUERY.UNK"] += 1
    return {k: dict(v) for k, v in c.items()}


def _haplotype_matches(truth: dict, query: dict, matched: set, fasta, window: int
                       ) -> tuple[set, set]:
    """Keys of unmatched truth and query atoms that agree as haplotypes (see compare)."""
    left = sorted([(k, 0, truth[k][1]) for k in truth if k not in matched]
                  + [(k, 1, query[k][1]) for k in query if k not in matched],
                  key=lambda t: (t[0][0], t[0][1]))
    rescued: tuple[set, set] = (set(), set())
    cluster: list = []
    for item in left + [None]:
        if cluster and (item is None or item[0][0] != cluster[-1][0][0]
                        or item[0][1] > max(k[1] + len(k[2]) for k, _, _ in cluster) + window):
            sides = [[(k, hom) for k, side, hom in cluster if side == s] for s in (0, 1)]
            if all(sides) and _same_haplotypes(sides[0], sides[1], fasta):
                for s in (0, 1):
                    rescued[s].update(k for k, _ in sides[s])
            cluster = []
        if item is not None:
            cluster.append(item)
    return rescued


def _same_haplotypes(truth: list, query: list, fasta) -> bool:
    keys = [k for k, _ in truth + query]
    contig = keys[0][0]
    lo = max(0, min(k[1] for k in keys) - 1)
    hi = max(k[1] + len(k[2]) for k in keys) + 1
    ref = fasta.fetch(contig, lo, hi).upper()
    hap_t, hap_q = _haplotype_pairs(truth, ref, lo), _haplotype_pairs(query, ref, lo)
    return bool(hap_t & hap_q)


def _haplotype_pairs(alleles: list, ref: str, off: int, max_het: int = 10) -> set:
    """Every unordered pair of haplotype sequences the (unphased) alleles can make."""
    hom = [k for k, h in alleles if h]
    het = [k for k, h in alleles if not h]
    if len(het) > max_het:
        return set()
    out = set()
    # The first het allele goes to haplotype 0: the swapped phasing gives the same pair.
    for mask in range(2 ** max(len(het) - 1, 0)):
        haps: list[list] = [list(hom), list(hom)]
        for i, k in enumerate(het):
            haps[(mask >> (i - 1)) & 1 if i else 0].append(k)
        seqs = [_apply(ref, off, h) for h in haps]
        if None not in seqs:
            out.add(tuple(sorted(seqs)))
    return out


def _apply(ref: str, off: int, alleles: list) -> str | None:
    """``ref`` (starting at 0-based ``off``) with the alleles applied; None if they overlap.

    Alleles are applied without their shared (anchor) bases, so a SNP and a deletion that
    follows it on the same copy (the anchor being the SNP's base) do not collide.
    """
    edits = sorted((_trim(pos, r, a) for _, pos, r, a in alleles), key=lambda e: (e[0], len(e[1])))
    parts, at = [], off
    for pos, r, a in edits:
        if pos < at:
            return None
        parts += [ref[at - off:pos - off], a]
        at = pos + len(r)
    parts.append(ref[at - off:])
    return "".join(parts)


def _metrics(d: dict) -> dict:
    tp_t, fn = d.get("TRUTH.TP", 0), d.get("TRUTH.FN", 0)
    tp_q, fp = d.get("QUERY.TP", 0), d.get("QUERY.FP", 0)
    unk, q_total = d.get("QUERY.UNK", 0), d.get("QUERY.TOTAL", 0)
    rec = tp_t / (tp_t + fn) if (tp_t + fn) else float("nan")
    prec = tp_q / (tp_q + fp) if (tp_q + fp) else float("nan")
    defined = bool(tp_t + fn) and bool(tp_q + fp)
    f1 = (2 * rec * prec / (rec + prec) if rec + prec > 0 else 0.0) if defined else float("nan")
    return {"METRIC.Recall": rec, "METRIC.Precision": prec, "METRIC.F1_Score": f1,
            "METRIC.Frac_NA": unk / q_total if q_total else float("nan")}


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of summary rows (what the CLI prints)."""
    def fmt(v):
        return f"{v:.6f}" if isinstance(v, float) else str(v)
    cells = [SUMMARY_COLUMNS] + [[fmt(r.get(c, 0)) for c in SUMMARY_COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(SUMMARY_COLUMNS))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True))
                     for row in cells)


def evaluate_calls(config: EvaluateConfig) -> list[dict]:
    """Normalise, atomise, match and score; writes the hap.py-like summary CSV.

    Returns
    -------
    list of dict
        One row per (Type, Filter), keyed by :data:`SUMMARY_COLUMNS`.
    """
    config.validate()
    fa = vio.open_fasta(config.ref)
    lengths = dict(zip(fa.references, fa.lengths, strict=True))
    for p in (config.calls, config.truth):
        vf = vio.open_vcf(p)
        bad = [c for c in vf.header.contigs if c not in lengths]
        vf.close()
        if bad:
            raise InputError(f"expected contigs of the reference, found {bad[:3]}", p)
    confident = (ConfidentRegions(vio.read_bed(config.confident_bed))
                 if config.confident_bed else None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # Multi-allelic records stay whole here: load_alleles needs to see which ALTs a
        # het-alt genotype puts on which copy.
        nt = normalise(config.truth, config.ref, Path(tmp) / "truth.norm.vcf.gz", split=False)
        nq = normalise(config.calls, config.ref, Path(tmp) / "query.norm.vcf.gz", split=False)
        truth = load_alleles(nt, fa, pass_only=True)
        if confident is not None:
            truth, _ = confident.split(truth)
        for filt, pass_only in (("ALL", False), ("PASS", True)):
            query, unknown = load_alleles(nq, fa, pass_only=pass_only), {}
            if confident is not None:
                query, unknown = confident.split(query)
            counts = compare(truth, query, fasta=fa, unknown=unknown)
            for kind in ("INDEL", "SNP"):
                d = {c: counts[kind].get(c, 0) for c in _COUNTS}
                rows.append({"Type": kind, "Filter": filt, **d, **_metrics(d)})
    out = Path(config.out)
    with atomic_path(out) as tmp:
        with open(tmp, "w") as f:
            f.write(",".join(SUMMARY_COLUMNS) + "\n")
            for r in rows:
                f.write(",".join(str(r[c]) for c in SUMMARY_COLUMNS) + "\n")
    return rows


def run_evaluate(config: EvaluateConfig, *, overwrite: bool = False) -> list[dict]:
    """``deepsci variants evaluate``: the summary CSV with its ``<csv>.run.json``.

    The run record's results hold every row (``"SNP PASS"``, ...) and ``conventions``,
    one line saying how the counts were made (:data:`CONVENTIONS`).
    """
    config.validate()
    vio.check_new_file(config.out, overwrite=overwrite)
    with RunDir(config.out, command="variants evaluate", config=config, overwrite=overwrite,
                inputs=[config.calls, config.truth, config.ref, config.confident_bed],
                file_output=True) as run:
        rows = evaluate_calls(config)
        run.record(**{f"{r['Type']} {r['Filter']}": {k: r[k] for k in SUMMARY_COLUMNS[2:]}
                      for r in rows}, conventions=CONVENTIONS)
    return rows
