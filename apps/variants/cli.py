"""``deepsci variants``: germline SNP/indel calling from BAM/CRAM to VCF/gVCF.

Thin layer: every command is built from its stage's config dataclass
(:func:`deepsci.core.cli.config_command`), so each default is declared once, there, and
``--config run.json`` re-runs a recorded run. The stages import TensorFlow only when they
run, so ``deepsci variants --help`` stays fast.
"""
from __future__ import annotations

import shlex
import sys

import typer

from deepsci.core.cli import RunOptions, config_command

from .compress import EXPORT, DistillConfig, VariantsExportConfig, distill
from .demo import DemoConfig, run_variants_demo
from .evaluate import EvaluateConfig, format_table, run_evaluate
from .make_examples import MakeExamplesConfig, run_make_examples
from .pipeline import RunConfig, run_pipeline
from .postprocess import PostprocessConfig, run_postprocess
from .predict import CallConfig, run_call_variants
from .synth import SimulateConfig, run_simulate
from .train import TrainVariantsConfig, train_variants

app = typer.Typer(
    no_args_is_help=True,
    help="DeepVariant-style variant calling: simulate, make-examples, train, call-variants, "
         "postprocess-variants, run, evaluate, demo, distill, export.",
)


def _cmd() -> str:
    return "deepsci " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@config_command(app, SimulateConfig, name="simulate",
                shown=["out", "fasta", "contigs", "length", "coverage", "snp-rate",
                       "indel-rate", "homopolymer-slip", "threads", "seed"])
def simulate(cfg: SimulateConfig, opts: RunOptions) -> None:
    """Plant variants in a genome, simulate 2x reads, align them with BWA-MEM."""

    res = run_simulate(cfg, overwrite=opts.overwrite)
    typer.echo(f"{res['n_snps']} SNPs, {res['n_indels']} indels, {res['n_pairs']} read pairs")
    for k in ("ref", "bam", "truth", "bed"):
        typer.echo(f"{k}: {res[k]}")


@config_command(app, MakeExamplesConfig, name="make-examples",
                shown=["reads", "ref", "out", "regions", "truth-vcf", "confident-bed",
                       "shards", "scheduler", "gvcf", "downsample-fraction"])
def make_examples(cfg: MakeExamplesConfig, opts: RunOptions) -> None:
    """Find candidate variants and write pileup images as sharded TFRecords."""

    s = run_make_examples(cfg, overwrite=opts.overwrite)
    typer.echo(f"{s['candidates']} candidates, {s['examples']} examples in {s['shards']} "
               f"shard(s), {s['candidates_per_second']:.1f} candidates/s")
    if cfg.truth_vcf:
        typer.echo(f"labels hom-ref/het/hom-alt: {s['labels']}")


@config_command(app, TrainVariantsConfig, name="train",
                shown=["reads", "ref", "truth-vcf", "confident-bed", "regions", "examples",
                       "out", "replicates", "epochs", "ensemble"])
def train(cfg: TrainVariantsConfig, opts: RunOptions) -> None:
    """Train the genotype classifier on the core training loop (resumable).

    With --reads/--ref/--truth-vcf/--confident-bed it runs the benchmark's recipe: the
    reads at several depths (--downsample), --replicates simulated replicates of the
    regions, the last --val-fraction held out for validation (the best epoch is kept)
    and allele-fraction augmentation (--af-augment). With --examples it trains on
    labelled make-examples folders.
    """

    res = train_variants(cfg, overwrite=opts.overwrite)
    last = res["history"][-1] if res["history"] else {}
    typer.echo(f"model: {res['model']}  steps: {res['steps']}  "
               f"loss: {last.get('loss', float('nan')):.4f}  "
               f"accuracy: {last.get('accuracy', float('nan')):.4f}")
    if res["recipe"] is not None:
        typer.echo(f"labels hom-ref/het/hom-alt: {res['class_counts']} (training), "
                   f"{res['recipe'].val_labels} (validation)")


@config_command(app, CallConfig, name="call-variants",
                shown=["examples", "model", "out", "batch-size"])
