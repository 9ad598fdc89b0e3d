"""``deepsci variants``: germline SNP/indel calling from BAM/CRAM to VCF/gVCF.

Thin layer: parse options, build one config, call the stage. TensorFlow is imported inside
the stages, so ``deepsci variants --help`` stays fast.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="DeepVariant-style variant calling: simulate, make-examples, train, call-variants, "
         "postprocess-variants, run, evaluate, demo.",
)


def _cmd() -> str:
    return "deepsci " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _split(v: str | None) -> list[str] | None:
    return [x for x in v.split(",") if x] if v else None


@app.command()
def simulate(
    out: Path = typer.Option(..., "--out", help="Output folder."),
    fasta: Path | None = typer.Option(None, help="Reference FASTA (default: a random genome)."),
    contigs: str | None = typer.Option(None, help="Comma list of contigs of --fasta to use."),
    length: int = typer.Option(50_000, help="Random genome length (bp)."),
    coverage: float = typer.Option(30.0, help="Mean read depth."),
    read_length: int = typer.Option(150, help="Read length (bp), paired-end."),
    snp_rate: float = typer.Option(1e-3, help="SNPs per base."),
    indel_rate: float = typer.Option(1e-4, help="Indels per base (1-20 bp)."),
    het_fraction: float = typer.Option(0.6, help="Share of heterozygous variants."),
    homopolymer_slip: float = typer.Option(
        2e-4, help="Slippage error chance at a 4-bp homopolymer (x1.9 per extra base, "
                   "at most 0.2); 0 turns homopolymer errors off."),
    sample: str = typer.Option("SIM", help="Sample name (read group SM)."),
    threads: int = typer.Option(2, help="BWA-MEM threads."),
    seed: int = typer.Option(0, help="Random seed."),
):
    """Plant variants in a genome, simulate 2x reads, align them with BWA-MEM."""
    from .synth import SimulateConfig
    from .synth import simulate as run_sim

    cfg = SimulateConfig(out_dir=str(out), fasta=str(fasta) if fasta else None,
                         contigs=_split(contigs), genome_length=length, coverage=coverage,
                         read_length=read_length, snp_rate=snp_rate, indel_rate=indel_rate,
                         het_fraction=het_fraction, homopolymer_slip=homopolymer_slip,
                         sample=sample, threads=threads, seed=seed)
    res = run_sim(cfg)
    from deepsci.core.io import save_config, write_run_info
    save_config(cfg, out / "config.json")
    write_run_info(out, command="variants simulate", config=cfg)
    typer.echo(f"{res['n_snps']} SNPs, {res['n_indels']} indels, {res['n_pairs']} read pairs")
    for k in ("ref", "bam", "truth", "bed"):
        typer.echo(f"{k}: {res[k]}")


def _me_config(reads, ref, out, regions, truth_vcf, confident_bed, shards, scheduler, min_mapq,
               min_base_quality, min_count_snps, min_fraction_snps, min_count_indels,
               min_fraction_indels, gvcf):
    from .candidates import CandidateConfig
    from .make_examples import MakeExamplesConfig

    return MakeExamplesConfig(
        reads=str(reads), ref=str(ref), out_dir=str(out), regions=regions,
        truth_vcf=str(truth_vcf) if truth_vcf else None,
        confident_bed=str(confident_bed) if confident_bed else None, shards=shards,
        scheduler=scheduler, gvcf=gvcf,
        candidates=CandidateConfig(min_mapq=min_mapq, min_base_quality=min_base_quality,
                                   min_count_snps=min_count_snps,
                                   min_fraction_snps=min_fraction_snps,
                                   min_count_indels=min_count_indels,
                                   min_fraction_indels=min_fraction_indels))


_REGIONS = typer.Option(None, help="chr:start-end (1-based), a comma list, or a BED file.")
_SHARDS = typer.Option(1, help="Split the regions into N shards run in parallel (resumable).")
_SCHED = typer.Option(None, help="Dask scheduler: local (default), inline, or tcp://host:port.")


@app.command("make-examples")
def make_examples_cmd(
    reads: Path = typer.Option(..., help="Indexed, coordinate-sorted BAM or CRAM."),
    ref: Path = typer.Option(..., help="Reference FASTA (.fai is created when missing)."),
    out: Path = typer.Option(..., "--out", help="Output folder for example shards."),
    regions: str | None = _REGIONS,
    truth_vcf: Path | None = typer.Option(None, help="Truth VCF: label examples (training)."),
    confident_bed: Path | None = typer.Option(None, help="Confident regions of the truth."),
    shards: int = _SHARDS,
    scheduler: str | None = _SCHED,
    min_mapq: int = typer.Option(5, help="Minimum mapping quality of a read."),
    min_base_quality: int = typer.Option(10, help="Minimum base quality of an alt base."),
    min_count_snps: int = typer.Option(2),
    min_fraction_snps: float = typer.Option(0.12),
    min_count_indels: int = typer.Option(2),
    min_fraction_indels: float = typer.Option(0.06),
    gvcf: bool = typer.Option(True, help="Also write gVCF reference blocks."),
    downsample_fraction: float = typer.Option(1.0, help="Keep this share of read pairs "
                                              "(training augmentation)."),
    seed: int = typer.Option(0, help="Seed of down-sampling (reads and pileup rows)."),
):
    """Find candidate variants and write pileup images as sharded TFRecords."""
    from .make_examples import make_examples

    cfg = _me_config(reads, ref, out, regions, truth_vcf, confident_bed, shards, scheduler,
                     min_mapq, min_base_quality, min_count_snps, min_fraction_snps,
                     min_count_indels, min_fraction_indels, gvcf)
    cfg.candidates.downsample_fraction = downsample_fraction
    cfg.candidates.downsample_seed = seed
    cfg.seed = seed
    s = make_examples(cfg)
    typer.echo(f"{s['candidates']} candidates, {s['examples']} examples in {s['shards']} "
               f"shard(s), {s['candidates_per_second']:.1f} candidates/s")
    if cfg.truth_vcf:
        typer.echo(f"labels hom-ref/het/hom-alt: {s['labels']}")


def _fractions(v: str) -> tuple[float, ...]:
    from deepsci.core.errors import ConfigError

    try:
        return tuple(float(x) for x in v.split(",") if x)
    except ValueError:
        raise ConfigError(f"expected comma-separated read fractions, found {v!r}") from None


_HIDDEN = {"hidden": True}


@app.command()
def train(
    reads: Path | None = typer.Option(None, help="Recipe: indexed BAM/CRAM with a truth set."),
    ref: Path | None = typer.Option(None, help="Recipe: reference FASTA."),
    truth_vcf: Path | None = typer.Option(None, help="Recipe: truth VCF of --reads."),
    confident_bed: Path | None = typer.Option(None, help="Recipe: confident regions BED."),
    regions: str | None = typer.Option(None, help="Recipe: training regions (default all)."),
    examples: str | None = typer.Option(
        None, help="Instead of the recipe: labelled make-examples folder(s), comma-separated."),
    val_examples: str | None = typer.Option(
        None, help="With --examples: labelled validation examples; the best epoch is kept."),
    out: Path = typer.Option(..., "--out", help="Output folder (model.keras, checkpoints)."),
    replicates: int = typer.Option(7, help="Recipe: simulated replicates of the regions."),
    downsample: str = typer.Option("1.0,0.7,0.5", help="Recipe: read fractions of --reads."),
    val_fraction: float = typer.Option(0.2, help="Recipe: share of the regions held out."),
    epochs: int = typer.Option(8),
    seed: int = typer.Option(0, help="Training seed; replicates use seed+100+r."),
    af_augment: float = typer.Option(
        0.25, help="Chance per het SNP example and epoch of thinning its alt reads (0 off)."),
    replicate_downsample: str = typer.Option("1.0,0.6", **_HIDDEN),
    coverage: float | None = typer.Option(None, **_HIDDEN),
    read_length: int | None = typer.Option(None, **_HIDDEN),
    shards: int = typer.Option(1, **_HIDDEN),
    scheduler: str | None = typer.Option(None, **_HIDDEN),
    threads: int = typer.Option(2, **_HIDDEN),
    model_variant: str = typer.Option("small", **_HIDDEN),
    warm_start: Path | None = typer.Option(None, **_HIDDEN),
    width: int = typer.Option(16, **_HIDDEN),
    batch_size: int = typer.Option(32, **_HIDDEN),
    learning_rate: float = typer.Option(1e-3, **_HIDDEN),
    strategy: str = typer.Option("auto", **_HIDDEN),
    class_weight: str = typer.Option("none", **_HIDDEN),
    af_augment_alleles: str = typer.Option("snp", **_HIDDEN),
    af_augment_min_vaf: float = typer.Option(0.15, **_HIDDEN),
):
    """Train the genotype classifier on the core training loop (resumable).

    With --reads/--ref/--truth-vcf/--confident-bed it runs the benchmark's recipe: the
    reads at fractions --downsample, --replicates simulated replicates of the regions,
    the last --val-fraction held out for validation, allele-fraction augmentation.
    Also: --replicate-downsample, --coverage, --read-length, --shards, --scheduler,
    --threads, --model-variant, --warm-start, --width, --batch-size, --learning-rate,
    --strategy, --class-weight, --af-augment-alleles, --af-augment-min-vaf.
    """
    from .recipe import RecipeConfig
    from .train import TrainVariantsConfig, train_variants

    recipe = RecipeConfig(downsample=_fractions(downsample), replicates=replicates,
                          replicate_downsample=_fractions(replicate_downsample),
                          val_fraction=val_fraction, coverage=coverage,
                          read_length=read_length, threads=threads)
    opt = {k: str(v) if v is not None else None for k, v in (
        ("reads", reads), ("ref", ref), ("truth_vcf", truth_vcf),
        ("confident_bed", confident_bed), ("warm_start", warm_start))}
    cfg = TrainVariantsConfig(examples=examples or None, val_examples=val_examples or None,
                              regions=regions, out_dir=str(out), recipe=recipe, shards=shards,
                              scheduler=scheduler, variant=model_variant,
                              class_weight=class_weight, epochs=epochs, width=width,
                              strategy=strategy, batch_size=batch_size,
                              learning_rate=learning_rate, seed=seed, af_augment=af_augment,
                              af_augment_alleles=af_augment_alleles,
                              af_augment_min_vaf=af_augment_min_vaf, **opt)
    res = train_variants(cfg)
    last = res["history"][-1] if res["history"] else {}
    typer.echo(f"model: {res['model']}  steps: {res['steps']}  "
               f"loss: {last.get('loss', float('nan')):.4f}  "
               f"accuracy: {last.get('accuracy', float('nan')):.4f}")
    if res["recipe"] is not None:
        typer.echo(f"labels hom-ref/het/hom-alt: {res['class_counts']} (training), "
                   f"{res['recipe'].val_labels} (validation)")


@app.command("call-variants")
def call_variants_cmd(
    examples: Path = typer.Option(..., help="make-examples output folder."),
    model: str = typer.Option(..., help="model.keras from `train`; several comma-separated "
                                          "are averaged (an ensemble)."),
    out: Path = typer.Option(..., "--out", help="Output calls.tsv.gz."),
    batch_size: int = typer.Option(64),
):
    """Genotype probabilities for every example (batched inference)."""
    from .predict import CallConfig, call_variants

    res = call_variants(CallConfig(examples=str(examples), model=str(model), out=str(out),
                                   batch_size=batch_size))
    typer.echo(f"{res['examples']} examples, {res['examples_per_second']:.1f} examples/s")


@app.command("postprocess-variants")
def postprocess_cmd(
    calls: Path = typer.Option(..., help="calls.tsv.gz from call-variants."),
    ref: Path = typer.Option(..., help="Reference FASTA."),
    out: Path = typer.Option(..., "--out", help="Output VCF (.vcf.gz, tabix-indexed)."),
    gvcf_out: Path | None = typer.Option(None, help="Also write a gVCF (.g.vcf.gz)."),
    examples: Path | None = typer.Option(None, help="make-examples folder (gVCF blocks)."),
    haploid_contigs: str | None = typer.Option(None, help="Comma list, e.g. chrX,chrY."),
    min_qual: float = typer.Option(1.0, help="QUAL below this is FILTER LowQual."),
    multi_allelic_qual_filter: float = typer.Option(
        1.0, help="At multi-allelic sites, drop alts whose own image gives QUAL below this "
                  "(DeepVariant's default 1; 0 keeps all)."),
):
    """Genotypes, GQ/QUAL/PL and FILTER into a bgzipped, indexed VCF 4.2 (and gVCF)."""
    from .postprocess import PostprocessConfig, postprocess_variants

    res = postprocess_variants(PostprocessConfig(
        calls=str(calls), ref=str(ref), out=str(out),
        gvcf_out=str(gvcf_out) if gvcf_out else None,
        examples=str(examples) if examples else None,
        haploid_contigs=_split(haploid_contigs), min_qual=min_qual,
        multi_allelic_qual_filter=multi_allelic_qual_filter), command=_cmd())
    typer.echo("  ".join(f"{k}: {v}" for k, v in sorted(res.items())))
    typer.echo(f"vcf: {out}")


@app.command()
def run(
    reads: Path = typer.Option(..., help="Indexed, coordinate-sorted BAM or CRAM."),
    ref: Path = typer.Option(..., help="Reference FASTA."),
    model: str = typer.Option(..., help="model.keras from `train`; several comma-separated "
                                          "are averaged (an ensemble)."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    regions: str | None = _REGIONS,
    shards: int = _SHARDS,
    scheduler: str | None = _SCHED,
    gvcf: bool = typer.Option(False, help="Also write calls.g.vcf.gz."),
    haploid_contigs: str | None = typer.Option(None, help="Comma list, e.g. chrX,chrY."),
):
    """make-examples -> call-variants -> postprocess-variants into OUT/calls.vcf.gz."""
    from .pipeline import RunConfig, run_pipeline

    res = run_pipeline(RunConfig(reads=str(reads), ref=str(ref), model=str(model),
                                 out_dir=str(out), regions=regions, shards=shards,
                                 scheduler=scheduler, gvcf=gvcf,
                                 haploid_contigs=_split(haploid_contigs)), command=_cmd())
    typer.echo(f"{res['candidates']} candidates; {res['filters']}")
    typer.echo(f"vcf: {res['vcf']}")


@app.command()
def evaluate(
    calls: Path = typer.Option(..., help="Call set VCF."),
    truth: Path = typer.Option(..., help="Truth VCF."),
    ref: Path = typer.Option(..., help="Reference FASTA."),
    confident_bed: Path | None = typer.Option(None, help="Confident regions BED."),
    out: Path = typer.Option(Path("summary.csv"), "--out", help="hap.py-like summary CSV."),
):
    """hap.py-style SNP/INDEL precision, recall and F1 after normalisation."""
    from .evaluate import EvaluateConfig, evaluate_calls, format_table

    rows = evaluate_calls(EvaluateConfig(calls=str(calls), truth=str(truth), ref=str(ref),
                                         confident_bed=str(confident_bed) if confident_bed
                                         else None, out=str(out)))
    typer.echo(format_table(rows))
    typer.echo(f"summary: {out}")


@app.command()
def demo(
    out: Path = typer.Option(Path("variants-demo"), "--out", help="Output folder."),
    quick: bool = typer.Option(False, help="Seconds-scale settings."),
):
    """Simulate, train briefly, call, evaluate; compare with bcftools call."""
    from .demo import run_demo

    res = run_demo(out, quick=quick)
    typer.echo(res.text)
