"""The training recipe: labelled examples made from reads, a reference and a truth set.

This is how ``deepsci variants train --reads ... --truth-vcf ...`` builds its training data,
and it is the recipe with which the benchmark reached its goals (``bench/RESULTS.md``,
variants session 5, recipe D):

* the user's reads of the training regions at several read fractions (1.0, 0.7, 0.5), the
  same truth at several depths, as DeepVariant augments its training data;
* ``replicates`` independent simulations of the training regions of the reference, each with
  its own planted variants and reads (seeds ``seed + 100 + r``), at read fractions 1.0 and 0.6,
  as DeepVariant trains on several sequencing replicates: the model sees more sequence
  contexts (homopolymers above all) with and without a variant;
* the last ``val_fraction`` of the training regions is held out of every read set as
  validation (the epoch with the lowest validation loss is kept).

The allele-fraction augmentation and the epochs of the recipe are training options
(:class:`deepsci.apps.variants.train.TrainVariantsConfig`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.runs import RunDir

from . import io as vio
from .candidates import CandidateConfig, keep_read
from .make_examples import MakeExamplesConfig, make_examples
from .synth import SimulateConfig, simulate

__all__ = ["RecipeConfig", "ReadSet", "TrainingExamples", "make_training_examples",
           "split_validation", "replicate_genome", "measure_reads"]


@dataclass
class RecipeConfig:
    """How training examples are made from reads and a truth set (recipe D).

    Attributes
    ----------
    downsample : tuple of float
        Read fractions of ``--reads`` made into training examples (depth augmentation).
    replicates : int
        Simulated replicates of the training regions (own variants and reads) added to the
        training set; 0 trains on the given reads only.
    replicate_downsample : tuple of float
        Read fractions of every replicate made into training examples.
    val_fraction : float
        Last share of the training regions held out of every read set as validation.
    coverage : float or None
        Read depth of the replicates; None: the mean depth of ``--reads`` over the regions.
    read_length : int or None
        Read length of the replicates; None: the median length of ``--reads``.
    snp_rate : float
        SNPs planted per base in each replicate.
    indel_rate : float
        Indels planted per base in each replicate.
    homopolymer_slip : float
        Replicates' slippage error chance at a 4-bp homopolymer (see ``simulate``).
    threads : int
        BWA-MEM threads of the replicate alignments.
    """

    downsample: tuple[float, ...] = (1.0, 0.7, 0.5)
    replicates: int = 7
    replicate_downsample: tuple[float, ...] = (1.0, 0.6)
    val_fraction: float = 0.2
    coverage: float | None = None
    read_length: int | None = None
    snp_rate: float = 1e-3
    indel_rate: float = 1e-4
    homopolymer_slip: float = 2e-4
    threads: int = 2

    def validate(self) -> RecipeConfig:
        for name in ("downsample", "replicate_downsample"):
            fr = tuple(getattr(self, name))
            if not fr or not all(0.0 < f <= 1.0 for f in fr):
                raise ConfigError(f"expected --{name.replace('_', '-')} fractions in (0, 1], "
                                  f"found {fr}")
        if self.replicates < 0:
            raise ConfigError(f"expected --replicates >= 0, found {self.replicates}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"expected --val-fraction in [0, 1), found {self.val_fraction}")
        if self.coverage is not None and self.coverage <= 0:
            raise ConfigError(f"expected --coverage > 0, found {self.coverage}")
        if self.read_length is not None and self.read_length < 30:
            raise ConfigError(f"expected --read-length >= 30, found {self.read_length}")
        for name in ("snp_rate", "indel_rate", "homopolymer_slip"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"expected --{name.replace('_', '-')} in [0, 1], found "
                                  f"{getattr(self, name)}")
        if self.threads < 1:
            raise ConfigError(f"expected --threads >= 1, found {self.threads}")
        return self


@dataclass
class ReadSet:
    """One source of labelled examples: reads, their reference, truth and confident BED."""

    name: str
    reads: str
    ref: str
    truth_vcf: str
    confident_bed: str
    fit: list[vio.Region]
    val: list[vio.Region]


@dataclass
class TrainingExamples:
    """What :func:`make_training_examples` made: example folders and their label counts."""

    examples: list[str]
    val_examples: list[str]
    labels: list[int]
    val_labels: list[int]
    fit_regions: str
    val_regions: str
    replicates: list[dict]
    seconds: dict[str, float]
    first: dict


def split_validation(regions: list[vio.Region], fraction: float
                     ) -> tuple[list[vio.Region], list[vio.Region]]:
    """Hold out the last ``fraction`` of the regions' total length as validation.

    Returns ``(fit, val)``; a region at the cut is split there.
    """
    total = sum(r.length for r in regions)
    keep = int(total * (1.0 - fraction)) if fraction > 0 else total
    fit, val = [], []
    for r in regions:
        take = max(0, min(r.length, keep))
        if take:
            fit.append(vio.Region(r.contig, r.start, r.start + take))
        if take < r.length:
            val.append(vio.Region(r.contig, r.start + take, r.end))
        keep -= take
    return fit, val


def replicate_genome(ref: str, regions: list[vio.Region]
                     ) -> tuple[dict[str, str], dict[str, int]]:
    """The reference's sequence spanned by the regions, per contig, and each contig's offset.

    A replicate is simulated on ``{contig: ref[first start:last end]}``, so a region
    ``[s, e)`` of the reference is ``[s - offset, e - offset)`` in the replicate.
    """
    fa = vio.open_fasta(ref)
    genome, offsets = {}, {}
    for contig in dict.fromkeys(r.contig for r in regions):
        lo = min(r.start for r in regions if r.contig == contig)
        hi = max(r.end for r in regions if r.contig == contig)
        genome[contig] = fa.fetch(contig, lo, hi).upper()
        offsets[contig] = lo
    return genome, offsets


def measure_reads(reads: str, ref: str, regions: list[vio.Region], *,
                  sample: int = 10_000) -> tuple[float, int]:
    """Mean aligned depth of the reads over the regions and their median read length.

    Counts the aligned bases of the reads make-examples would use (mapped, primary, not
    duplicate, MAPQ >= 5); the read length is the median over the first ``sample`` reads.
    """
    cfg = CandidateConfig()
    af = vio.open_alignments(reads, ref, check_contigs=False)
    bases, lengths = 0, []
    for r in regions:
        for read in af.fetch(r.contig, r.start, r.end):
            if not keep_read(read, cfg):
                continue
            bases += min(read.reference_end, r.end) - max(read.reference_start, r.start)
            if len(lengths) < sample:
                lengths.append(read.infer_read_length() or read.query_length)
    af.close()
    if not lengths:
        raise InputError(f"expected aligned reads in the training regions, found none "
                         f"({regions[0]} ...)", reads)
    return bases / max(1, sum(r.length for r in regions)), int(np.median(lengths))


def _shift(regions: list[vio.Region], offsets: dict[str, int]) -> list[vio.Region]:
    return [vio.Region(r.contig, r.start - offsets[r.contig], r.end - offsets[r.contig])
            for r in regions]


def _regions_text(regions: list[vio.Region]) -> str:
    return ",".join(str(r) for r in regions)


def _replicate(recipe: RecipeConfig, main: ReadSet, run: RunDir, seed: int,
               depth: tuple[float, int]) -> tuple[ReadSet, dict]:
    """Simulate (or reuse) one replicate of the training regions; its read set and record."""
    key, out = f"replicate-{seed}", run.path / "replicates" / f"rep_{seed}"
    sim = run.marker(key)
    if sim is None:
        genome, offsets = replicate_genome(main.ref, main.fit + main.val)
        half = out / "genome.fa"
        vio.write_fasta(genome, half)
        sim = simulate(SimulateConfig(
            out_dir=str(out), fasta=str(half), snp_rate=recipe.snp_rate,
            indel_rate=recipe.indel_rate, coverage=depth[0], read_length=depth[1],
            homopolymer_slip=recipe.homopolymer_slip, threads=recipe.threads, seed=seed))
        sim.update(seed=seed, offsets=offsets, coverage=depth[0], read_length=depth[1])
        run.mark(key, sim)
    offsets = sim["offsets"]
    return ReadSet(f"rep_{seed}", sim["bam"], sim["ref"], sim["truth"], sim["bed"],
                   _shift(main.fit, offsets), _shift(main.val, offsets)), sim


def _examples(run: RunDir, key: str, cfg: MakeExamplesConfig, progress: bool) -> dict:
    """make-examples of one read set, or its summary when an earlier attempt finished it."""
    summary = run.marker(key)
    if summary is None:
        summary = make_examples(cfg, progress=progress)
        run.mark(key, summary)
    return summary


def _read_sets(recipe: RecipeConfig, main: ReadSet, run: RunDir, seed: int
               ) -> tuple[list[ReadSet], list[dict], float]:
    """The user's read set and the simulated replicates (made or reused)."""
    sets, sims, t0 = [main], [], time.time()
    if recipe.replicates:
        depth = (recipe.coverage, recipe.read_length)
        if None in depth:
            measured = measure_reads(main.reads, main.ref, main.fit + main.val)
            depth = (depth[0] or round(measured[0], 1), depth[1] or measured[1])
        for r in range(recipe.replicates):
            rs, sim = _replicate(recipe, main, run, seed + 100 + r, depth)
            sets.append(rs)
            sims.append(sim)
    return sets, sims, time.time() - t0


