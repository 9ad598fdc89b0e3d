"""File formats of variant calling: FASTA, BAM/CRAM, VCF/gVCF, BED, regions, TFRecord examples.

Everything is read and written with ``pysam`` (htslib). Every check of a user's file raises
:class:`deepsci.core.errors.InputError` naming the file and the problem, before any output
is created.
"""
from __future__ import annotations

import gzip
import os
import re
import shutil
import sys
import tempfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deepsci.core.errors import InputError
from deepsci.core.io import atomic_path
from deepsci.core.runs import refuse_existing_file

__all__ = [
    "Region",
    "read_fasta",
    "write_fasta",
    "open_fasta",
    "open_alignments",
    "parse_regions",
    "read_bed",
    "write_bed",
    "left_align",
    "write_truth_vcf",
    "write_vcf",
    "open_vcf",
    "check_bgzf",
    "check_new_file",
    "htslib_messages",
    "htslib_reason",
]


@dataclass(frozen=True)
class Region:
    """A half-open, 0-based interval ``[start, end)`` on ``contig``."""

    contig: str
    start: int
    end: int

    def __str__(self) -> str:
        return f"{self.contig}:{self.start + 1}-{self.end}"

    @property
    def length(self) -> int:
        return self.end - self.start


# ---------------------------------------------------------------- FASTA

def read_fasta(path: str | os.PathLike, *, contigs: list[str] | None = None) -> dict[str, str]:
    """Read a (possibly bgzipped) FASTA into ``{name: UPPER-CASE sequence}``."""
    fa = open_fasta(path)
    names = list(fa.references) if contigs is None else list(contigs)
    out = {}
    for name in names:
        if name not in fa.references:
            raise InputError(f"expected contig {name!r} in the FASTA, found "
                             f"{', '.join(fa.references[:5])}", path)
        out[name] = fa.fetch(name).upper()
    return out


def write_fasta(genome: dict[str, str], path: str | os.PathLike, width: int = 60) -> Path:
    """Write a FASTA atomically and index it (``.fai``)."""
    import pysam

    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for name, seq in genome.items():
                f.write(f">{name}\n")
                for i in range(0, len(seq), width):
                    f.write(seq[i:i + width] + "\n")
    fai = Path(str(path) + ".fai")
    if fai.exists():
        fai.unlink()
    pysam.faidx(str(path))
    return path


def open_fasta(path: str | os.PathLike):
    """Open an indexed FASTA (``pysam.FastaFile``); build the ``.fai`` when it is missing.

    Raises
    ------
    InputError
        The file is missing, is not FASTA, or has no index and its folder is not writable.
    """
    import pysam

    path = Path(path)
    if not path.is_file():
        raise InputError("expected a FASTA file, found nothing", path)
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] != b">" and head != b"\x1f\x8b":
        raise InputError(f"expected a FASTA file starting with '>', found {head!r}", path)
    if not Path(str(path) + ".fai").exists():
        if not os.access(path.parent, os.W_OK):
            raise InputError("expected a FASTA index (.fai) next to the FASTA, found none; "
                             "run `samtools faidx` on it", path)
        try:
            pysam.faidx(str(path))
        except pysam.SamtoolsError as e:
            raise InputError(f"expected an indexable FASTA (plain or bgzip), found: "
                             f"{str(e).strip().splitlines()[-1]}", path) from None
    try:
        return pysam.FastaFile(str(path))
    except (OSError, ValueError) as e:
        raise InputError(f"expected a readable indexed FASTA, found: {e}", path) from None


def check_new_file(path: str | os.PathLike | None, *, overwrite: bool,
                   option: str = "--out") -> None:
    """Refuse to replace a file output without ``--overwrite``, and a folder always.

    A finished file output (a VCF, a call table, a summary CSV) is the user's result:
    running again replaces it only when asked to.
    """
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise InputError(f"expected {option} to be a file, found a folder", p)
    refuse_existing_file(p, overwrite=overwrite, what=option)


