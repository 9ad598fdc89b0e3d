"""Peer callers on the same BAM: ``bcftools mpileup | call -m`` (pysam) and freebayes."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from deepsci.core.errors import InputError
from deepsci.core.io import atomic_path

from . import io as vio

__all__ = ["bcftools_call", "freebayes_call"]


def bcftools_call(bam: str | os.PathLike, ref: str | os.PathLike, out: str | os.PathLike, *,
                  regions: str | None = None, threads: int = 2) -> Path:
    """``bcftools mpileup -f ref bam | bcftools call -mv`` with pysam's bcftools.

    ``regions`` is ``chr:start-end`` (1-based) or a BED path. Output: bgzipped, indexed VCF.
    """
    import pysam
    import pysam.bcftools

    vio.open_alignments(bam, ref).close()
    out = Path(out)
    pile = out.with_name(out.name + ".mpileup.bcf")
    args = ["-f", str(ref), "-a", "AD,DP", "-O", "u", "-o", str(pile)]
    if regions:
        args += ["-R" if Path(regions).is_file() else "-r", str(regions)]
    try:
        pysam.bcftools.mpileup(*args, str(bam), catch_stdout=False)
        with atomic_path(out) as tmp:
            pysam.bcftools.call("-m", "-v", "--threads", str(threads), "-O", "z", "-o",
                                str(tmp), str(pile), catch_stdout=False)
            pysam.tabix_index(str(tmp), preset="vcf", force=True)
            tbi = Path(str(tmp) + ".tbi")
        shutil.move(str(tbi), str(out) + ".tbi")
    except pysam.SamtoolsError as e:
        raise InputError(f"expected bcftools to run, found: {str(e).strip()[-200:]}", bam) \
            from None
    finally:
        pile.unlink(missing_ok=True)
    return out


def freebayes_call(bam, ref, out, *, regions: str | None = None) -> Path | None:
    """Run the ``freebayes`` binary when installed (else ``None``); bgzipped, indexed VCF."""
    import pysam

    exe = shutil.which("freebayes")
    if exe is None:
        return None
    out = Path(out)
    args = [exe, "-f", str(ref)]
    if regions and not Path(regions).is_file():
        args += ["-r", regions.replace(",", "")]
    elif regions:
        args += ["-t", str(regions)]
    raw = out.with_name(out.name + ".raw.vcf")
    with open(raw, "w") as f:
        subprocess.run(args + [str(bam)], stdout=f, check=True)
    with atomic_path(out) as tmp:
        pysam.tabix_compress(str(raw), str(tmp), force=True)
        pysam.tabix_index(str(tmp), preset="vcf", force=True)
        tbi = Path(str(tmp) + ".tbi")
    shutil.move(str(tbi), str(out) + ".tbi")
    raw.unlink()
    return out