def make_training_examples(recipe: RecipeConfig, *, run: RunDir, reads: str, ref: str,
                           truth_vcf: str, confident_bed: str, regions: str | None = None,
                           seed: int = 0, shards: int = 1, scheduler: str | None = None,
                           progress: bool = True) -> TrainingExamples:
    """Make the recipe's labelled training and validation examples in ``run``'s folder.

    Folders: ``replicates/rep_<seed>/`` (simulations), ``examples/<set>_<fraction>/``
    (training) and ``examples/val_<set>/`` (validation). Finished parts are marked in the
    run's resume markers and reused by a re-run.
    """
    recipe.validate()
    out = run.path
    fa = vio.open_fasta(ref)
    lengths = dict(zip(fa.references, fa.lengths, strict=True))
    af = vio.open_alignments(reads, ref)
    in_bam = set(af.references)
    af.close()
    regs = vio.parse_regions(regions, lengths, regions if regions and Path(regions).is_file()
                             else ref)
    regs = regs if regions else [r for r in regs if r.contig in in_bam]
    fit, val = split_validation(regs, recipe.val_fraction)
    main = ReadSet("reads", str(reads), str(ref), str(truth_vcf), str(confident_bed), fit, val)
    sets, sims, t_sim = _read_sets(recipe, main, run, seed)
    t0, res = time.time(), TrainingExamples([], [], [0, 0, 0], [0, 0, 0], _regions_text(fit),
                                            _regions_text(val), sims,
                                            {"simulate replicates": t_sim}, {})
    jobs = [(rs, f) for rs in sets
            for f in (recipe.downsample if rs is main else recipe.replicate_downsample)]
    for k, (rs, frac) in enumerate(jobs):
        d = out / "examples" / f"{rs.name}_{frac:g}"
        s = _examples(run, f"examples-{rs.name}-{frac:g}", MakeExamplesConfig(
            reads=rs.reads, ref=rs.ref, out_dir=str(d), regions=_regions_text(rs.fit),
            truth_vcf=rs.truth_vcf, confident_bed=rs.confident_bed, shards=shards,
            scheduler=scheduler, gvcf=False, seed=k,
            candidates=CandidateConfig(downsample_fraction=float(frac), downsample_seed=k)),
            progress)
        res.first = res.first or s
        res.labels = [a + b for a, b in zip(res.labels, s["labels"], strict=True)]
        res.examples.append(str(d))
    res.seconds["make-examples (training)"] = time.time() - t0
    t0 = time.time()
    for rs in sets if val else []:
        d = out / "examples" / f"val_{rs.name}"
        s = _examples(run, f"examples-val-{rs.name}", MakeExamplesConfig(
            reads=rs.reads, ref=rs.ref, out_dir=str(d), regions=_regions_text(rs.val),
            truth_vcf=rs.truth_vcf, confident_bed=rs.confident_bed, shards=shards,
            scheduler=scheduler, gvcf=False), progress)
        res.val_labels = [a + b for a, b in zip(res.val_labels, s["labels"], strict=True)]
        res.val_examples.append(str(d))
    res.seconds["make-examples (validation)"] = time.time() - t0
    return res