# ---------------------------------------------------------------- BAM / CRAM

def check_bgzf(path: str | os.PathLike) -> None:
    """Raise :class:`InputError` when a BGZF file (BAM, .vcf.gz) lacks its EOF block."""
    path = Path(path)
    eof = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size < len(eof):
            raise InputError(f"expected a BGZF file, found only {size} bytes (truncated?)", path)
        f.seek(size - len(eof))
        if f.read() != eof:
            raise InputError("expected a complete BGZF file, found no end-of-file block "
                             "(truncated file)", path)


def open_alignments(path: str | os.PathLike, fasta: str | os.PathLike, *,
                    check_contigs: bool = True):
    """Open an indexed, coordinate-sorted BAM or CRAM and check it against the reference.

    Parameters
    ----------
    path : path
        ``.bam`` (needs ``.bai``/``.csi``) or ``.cram`` (needs ``.crai`` and ``fasta``).
    fasta : path
        The reference the reads were aligned to.

    Returns
    -------
    pysam.AlignmentFile
    """
    import pysam

    path = Path(path)
    if not path.is_file():
        raise InputError("expected a BAM/CRAM file, found nothing", path)
    with open(path, "rb") as f:
        magic = f.read(4)
    is_cram = magic == b"CRAM"
    if not is_cram:
        if magic[:2] != b"\x1f\x8b":
            raise InputError(f"expected a BAM (BGZF) or CRAM file, found magic {magic!r}", path)
        check_bgzf(path)
    fa = open_fasta(fasta)
    try:
        af = pysam.AlignmentFile(str(path), "rc" if is_cram else "rb",
                                 reference_filename=str(fasta) if is_cram else None)
    except (OSError, ValueError) as e:
        raise InputError(f"expected a readable {'CRAM' if is_cram else 'BAM'}, found: {e}",
                         path) from None
    if not af.has_index():
        af.close()
        kind = ".crai" if is_cram else ".bai or .csi"
        raise InputError(f"expected an index ({kind}) next to the alignments, found none; "
                         "run `samtools index`", path)
    so = af.header.to_dict().get("HD", {}).get("SO")
    if so is not None and so != "coordinate":
        af.close()
        raise InputError(f"expected coordinate-sorted alignments, found SO:{so}; "
                         "run `samtools sort`", path)
    if check_contigs:
        # Real BAM headers often list more contigs than a reference subset has: only the
        # shared ones are used, but there must be some and their lengths must agree.
        ref_len = dict(zip(fa.references, fa.lengths, strict=True))
        if not set(af.references) & set(ref_len):
            names = ", ".join(af.references[:4]) or "none"
            af.close()
            raise InputError(f"expected contigs named as in the FASTA "
                             f"({', '.join(list(ref_len)[:4])}), found {names}", path)
        for name, length in zip(af.references, af.lengths, strict=True):
            if name in ref_len and ref_len[name] != length:
                af.close()
                raise InputError(f"expected contig {name!r} of length {ref_len[name]} as in "
                                 f"the FASTA, found {length}", path)
    return af


# ---------------------------------------------------------------- regions / BED

_REGION = re.compile(r"^([^:\s]+)(?::([\d,]+)(?:-([\d,]+))?)?$")


