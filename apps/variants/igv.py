"""What a user needs to check calls in IGV: the reads behind each call, and the model's name.

``--bam-out`` (``run``, ``postprocess-variants``) writes, for every called variant (a VCF
record whose genotype is not reference), the input's reads that overlap the 221 bp window
its pileup image covered: the original records, unfiltered (duplicates, low mapping
quality and secondary reads too, so IGV shows what make-examples saw and what it dropped),
each once where windows overlap, coordinate-sorted and indexed (``.bai``). The header is the
input's with ``SO:coordinate`` and a ``@PG`` line for deepsci. BAM and BAI are written under
temporary names and renamed only when both are complete.

The VCF header names the model from its card (``##deepsci_model``,
``##deepsci_model_version``): call-variants copies them into its table's ``##`` lines and
postprocess-variants, which writes the VCF, moves them on (:func:`model_identity`).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import atomic_path
from deepsci.core.runs import refuse_existing_file

from .pileup import WIDTH

__all__ = ["check_bam_out", "model_identity", "variant_windows", "merge_windows",
           "write_evidence_bam", "PG_ID"]

PG_ID = "deepsci"


def check_bam_out(path: str | os.PathLike | None, *, overwrite: bool = False) -> Path | None:
    """Refuse a ``--bam-out`` that cannot be written, before any work is done.

    Parameters
    ----------
    path : path or None
        The BAM to write (``.bam``); None: no BAM asked for.
    overwrite : bool
        Replace an existing BAM (and its ``.bai``); without it an existing one is an error.
    """
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise InputError("expected --bam-out to be a .bam file, found a folder", p)
    if not p.name.endswith(".bam"):
        raise ConfigError(f"expected --bam-out ending in .bam, found {p.name!r}")
    bai = Path(f"{p}.bai")
    for existing in (p, bai):
        refuse_existing_file(existing, overwrite=overwrite, what="--bam-out")
    if bai.is_dir():
        raise InputError("expected to write the BAM's index, found a folder there", bai)
    probe = p.parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError("expected a folder on the --bam-out path, found a file", probe)
    return p


def model_identity(cards) -> dict[str, str]:
    """``{"model": name, "model_version": "<deepsci version> (commit <commit>)"}`` of cards.

    An ensemble's members that differ are listed in member order, comma-separated; one
    value when they agree. Empty fields give empty strings.

    Examples
    --------
    >>> from types import SimpleNamespace as C
    >>> model_identity([C(name="variants-illumina", deepsci_version="0.1.0", commit="ab12")])
    {'model': 'variants-illumina', 'model_version': '0.1.0 (commit ab12)'}
    """
    def one_line(s: str) -> str:
        return " ".join(str(s).split())

    names, versions = [], []
    for card in cards:
        name = one_line(card.name)
        version = one_line(card.deepsci_version)
        if card.commit:
            version = f"{version} (commit {one_line(card.commit)})".strip()
        if name not in names:
            names.append(name)
        if version not in versions:
            versions.append(version)
    return {"model": ",".join(names), "model_version": ",".join(versions)}


def variant_windows(records, width: int = WIDTH) -> list[tuple[str, int, int]]:
    """The pileup window ``(contig, start, end)`` (0-based, end exclusive) of each called
    variant among VCF record dicts (``filter`` other than RefCall and None, i.e. not gVCF
    reference blocks). The image of a candidate at ``pos`` starts ``width // 2`` bases
    before it (:func:`~deepsci.apps.variants.pileup.encode_pileup`)."""
    out = []
    for r in records:
        if r.get("filter") in (None, "RefCall"):
            continue
        start = r["pos"] - width // 2
        out.append((r["contig"], max(0, start), start + width))
    return out


def merge_windows(windows, contig_order: list[str]) -> list[tuple[str, int, int]]:
    """Windows sorted by (contig in ``contig_order``, start), overlapping or touching ones
    merged, so the resulting intervals are disjoint and increasing per contig."""
    order = {c: i for i, c in enumerate(contig_order)}
    merged: list[list] = []
    for c, s, e in sorted(windows, key=lambda w: (order.get(w[0], len(order)), w[1], w[2])):
        if merged and merged[-1][0] == c and s <= merged[-1][2]:
            merged[-1][2] = max(merged[-1][2], e)
        else:
            merged.append([c, s, e])
    return [tuple(m) for m in merged]


def _header(af, command: str) -> dict:
    """The input's header with SO:coordinate and a @PG line for this deepsci run."""
    from deepsci.core import __version__

    h = af.header.to_dict()
    h["HD"] = {**h.get("HD", {"VN": "1.6"}), "SO": "coordinate"}
    pgs = list(h.get("PG", []))
    ids = {pg.get("ID") for pg in pgs}
    pg_id, k = PG_ID, 1
    while pg_id in ids:
        pg_id, k = f"{PG_ID}.{k}", k + 1
    pg = {"ID": pg_id, "PN": "deepsci", "VN": __version__, "CL": " ".join(command.split())}
    if pgs:
        pg["PP"] = pgs[-1]["ID"]
    h["PG"] = [*pgs, pg]
    return h


