"""Stage 3, ``postprocess-variants``: genotype probabilities -> VCF 4.2 (and gVCF).

Per site the classifier gives, for every image (one per alt and per alt pair), the
probabilities of 0, 1 or 2 copies of the shown alleles. Genotype probabilities over all
alleles are combined DeepVariant-style: each genotype takes the *minimum* over the images
that contain its allele pair, then the genotypes are renormalised.

Multi-allelic sites are first pruned as DeepVariant's ``--multi_allelic_qual_filter`` does:
an alt whose own image gives ``QUAL = -10 log10 p(0 copies)`` below the filter (default 1)
is dropped with every image that shows it, so a pair image cannot vouch for two alleles
that each look like errors on their own (long homopolymers offer a deletion and an
insertion at once).

Quality fields: ``GQ = -10 log10(1 - p(GT))``, ``QUAL = -10 log10 p(0/0)``,
``PL = round(-10 log10 p(g)) - min``, ``GL = log10 p(g)``.
"""
from __future__ import annotations

import gzip
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations_with_replacement

import numpy as np

from deepsci.core import __version__
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.runs import RunDir

from . import io as vio
from .igv import check_bam_out, write_evidence_bam
from .make_examples import example_files
from .predict import calls_meta, read_calls

__all__ = ["PostprocessConfig", "postprocess_variants", "run_postprocess", "combine_genotypes", "prune_alleles",
           "site_record",
           "genotype_fields", "gvcf_records", "MIN_PROB"]

MIN_PROB = 1e-10            # caps phred values at 100
GVCF_ALT = "<*>"


@dataclass
class PostprocessConfig:
    """Options of ``deepsci variants postprocess-variants``.

    Attributes
    ----------
    calls : str
        calls.tsv.gz from call-variants.
    ref : str
        Reference FASTA.
    out : str
        Output VCF (.vcf.gz, bgzipped and tabix-indexed).
    gvcf_out : str or None
        Also write a gVCF (.g.vcf.gz).
    examples : str or None
        make-examples folder with the gVCF blocks (with --gvcf-out).
    haploid_contigs : list of str or None
        Contigs called haploid, e.g. chrX,chrY.
    min_qual : float
        QUAL below this is FILTER LowQual.
    sample : str or None
        Sample name of the VCF; None: the reads' read-group SM.
    multi_allelic_qual_filter : float
        At multi-allelic sites, drop alts whose own image gives QUAL below this
        (DeepVariant's default 1; 0 keeps all).
    bam_out : str or None
        Also write the reads around each called variant (its pileup window) as an indexed
        BAM to open beside the VCF in IGV (needs --reads).
    reads : str or None
        The BAM/CRAM the calls were made from (with --bam-out).
    """

    calls: str = ""
    ref: str = ""
    out: str = "calls.vcf.gz"
    gvcf_out: str | None = None
    examples: str | None = None
    haploid_contigs: list[str] | None = None
    min_qual: float = 1.0
    sample: str | None = None
    multi_allelic_qual_filter: float = 1.0
    bam_out: str | None = None
    reads: str | None = None

    def validate(self) -> PostprocessConfig:
        if not self.calls or not self.ref:
            raise ConfigError("expected --calls and --ref, found none")
        if not self.out.endswith(".vcf.gz"):
            raise ConfigError(f"expected --out ending in .vcf.gz, found {self.out!r}")
        if self.multi_allelic_qual_filter < 0:
            raise ConfigError(f"expected --multi-allelic-qual-filter >= 0, found "
                              f"{self.multi_allelic_qual_filter}")
        if self.gvcf_out is not None:
            if not self.gvcf_out.endswith(".vcf.gz"):
                raise ConfigError(f"expected --gvcf-out ending in .vcf.gz, found "
                                  f"{self.gvcf_out!r}")
            if self.examples is None:
                raise ConfigError("expected --examples (the make-examples folder with gVCF "
                                  "blocks) together with --gvcf-out, found none")
        if self.min_qual < 0:
            raise ConfigError(f"expected --min-qual >= 0, found {self.min_qual}")
        if self.bam_out is not None:
            check_bam_out(self.bam_out, overwrite=True)
            if not self.reads:
                raise ConfigError("expected --reads (the BAM/CRAM the calls were made from) "
                                  "together with --bam-out, found none")
        return self


def genotypes(n_alleles: int, ploidy: int = 2) -> list[tuple[int, ...]]:
    """Genotypes in VCF order (``k(k+1)/2 + j`` for diploid ``j <= k``)."""
    if ploidy == 1:
        return [(i,) for i in range(n_alleles)]
    return sorted(combinations_with_replacement(range(n_alleles), 2), key=lambda g: (g[1], g[0]))