def read_bed(path: str | os.PathLike) -> list[Region]:
    """Read a BED file (plain or gzipped) into regions; header/track lines are skipped.

    Raises
    ------
    InputError
        The file is missing, not text (or a ``.gz`` that is not gzip), or a line is not
        ``contig start end`` with ``0 <= start < end``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("expected a BED file, found nothing", path)
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if path.suffix == ".gz" and not gz:
        raise InputError("expected a gzip-compressed BED (.bed.gz), found no gzip header", path)
    out = []
    try:
        with (gzip.open if gz else open)(path, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip() or line.startswith(("#", "track", "browser")):
                    continue
                out.append(_bed_region(line, i, path))
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as e:
        # A damaged gzip stream or binary data: one line naming the file, not a traceback.
        raise InputError(f"expected a text BED file, found unreadable data "
                         f"({type(e).__name__})", path) from None
    return out


def _bed_region(line: str, i: int, path: Path) -> Region:
    parts = line.rstrip("\r\n").split("\t")
    if len(parts) < 3:
        parts = line.split()
    try:
        r = Region(parts[0].strip(), int(parts[1]), int(parts[2]))
    except (ValueError, IndexError):
        raise InputError(f"expected 'contig<TAB>start<TAB>end' on line {i}, found "
                         f"{line.strip()[:40]!r}", path) from None
    if not r.contig or r.start < 0 or r.end <= r.start:
        raise InputError(f"expected 0 <= start < end on line {i}, found "
                         f"{line.strip()[:40]!r}", path)
    return r


def write_bed(regions, path: str | os.PathLike) -> Path:
    """Write ``(contig, start, end)`` tuples or :class:`Region` objects as BED."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for r in regions:
                c, s, e = (r.contig, r.start, r.end) if isinstance(r, Region) else r
                f.write(f"{c}\t{s}\t{e}\n")
    return Path(path)


def parse_regions(spec: str | None, contig_lengths: dict[str, int],
                  path_hint: str | None = None) -> list[Region]:
    """Turn ``None`` (whole genome), ``chr:start-end`` (1-based, inclusive), a comma list of
    those, or a BED path into checked regions, merged and sorted by the FASTA's contig order."""
    if spec is None or spec == "":
        regions = [Region(c, 0, n) for c, n in contig_lengths.items()]
    elif "\0" not in spec and (Path(spec).is_file() or spec.endswith((".bed", ".bed.gz"))):
        regions = read_bed(spec)
        for r in regions:
            _check_region(r, contig_lengths, spec)
    else:
        regions = []
        # Commas separate regions and also group digits (chr1:1,000-2,000): split only
        # where the next item names a contig (has a colon, or starts with a letter).
        items = [x for part in re.split(r"[\s;]+", spec)
                 for x in re.split(r",(?=[^,:]*:)|,(?=[A-Za-z_])", part)]
        for item in filter(None, items):
            m = _REGION.match(item)
            if m is None:
                raise InputError(f"expected a region like chr1:1000-2000, found {item!r}",
                                 path_hint)
            contig = m.group(1)
            if contig not in contig_lengths:
                raise InputError(f"expected a contig of the FASTA, found {contig!r}",
                                 path_hint)
            start = int(m.group(2).replace(",", "") or 0) - 1 if m.group(2) else 0
            end = (int(m.group(3).replace(",", "") or 0) if m.group(3)
                   else contig_lengths[contig])
            if start < 0:
                # Positions are 1-based: chr1:0-100 is a 0-based BED start typed as a region.
                raise InputError(f"expected a region start >= 1 (1-based), found {item!r}",
                                 path_hint)
            r = Region(contig, start, end)
            _check_region(r, contig_lengths, path_hint)
            regions.append(r)
    order = {c: i for i, c in enumerate(contig_lengths)}
    regions.sort(key=lambda r: (order[r.contig], r.start))
    merged: list[Region] = []
    for r in regions:
        if merged and merged[-1].contig == r.contig and r.start <= merged[-1].end:
            merged[-1] = Region(r.contig, merged[-1].start, max(merged[-1].end, r.end))
        else:
            merged.append(r)
    return merged


def _check_region(r: Region, lengths: dict[str, int], path) -> None:
    if r.contig not in lengths:
        raise InputError(f"expected a contig of the FASTA, found {r.contig!r}", path)
    if r.start >= lengths[r.contig] or r.end > lengths[r.contig]:
        raise InputError(f"expected a region inside {r.contig} (length {lengths[r.contig]}), "
                         f"found {r}", path)
    if r.end <= r.start:
        raise InputError(f"expected a non-empty region, found {r.contig}:{r.start + 1}-{r.end}",
                         path)


