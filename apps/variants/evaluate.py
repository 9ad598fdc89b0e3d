"""``evaluate``: hap.py-style comparison of a call set with a truth set.

Both VCFs are normalised with ``bcftools norm`` (left-align against the reference, split
multi-allelic records), restricted to the confident regions, and matched allele by allele:

* a truth allele whose normalised ``(contig, pos, REF, ALT)`` is in the calls with the same
  zygosity is a TP (``TRUTH.TP``, also a query TP);
* an allele present in both with a different zygosity is a genotype error: FN for the truth
  and FP for the query, counted separately as ``FP.gt`` (as hap.py does);
* the rest are FN (truth) and FP (query).

Alleles still unmatched are then compared as haplotypes, as vcfeval does: nearby leftovers
of both sets (within ``HAP_WINDOW`` bp) form a cluster, and when some phasing of each side
spells the same pair of haplotype sequences, all of the cluster's alleles are true
positives. This reconciles complex variants written as different combinations of records
(an MNP as two SNPs, a SNP next to an indel as one complex allele).

Precision = QUERY.TP / (QUERY.TP + QUERY.FP), recall = TRUTH.TP / TRUTH.TOTAL, F1 their
harmonic mean; reported for SNPs and indels, for all non-reference calls (``ALL``) and for
calls with FILTER PASS (``PASS``).
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

__all__ = ["EvaluateConfig", "evaluate_calls", "run_evaluate", "normalise", "load_alleles", "compare",
           "format_table", "SUMMARY_COLUMNS"]

HAP_WINDOW = 10        # bp between leftover alleles that are compared as one haplotype cluster
SUMMARY_COLUMNS = ["Type", "Filter", "TRUTH.TOTAL", "TRUTH.TP", "TRUTH.FN", "QUERY.TOTAL",
                   "QUERY.TP", "QUERY.FP", "FP.gt", "METRIC.Recall", "METRIC.Precision",
                   "METRIC.F1_Score"]


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


def normalise(vcf: str | os.PathLike, ref: str | os.PathLike, out: str | os.PathLike) -> Path:
    """``bcftools norm -f ref -m -any``: left-aligned, biallelic records (bgzipped)."""
    import pysam
    import pysam.bcftools

    try:
        pysam.bcftools.norm("-f", str(ref), "-m", "-any", "-c", "w", "-O", "z", "-o", str(out),
                            str(vcf), catch_stdout=False)
    except pysam.SamtoolsError as e:
        msg = str(e).strip().splitlines()
        raise InputError(f"expected a VCF matching the reference, found: "
                         f"{msg[-1] if msg else e}", vcf) from None
    pysam.tabix_index(str(out), preset="vcf", force=True)
    return Path(out)


class _Confident:
    def __init__(self, regions):
        by = defaultdict(list)
        for r in regions:
            by[r.contig].append((r.start, r.end))
        self.iv = {c: (sorted(v), [a for a, _ in sorted(v)]) for c, v in by.items()}

    def contains(self, contig: str, start: int, end: int) -> bool:
        if contig not in self.iv:
            return False
        ivs, starts = self.iv[contig]
        i = bisect.bisect_right(starts, start) - 1
        return i >= 0 and ivs[i][1] >= end


def load_alleles(vcf: str | os.PathLike, *, confident=None, pass_only: bool = False
                 ) -> dict[tuple, tuple[str, bool]]:
    """Non-reference alleles of a normalised VCF: ``(contig, pos, REF, ALT) -> (type, hom)``.

    ``type`` is ``"SNP"`` or ``"INDEL"`` (MNPs count as SNPs after splitting); ``hom`` is True
    when every called allele is this ALT (``1/1`` or haploid ``1``).
    """
    out = {}
    vf = vio.open_vcf(vcf)
    for rec in vf:
        alt = rec.alts[0] if rec.alts else None
        if alt is None or alt.startswith("<") or alt == "*":
            continue
        if pass_only and not (set(rec.filter.keys()) <= {"PASS"}):
            continue
        gt = rec.samples[0]["GT"]
        if gt is None or all(g in (0, None) for g in gt):
            continue
        if confident is not None and not confident.contains(rec.contig, rec.start, rec.stop):
            continue
        kind = "SNP" if len(rec.ref) == len(alt) else "INDEL"
        hom = all(g == 1 for g in gt)
        out[(rec.contig, rec.start, rec.ref, alt)] = (kind, hom)
    vf.close()
    return out


def compare(truth: dict, query: dict, *, fasta=None,
            window: int = HAP_WINDOW) -> dict[str, dict[str, int]]:
    """Count TP/FN/FP/FP.gt per variant type from two allele dicts (:func:`load_alleles`).

    Alleles match when their normalised keys and zygosity agree. With ``fasta`` (a
    ``pysam.FastaFile``), alleles left over are then matched as haplotypes, as vcfeval
    does: leftovers of both sets within ``window`` bp of each other form a cluster, and if
    some phasing of the truth alleles and some phasing of the query alleles spell the same
    two haplotype sequences, every allele of the cluster is a true positive (e.g. an MNP
    called as two SNPs, or an indel and a SNP written as one complex allele).
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
    return {k: dict(v) for k, v in c.items()}