def combine_genotypes(n_alts: int, images: dict[tuple[int, ...], np.ndarray]
                      ) -> dict[tuple[int, int], float]:
    """Diploid genotype probabilities over alleles ``0..n_alts`` from per-image predictions.

    Parameters
    ----------
    n_alts : int
    images : dict
        ``alt_idx`` (0-based indices into the alts, 1 or 2 of them) -> ``(3,)`` probabilities
        of 0/1/2 copies of those alts.

    Returns
    -------
    dict mapping ``(a, b)`` with ``a <= b`` (allele numbers, 0 = REF) to a probability.

    Notes
    -----
    For ``0/0`` every image must show zero copies, so its probability is the minimum of
    ``p0`` over all images; ``0/i`` takes the minimum of ``p1`` over images containing ``i``;
    ``i/i`` the minimum of ``p2`` over images containing ``i``; ``i/j`` the minimum of
    ``p2`` of the pair image and ``p1`` of each single image.
    """
    out = {}
    for g in genotypes(n_alts + 1):
        a, b = g
        vals = []
        if a == 0 and b == 0:
            vals = [p[0] for p in images.values()]
        elif a == 0:
            vals = [p[1] for s, p in images.items() if b - 1 in s]
        elif a == b:
            vals = [p[2] for s, p in images.items() if a - 1 in s]
        else:
            pair = (a - 1, b - 1)
            vals = [images[pair][2]] if pair in images else []
            vals += [images[(i,)][1] for i in pair if (i,) in images]
        out[g] = float(min(vals)) if vals else 0.0
    total = sum(out.values())
    if total <= 0:
        return {g: 1.0 / len(out) for g in out}
    return {g: v / total for g, v in out.items()}


def prune_alleles(ref: str, alts: list[str], ad: list[int], images: dict, qual_filter: float
                  ) -> tuple[str, list[str], list[int], dict]:
    """Drop the alts of a multi-allelic site whose own image calls them reference.

    Parameters
    ----------
    ref, alts : str, list of str
        The site's alleles.
    ad : list of int
        Allele depths, REF first (``len(alts) + 1``).
    images : dict
        ``alt_idx`` tuple -> ``(3,)`` probabilities, as for :func:`combine_genotypes`.
    qual_filter : float
        An alt is dropped when ``-10 log10 p(0 copies)`` of its single-alt image is below
        this; when every alt would go, the one with the highest such QUAL stays. 0 or a
        biallelic site leaves everything as is.

    Returns
    -------
    ref, alts, ad, images
        With the dropped alts, their depths and every image showing them removed, alt
        indices renumbered, and a base suffix shared by all remaining alleles trimmed.

    Examples
    --------
    >>> im = {(0,): np.array([.96, .04, 0.]), (1,): np.array([1., 0., 0.]),
    ...       (0, 1): np.array([.05, .95, 0.])}
    >>> r, a, d, i = prune_alleles("AG", ["A", "AGG"], [23, 10, 4], im, 1.0)
    >>> r, a, d, sorted(i)
    ('AG', ['A'], [23, 10], [(0,)])
    """
    if qual_filter <= 0 or len(alts) < 2:
        return ref, alts, ad, images
    qual = {i: _phred(images[(i,)][0]) for i in range(len(alts)) if (i,) in images}
    keep = [i for i in range(len(alts)) if qual.get(i, math.inf) >= qual_filter]
    if not keep:
        keep = [max(qual, key=qual.get)]
    if len(keep) == len(alts):
        return ref, alts, ad, images
    new = {old: k for k, old in enumerate(keep)}
    images = {tuple(new[i] for i in s): p for s, p in images.items() if all(i in new for i in s)}
    alleles = [ref] + [alts[i] for i in keep]
    # Pruning "A" from AGG -> AG,A leaves AGG -> AG: trim to the minimal AG -> A.
    while min(len(a) for a in alleles) > 1 and len({a[-1] for a in alleles}) == 1:
        alleles = [a[:-1] for a in alleles]
    return alleles[0], alleles[1:], [ad[0]] + [ad[i + 1] for i in keep], images


def haploid(probs: dict[tuple[int, int], float], n_alleles: int) -> dict[tuple[int], float]:
    """Restrict diploid probabilities to haploid genotypes (``i/i`` -> ``i``), renormalised."""
    h = {(i,): probs.get((i, i), 0.0) for i in range(n_alleles)}
    total = sum(h.values())
    return {g: (v / total if total > 0 else 1.0 / n_alleles) for g, v in h.items()}


