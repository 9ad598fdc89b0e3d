"""``evaluate``: hap.py-style comparison of a call set with a truth set.

Both VCFs are normalised with ``bcftools norm`` (left-align against the reference, split
multi-allelic records), restricted to the confident regions, and matched allele by allele:

* a truth allele whose normalised ``(contig, pos, REF, ALT)`` is in the calls with the same
  zygosity is a TP (``TRUTH.TP``, also a query TP);
* an allele present in both with a different zygosity is a genotype error: FN for the truth
  and FP for the query, counted separately as ``FP.gt`` (as hap.py does);
* the rest are FN (truth) and FP (query).

Precision = QUERY.TP / (QUERY.TP + QUERY.FP), recall = TRUTH.TP / TRUTH.TOTAL, F1 their
harmonic mean; reported for SNPs and indels, for all non-reference calls (``ALL``) and for
calls with FILTER PASS (``PASS``). Normalisation resolves indel representation differences;
unlike hap.py's haplotype comparison it does not reconcile complex variants written as
different combinations of records.
"""
from __future__ import annotations

import bisect
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import atomic_path, save_config, write_run_info

from . import io as vio

__all__ = ["EvaluateConfig", "evaluate_calls", "normalise", "load_alleles", "compare",
           "format_table", "SUMMARY_COLUMNS"]

SUMMARY_COLUMNS = ["Type", "Filter", "TRUTH.TOTAL", "TRUTH.TP", "TRUTH.FN", "QUERY.TOTAL",
                   "QUERY.TP", "QUERY.FP", "FP.gt", "METRIC.Recall", "METRIC.Precision",
                   "METRIC.F1_Score"]


@dataclass
class EvaluateConfig:
    """Options of ``deepsci variants evaluate``."""

    calls: str = ""
    truth: str = ""
    ref: str = ""
    confident_bed: str | None = None
    out: str = "summary.csv"

    def validate(self) -> None:
        if not (self.calls and self.truth and self.ref):
            raise ConfigError("expected --calls, --truth and --ref, found none")


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


def compare(truth: dict, query: dict) -> dict[str, dict[str, int]]:
    """Count TP/FN/FP/FP.gt per variant type from two allele dicts (:func:`load_alleles`)."""
    c = {t: defaultdict(int) for t in ("SNP", "INDEL")}
    for key, (kind, hom) in truth.items():
        c[kind]["TRUTH.TOTAL"] += 1
        q = query.get(key)
        if q is not None and q[1] == hom:
            c[kind]["TRUTH.TP"] += 1
        else:
            c[kind]["TRUTH.FN"] += 1
    for key, (kind, hom) in query.items():
        c[kind]["QUERY.TOTAL"] += 1
        t = truth.get(key)
        if t is not None and t[1] == hom:
            c[kind]["QUERY.TP"] += 1
        else:
            c[kind]["QUERY.FP"] += 1
            if t is not None:
                c[kind]["FP.gt"] += 1
    return {k: dict(v) for k, v in c.items()}


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
            counts = compare(truth, query)
            for kind in ("INDEL", "SNP"):
                d = {c: counts[kind].get(c, 0) for c in SUMMARY_COLUMNS[2:9]}
                rows.append({"Type": kind, "Filter": filt, **d, **_metrics(counts[kind])})
    out = Path(config.out)
    with atomic_path(out) as tmp:
        with open(tmp, "w") as f:
            f.write(",".join(SUMMARY_COLUMNS) + "\n")
            for r in rows:
                f.write(",".join(str(r[c]) for c in SUMMARY_COLUMNS) + "\n")
    save_config(config, out.with_name(out.stem + "_config.json"))
    write_run_info(out.parent, command="variants evaluate", config=config)
    return rows