def _haplotype_matches(truth: dict, query: dict, matched: set, fasta, window: int
                       ) -> tuple[set, set]:
    """Keys of unmatched truth and query alleles that agree as haplotypes (see compare)."""
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
    """``ref`` (starting at 0-based ``off``) with the alleles applied; None if they overlap."""
    parts, at = [], off
    for _, pos, r, a in sorted(alleles, key=lambda k: k[1]):
        if pos < at:
            return None
        parts += [ref[at - off:pos - off], a]
        at = pos + len(r)
    parts.append(ref[at - off:])
    return "".join(parts)


def _metrics(d: dict) -> dict:
    tp_t, tot = d.get("TRUTH.TP", 0), d.get("TRUTH.TOTAL", 0)
    tp_q, fp = d.get("QUERY.TP", 0), d.get("QUERY.FP", 0)
    rec = tp_t / tot if tot else float("nan")
    prec = tp_q / (tp_q + fp) if (tp_q + fp) else float("nan")
    f1 = 2 * rec * prec / (rec + prec) if tot and (tp_q + fp) and (rec + prec) > 0 else (
        0.0 if tot and (tp_q + fp) else float("nan"))
    return {"METRIC.Recall": rec, "METRIC.Precision": prec, "METRIC.F1_Score": f1}


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of summary rows (what the CLI prints)."""
    def fmt(v):
        return f"{v:.6f}" if isinstance(v, float) else str(v)
    cells = [SUMMARY_COLUMNS] + [[fmt(r.get(c, 0)) for c in SUMMARY_COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(SUMMARY_COLUMNS))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True))
                     for row in cells)


def evaluate_calls(config: EvaluateConfig) -> list[dict]:
    """Normalise, match and score; writes the hap.py-like summary CSV; returns its rows."""
    config.validate()
    fa = vio.open_fasta(config.ref)
    lengths = dict(zip(fa.references, fa.lengths, strict=True))
    for p in (config.calls, config.truth):
        vf = vio.open_vcf(p)
        bad = [c for c in vf.header.contigs if c not in lengths]
        vf.close()
        if bad:
            raise InputError(f"expected contigs of the reference, found {bad[:3]}", p)
    confident = _Confident(vio.read_bed(config.confident_bed)) if config.confident_bed else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        nt = normalise(config.truth, config.ref, Path(tmp) / "truth.norm.vcf.gz")
        nq = normalise(config.calls, config.ref, Path(tmp) / "query.norm.vcf.gz")
        truth = load_alleles(nt, confident=confident)
        for filt, pass_only in (("ALL", False), ("PASS", True)):
            query = load_alleles(nq, confident=confident, pass_only=pass_only)
            counts = compare(truth, query, fasta=fa)
            for kind in ("INDEL", "SNP"):
                d = {c: counts[kind].get(c, 0) for c in SUMMARY_COLUMNS[2:9]}
                rows.append({"Type": kind, "Filter": filt, **d, **_metrics(counts[kind])})
    out = Path(config.out)
    with atomic_path(out) as tmp:
        with open(tmp, "w") as f:
            f.write(",".join(SUMMARY_COLUMNS) + "\n")
            for r in rows:
                f.write(",".join(str(r[c]) for c in SUMMARY_COLUMNS) + "\n")
    return rows


def run_evaluate(config: EvaluateConfig, *, overwrite: bool = False) -> list[dict]:
    """``deepsci variants evaluate``: the summary CSV with its ``<csv>.run.json``."""
    config.validate()
    with RunDir(config.out, command="variants evaluate", config=config, overwrite=overwrite,
                inputs=[config.calls, config.truth, config.ref, config.confident_bed],
                file_output=True) as run:
        rows = evaluate_calls(config)
        run.record(**{f"{r['Type']} {r['Filter']}": {k: r[k] for k in SUMMARY_COLUMNS[2:]}
                      for r in rows})
    return rows
