"""Stage 1, ``make-examples``: candidates and pileup images as sharded, compressed TFRecords.

Each shard covers a share of the requested regions, writes
``examples-SSSSS-of-NNNNN.tfrecord.gz`` plus ``gvcf-SSSSS-of-NNNNN.tsv.gz`` (reference-model
blocks) atomically, and is run through :func:`deepsci.core.parallel.run_shards`, so a killed
run resumes with the shards that are not done yet.
"""
from __future__ import annotations

import gzip
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import atomic_path, remove_stale_temporaries, write_json
from deepsci.core.parallel import run_shards
from deepsci.core.runs import RunDir

from . import io as vio
from .candidates import (
    Candidate,
    CandidateConfig,
    ReadInfo,
    coverage,
    find_candidates,
    keep_read,
    parse_read,
)
from .gvcf import reference_blocks
from .labels import Truth, label_image
from .pileup import CHANNELS, HEIGHT, WIDTH, alt_sets, encode_pileup
from .tfrecord import TFRecordWriter, encode_example

__all__ = ["MakeExamplesConfig", "make_examples", "run_make_examples", "examples_in_region", "shard_regions",
           "example_files", "parse_example"]

CHUNK = 50_000         # bases of reads held in memory at once


@dataclass
class MakeExamplesConfig:
    """Options of ``deepsci variants make-examples``.

    Attributes
    ----------
    reads : str
        Indexed, coordinate-sorted BAM or CRAM.
    ref : str
        Reference FASTA (the .fai is created when missing).
    out_dir : str
        Output folder of the example shards (``--out``).
    regions : str or None
        chr:start-end (1-based), a comma list, or a BED file; None: every contig.
    truth_vcf : str or None
        Truth VCF: label the examples (training mode).
    confident_bed : str or None
        Confident regions of the truth (with --truth-vcf).
    shards : int
        Split the regions into this many shards run in parallel (resumable).
    scheduler : str or None
        Dask scheduler: local (default), inline (this process) or tcp://host:port.
    seed : int
        Seed of the pileup rows' down-sampling.
    gvcf : bool
        Also write gVCF reference blocks.
    candidates : CandidateConfig
        Read filters, allele thresholds and read down-sampling.
    """

    reads: str = ""
    ref: str = ""
    out_dir: str = field(default="examples", metadata={"cli": "out"})
    regions: str | None = None
    truth_vcf: str | None = None
    confident_bed: str | None = None
    shards: int = 1
    scheduler: str | None = None
    seed: int = 0
    gvcf: bool = True
    candidates: CandidateConfig = field(default_factory=CandidateConfig)

    def validate(self) -> MakeExamplesConfig:
        if not self.reads or not self.ref:
            raise ConfigError("expected --reads and --ref, found none")
        if self.shards < 1:
            raise ConfigError(f"expected --shards >= 1, found {self.shards}")
        if self.seed < 0 or self.candidates.downsample_seed < 0:
            raise ConfigError(f"expected --seed and --downsample-seed >= 0, found {self.seed} "
                              f"and {self.candidates.downsample_seed}")
        if (self.truth_vcf is None) != (self.confident_bed is None):
            raise ConfigError("expected --truth-vcf and --confident-bed together, found one")
        c = self.candidates
        if not 0.0 < c.downsample_fraction <= 1.0:
            raise ConfigError(f"expected --downsample-fraction in (0, 1], found "
                              f"{c.downsample_fraction}")
        for name in ("min_fraction_snps", "min_fraction_indels"):
            if not 0.0 <= getattr(c, name) <= 1.0:
                raise ConfigError(f"expected --{name.replace('_', '-')} in [0, 1], found "
                                  f"{getattr(c, name)}")
        for name in ("min_mapq", "min_base_quality"):
            if getattr(c, name) < 0:
                raise ConfigError(f"expected --{name.replace('_', '-')} >= 0, found "
                                  f"{getattr(c, name)}")
        for name in ("min_count_snps", "min_count_indels", "max_alts"):
            if getattr(c, name) < 1:
                raise ConfigError(f"expected --{name.replace('_', '-')} >= 1, found "
                                  f"{getattr(c, name)}")
        return self