def call_variants(cfg: CallConfig, opts: RunOptions) -> None:
    """Genotype probabilities for every example (batched inference, ensembles averaged)."""

    res = run_call_variants(cfg, overwrite=opts.overwrite)
    typer.echo(f"{res['examples']} examples, {res['examples_per_second']:.1f} examples/s")


@config_command(app, PostprocessConfig, name="postprocess-variants",
                shown=["calls", "ref", "out", "gvcf-out", "examples", "haploid-contigs",
                       "min-qual", "multi-allelic-qual-filter", "bam-out", "reads"])
def postprocess(cfg: PostprocessConfig, opts: RunOptions) -> None:
    """Genotypes, GQ/QUAL/PL and FILTER into a bgzipped, indexed VCF 4.2 (and gVCF)."""

    res = run_postprocess(cfg, overwrite=opts.overwrite, command=_cmd())
    typer.echo("  ".join(f"{k}: {v}" for k, v in sorted(res.items())))
    typer.echo(f"vcf: {cfg.out}")
    if cfg.bam_out:
        typer.echo(f"bam: {cfg.bam_out}")


@config_command(app, RunConfig, name="run",
                shown=["reads", "ref", "model", "out", "regions", "shards", "scheduler", "gvcf",
                       "haploid-contigs", "bam-out"])
def run(cfg: RunConfig, opts: RunOptions) -> None:
    """make-examples -> call-variants -> postprocess-variants into OUT/calls.vcf.gz.

    --bam-out also writes the reads around each called variant as an indexed BAM: open it
    with calls.vcf.gz in IGV to check a call.
    """

    res = run_pipeline(cfg, command=_cmd(), overwrite=opts.overwrite)
    typer.echo(f"{res['candidates']} candidates; {res['filters']}")
    typer.echo(f"vcf: {res['vcf']}")
    if res["bam"]:
        typer.echo(f"bam: {res['bam']}")


@config_command(app, EvaluateConfig, name="evaluate",
                shown=["calls", "truth", "ref", "confident-bed", "out"])
def evaluate(cfg: EvaluateConfig, opts: RunOptions) -> None:
    """hap.py-style SNP/INDEL precision, recall and F1 after normalisation."""

    rows = run_evaluate(cfg, overwrite=opts.overwrite)
    typer.echo(format_table(rows))
    typer.echo(f"summary: {cfg.out}")


@config_command(app, DemoConfig, name="demo", shown=["out", "quick"])
def demo(cfg: DemoConfig, opts: RunOptions) -> None:
    """Simulate, train briefly, call, evaluate; compare with bcftools call."""

    res = run_variants_demo(cfg, overwrite=opts.overwrite)
    typer.echo(res.text)


@config_command(app, DistillConfig, name="distill",
                shown=["teacher", "temperature", "alpha", "examples", "val-examples", "out",
                       "width", "blocks", "epochs", "batch-size"])
def distill_cmd(cfg: DistillConfig, opts: RunOptions) -> None:
    """Train a smaller student on a teacher's softened genotype probabilities (Hinton et al.).

    The teacher (a model, an ensemble folder or comma-separated models) is run once over
    --examples into OUT/teacher-cache (resumable); the student is a normal model folder
    that call-variants and run take as --model.
    """

    res = distill(cfg, progress=opts.progress != "off", overwrite=opts.overwrite)
    d = res["distillation"]
    typer.echo(f"model: {res['model']}  steps: {res['steps']}  examples: {res['examples']}  "
               f"teacher: {len(d['teacher'])} model(s), T={d['temperature']:g}, "
               f"alpha={d['alpha']:g}")


@config_command(app, VariantsExportConfig, name="export", arguments=["model"],
                shown=["out", "quantize", "inputs", "samples", "check", "batch-size",
                       "tolerance", "seed"])
def export(cfg: VariantsExportConfig, opts: RunOptions) -> None:
    """Export a genotype model to LiteRT (.tflite): int8, float16 or float32.

    call-variants and run take the file as --model. The export is checked on held-out
    pileups and refused when more than --tolerance of their genotypes change.
    """
    from deepsci.core.compress import run_export

    run_export(cfg, EXPORT, overwrite=opts.overwrite, say=typer.echo)