def _phred(p: float) -> float:
    return -10.0 * math.log10(max(p, MIN_PROB))


def genotype_fields(probs: dict, n_alleles: int, ploidy: int = 2) -> dict:
    """GT, GQ, QUAL, PL and GL from genotype probabilities (see the module notes).

    Examples
    --------
    >>> f = genotype_fields({(0, 0): 0.01, (0, 1): 0.98, (1, 1): 0.01}, 2)
    >>> f["GT"], f["GQ"], f["PL"]
    ((0, 1), 17, [20, 0, 20])
    """
    order = genotypes(n_alleles, ploidy)
    p = np.array([probs.get(g, 0.0) for g in order])
    best = int(np.argmax(p))
    gt = order[best]
    phred = np.array([_phred(v) for v in p])
    pl = np.rint(phred - phred.min()).astype(int)
    gq = int(round(_phred(1.0 - p[best]))) if p[best] < 1.0 else int(round(_phred(0.0)))
    qual = _phred(p[0])
    return {"GT": gt, "GQ": gq, "QUAL": round(qual, 4), "PL": pl.tolist(),
            "GL": [round(math.log10(max(v, MIN_PROB)), 4) for v in p]}


def site_record(contig: str, pos: int, ref: str, alts: list[str], dp: int, ad: list[int],
                images: dict, *, ploidy: int = 2, min_qual: float = 1.0,
                gvcf: bool = False, multi_allelic_qual_filter: float = 1.0) -> dict:
    """One VCF record dict (for :func:`deepsci.apps.variants.io.write_vcf`) for a site.

    Alts are first pruned (:func:`prune_alleles`; ``multi_allelic_qual_filter=0`` keeps all).
    """
    ref, alts, ad, images = prune_alleles(ref, list(alts), list(ad), images,
                                          multi_allelic_qual_filter)
    n = len(alts) + 1
    probs = combine_genotypes(len(alts), images)
    if ploidy == 1:
        probs = haploid(probs, n)
    alleles = list(alts)
    ad = list(ad)
    if gvcf:
        # Joint callers need the non-ref allele on variant records too; it never has support.
        alleles.append(GVCF_ALT)
        ad.append(0)
        n += 1
    f = genotype_fields(probs, n, ploidy)
    is_ref = all(a == 0 for a in f["GT"])
    filt = "RefCall" if is_ref else ("LowQual" if f["QUAL"] < min_qual else "PASS")
    vaf = [round(a / dp, 4) if dp > 0 else 0.0 for a in ad[1:]]
    return {"contig": contig, "pos": pos, "ref": ref, "alts": tuple(alleles),
            "qual": f["QUAL"], "filter": filt,
            "sample": {"GT": f["GT"], "GQ": f["GQ"], "DP": dp, "AD": tuple(ad),
                       "VAF": tuple(vaf), "PL": tuple(f["PL"]), "GL": tuple(f["GL"])}}


def gvcf_records(blocks, variant_spans: dict[str, list[tuple[int, int]]], fa) -> list[dict]:
    """Reference blocks (``<*>``) for the bases not covered by variant records.

    ``blocks`` are ``(contig, start, end, gq, min_dp)`` (0-based, end exclusive) from
    make-examples; blocks are cut around ``variant_spans``.
    """
    out = []
    spans = {c: sorted(v) for c, v in variant_spans.items()}
    for contig, start, end, gq, min_dp in blocks:
        pieces = [(start, end)]
        for a, b in _overlapping(spans.get(contig, []), start, end):
            nxt = []
            for s, e in pieces:
                if b <= s or a >= e:
                    nxt.append((s, e))
                    continue
                if s < a:
                    nxt.append((s, a))
                if b < e:
                    nxt.append((b, e))
            pieces = nxt
        for s, e in pieces:
            out.append({"contig": contig, "pos": s, "ref": fa.fetch(contig, s, s + 1).upper(),
                        "alts": (GVCF_ALT,), "qual": None, "filter": None,
                        "info": {"END": e},
                        "sample": {"GT": (0, 0), "GQ": gq, "MIN_DP": min_dp, "DP": min_dp}})
    return out


def _overlapping(spans, start, end):
    import bisect
    i = bisect.bisect_left(spans, (start - 1000, 0))
    while i < len(spans) and spans[i][0] < end:
        if spans[i][1] > start:
            yield spans[i]
        i += 1


def _read_blocks(folder) -> list[tuple]:
    blocks = []
    for f in example_files(folder, kind="gvcf"):
        with gzip.open(f, "rt") as fh:
            for line in fh:
                c, s, e, g, d = line.rstrip("\n").split("\t")
                blocks.append((c, int(s), int(e), int(g), int(d)))
    if not blocks:
        raise InputError("expected gvcf-*.tsv.gz blocks from make-examples (run it with "
                         "gVCF output on), found none", folder)
    return blocks