# ---------------------------------------------------------------- variants

def left_align(seq: str, pos: int, ref: str, alt: str) -> tuple[int, str, str]:
    """Left-align and trim a biallelic indel (VCF convention: shared anchor base).

    Parameters
    ----------
    seq : str
        The contig sequence; ``seq[pos:pos+len(ref)] == ref``.
    pos : int
        0-based position of ``ref``.

    Returns
    -------
    (pos, ref, alt) with the indel shifted as far left as the sequence allows.
    """
    if len(ref) == len(alt):
        return pos, ref, alt
    # Trim a shared suffix, then shift left while the last bases agree (Tan et al. 2015).
    while len(ref) > 1 and len(alt) > 1 and ref[-1] == alt[-1]:
        ref, alt = ref[:-1], alt[:-1]
    while pos > 0 and ref[-1] == alt[-1]:
        pos -= 1
        ref, alt = seq[pos] + ref[:-1], seq[pos] + alt[:-1]
        while len(ref) > 1 and len(alt) > 1 and ref[-1] == alt[-1]:
            ref, alt = ref[:-1], alt[:-1]
    while len(ref) > 1 and len(alt) > 1 and ref[0] == alt[0] and ref[1] == alt[1]:
        pos, ref, alt = pos + 1, ref[1:], alt[1:]
    return pos, ref, alt


def vcf_header(contigs: dict[str, int], sample: str, *, command: str = "",
               gvcf: bool = False, source: str = "deepsci-variants",
               meta: dict[str, str] | None = None):
    """A VCF 4.2 header with contigs from the FASTA, FORMAT/FILTER lines and the command.

    ``meta`` adds one ``##key=value`` line each (e.g. the model's name and version).
    """
    import pysam

    h = pysam.VariantHeader()
    h.add_line(f"##source={source}")
    if command:
        h.add_line(f"##deepsci_command={command}")
    for key, value in (meta or {}).items():
        h.add_line(f"##{key}={value}")
    for c, n in contigs.items():
        h.contigs.add(c, length=n)
    h.filters.add("RefCall", None, None, "Genotype call is homozygous reference")
    h.filters.add("LowQual", None, None, "Confidence in this variant call is low (QUAL)")
    h.formats.add("GT", 1, "String", "Genotype")
    h.formats.add("GQ", 1, "Integer", "Conditional genotype quality")
    h.formats.add("DP", 1, "Integer", "Read depth")
    h.formats.add("AD", "R", "Integer", "Read depth for each allele")
    h.formats.add("VAF", "A", "Float", "Variant allele fractions")
    h.formats.add("PL", "G", "Integer", "Phred-scaled genotype likelihoods, rounded")
    h.formats.add("GL", "G", "Float", "Log10 genotype likelihoods")
    if gvcf:
        h.add_line('##ALT=<ID=*,Description="Represents any possible alternative allele">')
        h.info.add("END", 1, "Integer", "End position of the reference block")
        h.formats.add("MIN_DP", 1, "Integer", "Minimum DP observed within the block")
    h.add_sample(sample)
    return h


def write_vcf(records, path: str | os.PathLike, header) -> Path:
    """Write records (dicts, see :func:`_fill`) as bgzipped, tabix-indexed VCF, atomically.

    Both ``path`` and ``path.tbi`` appear only when complete.
    """
    import pysam

    path = Path(path)
    if not path.name.endswith(".vcf.gz"):
        raise InputError("expected an output name ending in .vcf.gz, found "
                         f"{path.name!r}", path)
    order = {c: i for i, c in enumerate(header.contigs)}
    records = sorted(records, key=lambda r: (order.get(r["contig"], len(order)), r["pos"]))
    with atomic_path(path) as tmp:
        with pysam.VariantFile(str(tmp), "wz", header=header) as out:
            for rec in records:
                out.write(_fill(out, rec))
        pysam.tabix_index(str(tmp), preset="vcf", force=True)
        tbi_tmp = Path(str(tmp) + ".tbi")
    shutil.move(str(tbi_tmp), str(path) + ".tbi")
    return path