def _copy_reads(af, out, intervals) -> int:
    """Copy every record overlapping ``intervals`` (disjoint, increasing per contig) once.

    A record fetched again for the next interval overlaps an earlier one exactly when it
    starts before the previous interval's end, so that test alone drops the repeats.
    """
    n, prev = 0, (None, -1)
    for contig, start, end in intervals:
        prev_end = prev[1] if prev[0] == contig else -1
        for r in af.fetch(contig, start, end):
            if r.reference_start < prev_end:
                continue
            out.write(r)
            n += 1
        prev = (contig, end)
    return n


def write_evidence_bam(reads: str, ref: str, records, out: str | os.PathLike, *,
                       command: str = "deepsci") -> dict:
    """Write the reads behind each called variant of ``records`` to an indexed BAM.

    Parameters
    ----------
    reads, ref : path
        The indexed input BAM/CRAM the calls were made from, and its reference.
    records : iterable of dict
        VCF record dicts (:func:`~deepsci.apps.variants.postprocess.site_record`).
    out : path
        The ``.bam``; ``out.bai`` is written beside it. Both appear together, complete.
    command : str
        Recorded in the ``@PG`` line.

    Returns
    -------
    dict
        ``bam``, ``reads`` written, ``variants`` (windows) and ``intervals`` after merging.
    """
    import pysam

    from . import io as vio

    out = Path(out)
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    windows = variant_windows(records)
    af = vio.open_alignments(reads, ref, check_contigs=False)
    try:
        intervals = merge_windows([w for w in windows if w[0] in af.references],
                                  list(af.references))
        header = _header(af, command)
        with tempfile.TemporaryDirectory(prefix="deepsci-bam-") as tmp:
            unsorted = Path(tmp) / "unsorted.bam"
            with pysam.AlignmentFile(str(unsorted), "wb", header=header) as f:
                n = _copy_reads(af, f, intervals)
            with atomic_path(out) as tmp_bam, atomic_path(f"{out}.bai") as tmp_bai:
                # --no-PG: samtools would add its own @PG after deepsci's, naming the
                # temporary files; the header is the input's plus deepsci's line only.
                pysam.sort("--no-PG", "-o", str(tmp_bam), "-O", "bam", "-T",
                           str(Path(tmp) / "sort"), str(unsorted))
                pysam.index(str(tmp_bam), str(tmp_bai))
                # atomic_path renames the index first, then the BAM: a BAM that exists
                # always has its own index beside it.
    except (OSError, ValueError, pysam.utils.SamtoolsError) as e:
        _remove_empty(made)
        raise InputError(f"expected to write the reads behind the calls, failed: "
                         f"{str(e).strip().splitlines()[0][:160] if str(e).strip() else e!r}",
                         out) from None
    finally:
        af.close()
    return {"bam": str(out), "reads": n, "variants": len(windows),
            "intervals": len(intervals)}


def _remove_empty(folders) -> None:
    """Remove the folders a failed write created (innermost first) when they are empty."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            break