def shard_regions(regions: list[vio.Region], n: int) -> list[list[vio.Region]]:
    """Split regions into ``n`` lists of about equal total length (cutting regions as needed)."""
    total = sum(r.length for r in regions)
    per = max(1, -(-total // n))
    shards: list[list[vio.Region]] = [[] for _ in range(n)]
    k, room = 0, per
    for r in regions:
        s = r.start
        while s < r.end:
            take = min(room, r.end - s)
            shards[k].append(vio.Region(r.contig, s, s + take))
            s += take
            room -= take
            if room == 0 and k < n - 1:
                k, room = k + 1, per
    return [s for s in shards if s]


def _fetch_reads(af, contig: str, start: int, end: int, cfg: CandidateConfig) -> list:
    """The kept reads overlapping ``[start, end)``, checked to come in coordinate order.

    A BAM whose header says ``SO:coordinate`` but whose records are not sorted would give
    other pileups without a word (the candidate search relies on the order), and a
    damaged block deep inside the file only shows when it is decoded: both are refused
    here, naming the BAM.
    """
    out, last = [], -1
    try:
        for r in af.fetch(contig, start, end):
            if r.reference_start < last:
                raise InputError(f"expected coordinate-sorted alignments, found a record at "
                                 f"{contig}:{r.reference_start + 1} after one at "
                                 f"{contig}:{last + 1}; run `samtools sort`", _name(af))
            last = r.reference_start
            if keep_read(r, cfg):
                out.append(r)
    except (OSError, ValueError) as e:
        raise InputError(f"expected readable alignments in {contig}:{start + 1}-{end}, "
                         f"found: {e}", _name(af)) from None
    return out


def _name(af) -> str:
    name = af.filename
    return name.decode() if isinstance(name, bytes) else str(name)


def examples_in_region(af, fa, region: vio.Region, cfg: CandidateConfig, *, seed: int = 0,
                       truth: Truth | None = None, with_gvcf: bool = False):
    """Yield ``(candidate, alt_idx, image, label)`` for a region, and gVCF blocks at the end.

    Yields tuples for examples; finally yields ``("gvcf", blocks)`` when ``with_gvcf``.
    ``label`` is -1 without truth; with truth, candidates that cannot be labelled (outside
    the confident regions, or overlapping a complex truth record) are skipped.
    """
    blocks = []
    for cs in range(region.start, region.end, CHUNK):
        ce = min(region.end, cs + CHUNK)
        raw = _fetch_reads(af, region.contig, cs, ce, cfg)
        lo = min([r.reference_start for r in raw] + [cs]) - 30
        hi = max([r.reference_end for r in raw] + [ce]) + WIDTH
        lo, hi = max(0, lo), min(fa.get_reference_length(region.contig), hi)
        ref = fa.fetch(region.contig, lo, hi).upper().encode()
        ref_arr = np.frombuffer(ref, np.uint8)
        reads, mism = [], []
        for r in raw:
            ev, mm = parse_read(r, ref, ref_arr, lo, cfg.min_base_quality)
            reads.append(ReadInfo(r, r.reference_start, r.reference_end, ev))
            mism.append(mm)
        depth = coverage(reads, lo, len(ref))
        cands = find_candidates(reads, region.contig, cs, ce, ref, lo, cfg, depth=depth)
        if with_gvcf:
            mm = np.concatenate(mism) if mism else np.zeros(0, np.int64)
            nonref = np.bincount(mm - lo, minlength=len(ref))[: len(ref)] if mm.size else \
                np.zeros(len(ref), np.int64)
            blocks += reference_blocks(region.contig, cs, depth[cs - lo:ce - lo],
                                       nonref[cs - lo:ce - lo])
        starts = np.array([ri.start for ri in reads])
        longest = max((ri.end - ri.start for ri in reads), default=0)
        for cand in cands:
            if truth is not None and not truth.confident(cand):
                continue
            # Reads are sorted by start: only those starting within one read length before
            # the candidate and before its end can overlap it.
            lo_i = int(np.searchsorted(starts, cand.pos - longest, side="left"))
            hi_i = int(np.searchsorted(starts, cand.end, side="left"))
            near = [ri for ri in reads[lo_i:hi_i] if ri.end > cand.pos]
            for alt_idx in alt_sets(len(cand.alts)):
                img = encode_pileup(cand, alt_idx, near, ref_arr, lo, seed=seed)
                label = -1 if truth is None else label_image(truth, cand, alt_idx)
                yield cand, alt_idx, img, label
    if with_gvcf:
        yield "gvcf", blocks


def serialize_example(cand: Candidate, alt_idx: tuple[int, ...], img: np.ndarray,
                      label: int) -> bytes:
    """One ``tf.train.Example``: raw uint8 image, label and the candidate's alleles/support."""
    return encode_example({
        "image/encoded": [img.tobytes()],
        "image/shape": list(img.shape),
        "label": [int(label)],
        "variant/contig": [cand.contig.encode()],
        "variant/pos": [cand.pos],
        "variant/ref": [cand.ref.encode()],
        "variant/alts": [a.encode() for a in cand.alts],
        "variant/alt_idx": list(alt_idx),
        "variant/dp": [cand.dp],
        "variant/ad": list(cand.ad),
    })


def parse_example(raw: bytes) -> dict:
    """Decode a serialised example back into numpy / Python values (for inspection)."""
    import tensorflow as tf

    ex = tf.train.Example.FromString(raw)
    f = ex.features.feature
    shape = tuple(f["image/shape"].int64_list.value)
    return {
        "image": np.frombuffer(f["image/encoded"].bytes_list.value[0], np.uint8).reshape(shape),
        "label": int(f["label"].int64_list.value[0]),
        "contig": f["variant/contig"].bytes_list.value[0].decode(),
        "pos": int(f["variant/pos"].int64_list.value[0]),
        "ref": f["variant/ref"].bytes_list.value[0].decode(),
        "alts": [a.decode() for a in f["variant/alts"].bytes_list.value],
        "alt_idx": tuple(f["variant/alt_idx"].int64_list.value),
        "dp": int(f["variant/dp"].int64_list.value[0]),
        "ad": list(f["variant/ad"].int64_list.value),
    }


def _shard_name(kind: str, i: int, n: int, ext: str) -> str:
    return f"{kind}-{i:05d}-of-{n:05d}.{ext}"


def _run_shard(task: dict) -> dict:
    """Worker: one shard's examples and gVCF blocks, each file written atomically."""
    cfg = CandidateConfig(**task["candidates"])
    regions = [vio.Region(*r) for r in task["regions"]]
    af = vio.open_alignments(task["reads"], task["ref"], check_contigs=False)
    fa = vio.open_fasta(task["ref"])
    truth = None
    if task["truth_vcf"]:
        truth = Truth.load(task["truth_vcf"], task["confident_bed"], fa,
                           regions=regions)
    out = Path(task["out"])
    t0 = time.time()
    n_ex = n_cand = 0
    labels = [0, 0, 0]
    blocks = []
    last = None
    with atomic_path(out) as tmp:
        with TFRecordWriter(tmp) as w:
            for region in regions:
                for item in examples_in_region(af, fa, region, cfg, seed=task["seed"],
                                               truth=truth, with_gvcf=task["gvcf"]):
                    if item[0] == "gvcf":
                        blocks += item[1]
                        continue
                    cand, alt_idx, img, label = item
                    if label is None:
                        continue
                    if last is not cand:
                        n_cand += 1
                        last = cand
                    if label >= 0:
                        labels[label] += 1
                    w.write(serialize_example(cand, alt_idx, img, label))
                    n_ex += 1
    if task["gvcf"]:
        with atomic_path(task["gvcf_out"]) as tmp:
            with gzip.open(tmp, "wt", compresslevel=3) as f:
                for b in blocks:
                    f.write("\t".join(map(str, b)) + "\n")
    return {"examples": n_ex, "candidates": n_cand, "labels": labels,
            "seconds": time.time() - t0, "bases": sum(r.length for r in regions)}


def example_files(path: str | os.PathLike, kind: str = "examples") -> list[Path]:
    """The shard files of a make-examples output folder (or a single file)."""
    path = Path(path)
    if path.is_file():
        return [path]
    ext = "tfrecord.gz" if kind == "examples" else "tsv.gz"
    files = sorted(path.glob(f"{kind}-*-of-*.{ext}"))
    if not files and kind == "examples":
        raise InputError("expected examples-*-of-*.tfrecord.gz shards from make-examples, "
                         "found none", path)
    return files


def make_examples(config: MakeExamplesConfig, *, progress: bool = True) -> dict:
    """Run make-examples over all regions; returns counts, timing and throughput.

    Validates every input before writing anything: the BAM/CRAM (index, sort order,
    contigs), the FASTA (and its ``.fai``), the regions, and in training mode the truth VCF
    and confident BED.
    """
    config.validate()
    fa = vio.open_fasta(config.ref)
    af = vio.open_alignments(config.reads, config.ref)
    lengths = dict(zip(fa.references, fa.lengths, strict=True))
    hint = config.regions if config.regions and Path(config.regions).is_file() else config.ref
    regions = vio.parse_regions(config.regions, lengths, hint)
    in_bam = set(af.references)
    missing = sorted({r.contig for r in regions} - in_bam)
    if config.regions and missing:
        raise InputError(f"expected the region's contigs in the alignments, found "
                         f"{missing[:3]} missing", config.reads)
    regions = [r for r in regions if r.contig in in_bam]
    if not regions:
        raise InputError("expected at least one FASTA contig in the alignments, found none",
                         config.reads)
    sample = _sample_name(af, config.reads)
    af.close()
    if config.truth_vcf:
        vio.open_vcf(config.truth_vcf).close()
        vio.read_bed(config.confident_bed)
    out = Path(config.out_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # A killed earlier attempt's half-written shard (.examples-….tmp.tfrecord.gz) would
    # otherwise survive the resumed run beside the finished shards.
    remove_stale_temporaries(out)
    shards = shard_regions(regions, config.shards)
    n = len(shards)
    tasks = []
    for i, regs in enumerate(shards):
        tasks.append({
            "index": i, "regions": [(r.contig, r.start, r.end) for r in regs],
            "reads": str(config.reads), "ref": str(config.ref),
            "truth_vcf": config.truth_vcf, "confident_bed": config.confident_bed,
            "candidates": asdict(config.candidates), "seed": config.seed, "gvcf": config.gvcf,
            "out": str(out / _shard_name("examples", i, n, "tfrecord.gz")),
            "gvcf_out": str(out / _shard_name("gvcf", i, n, "tsv.gz")),
        })
    t0 = time.time()
    scheduler = config.scheduler
    if scheduler is None and n == 1:
        scheduler = "inline"          # a LocalCluster for one shard only costs start-up time
    try:
        results = run_shards(_run_shard, tasks,
                             key=lambda t: f"shard-{t['index']:05d}-of-{n:05d}",
                             state_dir=out / ".state", scheduler=scheduler,
                             workers=min(n, os.cpu_count() or 1), progress=progress,
                             desc="make-examples")
    except BaseException:
        remove_if_nothing_done(out, created)
        raise
    wall = time.time() - t0
    summary = {"shards": n, "sample": sample, "examples": 0, "candidates": 0,
               "labels": [0, 0, 0], "bases": 0, "wall_seconds": wall}
    for r in results.values():
        summary["examples"] += r["examples"]
        summary["candidates"] += r["candidates"]
        summary["bases"] += r["bases"]
        summary["labels"] = [a + b for a, b in zip(summary["labels"], r["labels"], strict=True)]
    summary["candidates_per_second"] = summary["candidates"] / max(wall, 1e-9)
    meta = {"sample": sample, "contigs": lengths, "image_shape": [HEIGHT, WIDTH, CHANNELS],
                "training": config.truth_vcf is not None, **summary}
    write_json(out / "examples_info.json", meta)
    return summary


def remove_if_nothing_done(out: Path, created: bool) -> None:
    """After a failed run, remove the folder this run created when no shard finished.

    A shard that failed on a user's file (an unsorted BAM found while reading) must not
    leave an empty examples folder with its ``.state`` behind; finished shards stay, so a
    rerun resumes from them.
    """
    import shutil

    if created and not any(out.glob("examples-*-of-*")) and \
            not any((out / ".state").glob("*.done.json")):
        shutil.rmtree(out, ignore_errors=True)


def run_make_examples(config: MakeExamplesConfig, *, overwrite: bool = False,
                      progress: bool = True) -> dict:
    """``deepsci variants make-examples``: :func:`make_examples` with its ``run.json``."""
    config.validate()
    inputs = [config.reads, config.ref, config.truth_vcf, config.confident_bed]
    with RunDir(config.out_dir, command="variants make-examples", config=config,
                inputs=inputs, overwrite=overwrite) as run:
        summary = make_examples(config, progress=progress)
        run.record(**summary)
    return summary


def _sample_name(af, path) -> str:
    rgs = af.header.to_dict().get("RG", [])
    names = sorted({rg.get("SM") for rg in rgs if rg.get("SM")})
    if len(names) > 1:
        raise InputError(f"expected one sample (SM) in the read groups, found {names}", path)
    return names[0] if names else Path(path).name.split(".")[0]