def _fill(vf, rec: dict):
    """Build a pysam record from a dict with contig, pos (0-based), ref, alts, qual, filter,
    info (dict) and sample fields (dict)."""
    info = dict(rec.get("info", {}))
    # htslib writes INFO/END from the record's stop; it cannot be set as a plain INFO key.
    extra = {"stop": info.pop("END")} if "END" in info else {}
    if not extra and any(a.startswith("<") for a in rec["alts"]):
        # Symbolic alleles make htslib take the length from END; give it the REF span.
        extra = {"stop": rec["pos"] + len(rec["ref"])}
    r = vf.new_record(contig=rec["contig"], start=rec["pos"],
                      alleles=(rec["ref"], *rec["alts"]), qual=rec.get("qual"),
                      filter=rec.get("filter"), **extra)
    for k, v in info.items():
        r.info[k] = v
    s = r.samples[0]
    for k, v in rec.get("sample", {}).items():
        if k == "GT":
            s["GT"] = v
            s.phased = False
        else:
            s[k] = v
    return r


@contextmanager
def htslib_messages():
    """Capture what htslib writes to file descriptor 2 while the block runs.

    htslib (and the bcftools inside pysam) log ``[E::vcf_parse] ...`` straight to the
    process's stderr, beside deepsci's own one-line error. Yields a list that holds the
    captured lines once the block ends (also when it raises), so the caller can fold them
    into its message.
    """
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as cap:
        os.dup2(cap.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            cap.seek(0)
            text = cap.read().decode("utf-8", "replace")
            lines += [ln.strip() for ln in text.splitlines() if ln.strip()]


def htslib_reason(lines: list[str], fallback) -> str:
    """The most telling line of htslib's messages (its first error), else ``fallback``'s."""
    errors = [ln for ln in lines if ln.startswith("[E::")] or lines
    if errors:
        text = errors[0]
    else:
        last = str(fallback).strip().splitlines()
        text = last[-1] if last else repr(fallback)
    return " ".join(text.split())[:200]


def open_vcf(path: str | os.PathLike, *, need_samples: bool = True):
    """Open a VCF/BCF with checks: exists, complete BGZF when compressed, has a sample."""
    import pysam

    path = Path(path)
    if not path.is_file():
        raise InputError("expected a VCF file, found nothing", path)
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        check_bgzf(path)
    with htslib_messages() as log:
        try:
            vf = pysam.VariantFile(str(path))
        except (OSError, ValueError) as e:
            err = e
        else:
            err = None
    if err is not None:
        # pysam's own text repeats the path ("invalid file `b'...'` (mode=...)"): only
        # htslib's reason, when it gave one, adds anything to the file name.
        reason = htslib_reason(log, "") if log else ""
        raise InputError("expected a VCF/BCF file htslib can read, found "
                         + (reason or "one it cannot parse"), path) from None
    if need_samples and len(vf.header.samples) == 0:
        vf.close()
        raise InputError("expected a VCF with at least one sample column, found none", path)
    return vf


def write_truth_vcf(variants, genome: dict[str, str], path: str | os.PathLike, *,
                    sample: str = "SIM") -> Path:
    """Write planted variants (see :mod:`.synth`) as a phased-free truth VCF (bgzip + tabix)."""
    header = vcf_header({c: len(s) for c, s in genome.items()}, sample, source="deepsci-simulate")
    recs = [{"contig": v.contig, "pos": v.pos, "ref": v.ref, "alts": (v.alt,), "qual": None,
             "filter": "PASS", "sample": {"GT": tuple(sorted(v.gt))}} for v in variants]
    return write_vcf(recs, path, header)