def postprocess_variants(config: PostprocessConfig, *, command: str | None = None) -> dict:
    """Write the VCF (and gVCF); returns counts per FILTER."""
    config.validate()
    fa = vio.open_fasta(config.ref)
    contigs = dict(zip(fa.references, fa.lengths, strict=True))
    rows = read_calls(config.calls)
    if config.bam_out:      # a bad --reads fails here, before the VCF is written
        vio.open_alignments(config.reads, config.ref, check_contigs=False).close()
    called = calls_meta(config.calls)
    sample = config.sample or called.get("sample") or "SAMPLE"
    haploid_set = set(config.haploid_contigs or [])
    unknown = haploid_set - set(contigs)
    if unknown:
        raise InputError(f"expected --haploid-contigs from the FASTA, found {sorted(unknown)}",
                         config.ref)
    sites: dict = defaultdict(dict)
    meta: dict = {}
    for r in rows:
        if r["contig"] not in contigs:
            raise InputError(f"expected calls on contigs of the FASTA, found {r['contig']!r}",
                             config.calls)
        if r["pos"] + len(r["ref"]) > contigs[r["contig"]]:
            raise InputError(f"expected calls inside {r['contig']} (length "
                             f"{contigs[r['contig']]}), found one at {r['pos'] + 1}",
                             config.calls)
        key = (r["contig"], r["pos"], r["ref"], tuple(r["alts"]))
        sites[key][r["alt_idx"]] = r["probs"]
        meta[key] = (r["dp"], r["ad"])
    order = {c: i for i, c in enumerate(contigs)}
    mqf = config.multi_allelic_qual_filter
    records = []
    for key in sorted(sites, key=lambda k: (order[k[0]], k[1], k[2], k[3])):
        contig, pos, ref, alts = key
        dp, ad = meta[key]
        records.append((key, site_record(contig, pos, ref, list(alts), dp, ad, sites[key],
                                         ploidy=1 if contig in haploid_set else 2,
                                         min_qual=config.min_qual,
                                         multi_allelic_qual_filter=mqf)))
    cmd = command or " ".join(sys.argv)
    model = {f"deepsci_{k}": called[k] for k in ("model", "model_version") if k in called}
    header = vio.vcf_header(contigs, sample, command=cmd, source=f"deepsci {__version__}",
                            meta=model)
    vio.write_vcf([r for _, r in records], config.out, header)
    counts = defaultdict(int)
    for _, r in records:
        counts[r["filter"]] += 1
    if config.gvcf_out:
        gheader = vio.vcf_header(contigs, sample, command=cmd, gvcf=True,
                                 source=f"deepsci {__version__}", meta=model)
        var = [site_record(*k[:2], k[2], list(k[3]), *meta[k], sites[k],
                           ploidy=1 if k[0] in haploid_set else 2, min_qual=config.min_qual,
                           gvcf=True, multi_allelic_qual_filter=mqf) for k, _ in records]
        spans = defaultdict(list)
        for r in var:
            spans[r["contig"]].append((r["pos"], r["pos"] + len(r["ref"])))
        ref_recs = gvcf_records(_read_blocks(config.examples), spans, fa)
        allrec = sorted(var + ref_recs, key=lambda r: (order[r["contig"]], r["pos"]))
        vio.write_vcf(allrec, config.gvcf_out, gheader)
        counts["gvcf_blocks"] = len(ref_recs)
    if config.bam_out:
        bam = write_evidence_bam(config.reads, config.ref, [r for _, r in records],
                                 config.bam_out, command=cmd)
        counts["bam_reads"] = bam["reads"]
    return dict(counts)


def run_postprocess(config: PostprocessConfig, *, overwrite: bool = False,
                    command: str | None = None) -> dict:
    """``deepsci variants postprocess-variants``: the VCF with its ``<vcf>.run.json``."""
    config.validate()
    vio.check_new_file(config.out, overwrite=overwrite)
    vio.check_new_file(config.gvcf_out, overwrite=overwrite, option="--gvcf-out")
    check_bam_out(config.bam_out, overwrite=overwrite)
    with RunDir(config.out, command="variants postprocess-variants", config=config,
                inputs=[config.calls, config.ref, config.examples, config.reads],
                overwrite=overwrite, file_output=True) as run:
        counts = postprocess_variants(config, command=command)
        run.record(filters=counts, vcf=config.out, gvcf=config.gvcf_out, bam=config.bam_out)
    return counts
