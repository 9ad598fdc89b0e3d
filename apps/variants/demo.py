"""``deepsci variants demo``: simulate, train briefly, call, score — next to ``bcftools call``."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from deepsci.core.report import DemoResult, DemoRow, find_viewer_outputs
from deepsci.core.runs import RunDir

from . import io as vio
from .baselines import bcftools_call
from .evaluate import EvaluateConfig, evaluate_calls
from .make_examples import example_files, parse_example
from .pileup import CHANNEL_NAMES
from .pipeline import RunConfig, run_pipeline
from .recipe import RecipeConfig
from .synth import SimulateConfig, simulate
from .train import TrainVariantsConfig, train_variants

#: The files for the field's viewer that the demo report links (those the run wrote).
VIEWERS = (("**/calls.vcf.gz", "IGV"), ("**/calls.g.vcf.gz", "IGV"), ("calls/*.bam", "IGV"),
           ("sim/*.bam", "IGV"))

__all__ = ["DemoConfig", "run_demo", "run_variants_demo", "plot_pileup"]


@dataclass
class DemoConfig:
    """Options of ``deepsci variants demo``.

    Attributes
    ----------
    out_dir : str
        Output folder.
    quick : bool
        Seconds-scale settings (a 30 kb genome, one short epoch).
    train : bool
        Train a model first instead of using the shipped one.
    """

    out_dir: str = field(default="variants-demo", metadata={"cli": "out"})
    quick: bool = False
    train: bool = False

    def validate(self) -> DemoConfig:
        return self


def plot_pileup(image, path, title: str = "") -> Path:
    """Save the 7 channels of one pileup image (100, 221, 7) side by side as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CHANNEL_NAMES), figsize=(2.2 * len(CHANNEL_NAMES), 2.4))
    for k, ax in enumerate(axes):
        ax.imshow(image[:, :, k], cmap="gray", vmin=0, vmax=255, aspect="auto",
                  interpolation="nearest")
        ax.set_title(CHANNEL_NAMES[k].replace("_", " "), fontsize=7)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def _f1(rows, kind):
    for r in rows:
        if r["Filter"] == "PASS" and r["Type"] == kind:
            return float(r["METRIC.F1_Score"])
    return float("nan")


_DEMO_SEED = 2026  # never a build seed (release.py simulates with seed 0)


def _rows(rows, brow, model: str, data: str) -> list[DemoRow]:
    return [DemoRow(f"{kind} F1", _f1(rows, kind), _f1(brow, kind), "bcftools call -m",
                    model=model, data=data, tolerance=1e-3) for kind in ("SNP", "INDEL")]


def _shipped_demo(out: Path, quick: bool) -> DemoResult:
    """Call a freshly simulated genome with the shipped model, beside bcftools on the same BAM."""
    from deepsci.core.models.registry import resolve_model

    t0 = time.time()
    length = 40_000 if quick else 150_000
    # Simulated as the shipped model's training reads were (30x 2x150 bp, the same error
    # model) but on a random genome and another seed: nothing here was seen in training.
    sim = simulate(SimulateConfig(out_dir=str(out / "sim"), genome_length=length,
                                  snp_rate=1e-3, indel_rate=2e-4, coverage=30.0, seed=_DEMO_SEED))
    model = resolve_model(None, app="variants", task="genotype", say=None)
    contig, region = "chr1", f"chr1:1-{length}"
    bed = out / "test.bed"
    vio.write_bed([(contig, 200, length - 200)], bed)
    run = run_pipeline(RunConfig(reads=sim["bam"], ref=sim["ref"], model=model,
                                 out_dir=str(out / "calls"), regions=region, scheduler="inline",
                                 bam_out=str(out / "calls" / "reads.bam")),
                       command="deepsci variants demo")
    rows = evaluate_calls(EvaluateConfig(calls=run["vcf"], truth=sim["truth"], ref=sim["ref"],
                                         confident_bed=str(bed), out=str(out / "summary.csv")))
    bcf = bcftools_call(sim["bam"], sim["ref"], out / "bcftools.vcf.gz", regions=region)
    brow = evaluate_calls(EvaluateConfig(calls=str(bcf), truth=sim["truth"], ref=sim["ref"],
                                         confident_bed=str(bed), out=str(out / "bcftools_summary.csv")))
    data = f"{length // 1000} kb random genome, 30x, seed {_DEMO_SEED}"
    demo_rows = _rows(rows, brow, Path(model).parent.name, data)
    metrics = {"SNP F1 (deepsci)": _f1(rows, "SNP"), "INDEL F1 (deepsci)": _f1(rows, "INDEL"),
               "SNP F1 (bcftools)": _f1(brow, "SNP"), "INDEL F1 (bcftools)": _f1(brow, "INDEL"),
               "candidates": run["candidates"], "seconds": round(time.time() - t0, 1)}
    text = (f"Simulated {length} bp (seed {_DEMO_SEED}), {sim['n_snps']} SNPs + {sim['n_indels']} "
            f"indels; called with the shipped model {Path(model).parent.name} and with bcftools.")
    return DemoResult(app="variants", title="Germline variant calling from pileup images",
                      metrics=metrics, text=text, rows=demo_rows)


def run_demo(out_dir: Path, *, quick: bool = False, train: bool = False) -> DemoResult:
    """Score the shipped caller beside bcftools on a fresh simulation (``train``: train one first).

    Without ``train`` the shipped default model calls a genome simulated with a seed no
    build used. With ``train``: simulate a small genome, train a small model, call the
    held-out half, evaluate.

    ``quick`` uses a 30 kb genome and one short training epoch (about a minute); the full
    demo a 200 kb genome, the training half at three read depths and 8 epochs (minutes on
    2 cores).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not train:
        res = _shipped_demo(out, quick)
        res.viewers = find_viewer_outputs(out, VIEWERS)
        return res
    length = 30_000 if quick else 200_000
    t0 = time.time()
    sim = simulate(SimulateConfig(out_dir=str(out / "sim"), genome_length=length,
                                  snp_rate=2e-3, indel_rate=5e-4,
                                  coverage=20.0 if quick else 30.0, seed=1))
    contig = "chr1"
    mid = length // 2
    # The product's recipe without simulated replicates or a validation hold-out; the full
    # demo adds DeepVariant-style down-sampled copies of the training half.
    recipe = RecipeConfig(downsample=(1.0,) if quick else (1.0, 0.7, 0.5), replicates=0,
                          val_fraction=0.0)
    tr = train_variants(TrainVariantsConfig(
        reads=sim["bam"], ref=sim["ref"], truth_vcf=sim["truth"], confident_bed=sim["bed"],
        regions=f"{contig}:1-{mid}", recipe=recipe, scheduler="inline",
        out_dir=str(out / "model"), epochs=1 if quick else 8, batch_size=8 if quick else 32,
        width=8 if quick else 16, af_augment=0.0, af_augment_min_vaf=0.0), progress=False)
    test_bed = out / "test.bed"
    vio.write_bed([(contig, mid, length - 200)], test_bed)
    run = run_pipeline(RunConfig(reads=sim["bam"], ref=sim["ref"], model=tr["model"],
                                 out_dir=str(out / "calls"), regions=f"{contig}:{mid + 1}-{length}",
                                 scheduler="inline"), command="deepsci variants demo")
    rows = evaluate_calls(EvaluateConfig(calls=run["vcf"], truth=sim["truth"], ref=sim["ref"],
                                         confident_bed=str(test_bed),
                                         out=str(out / "summary.csv")))
    bcf = bcftools_call(sim["bam"], sim["ref"], out / "bcftools.vcf.gz",
                        regions=f"{contig}:{mid + 1}-{length}")
    brow = evaluate_calls(EvaluateConfig(calls=str(bcf), truth=sim["truth"], ref=sim["ref"],
                                         confident_bed=str(test_bed),
                                         out=str(out / "bcftools_summary.csv")))
    figures = []
    files = example_files(out / "calls" / "examples")
    import tensorflow as tf
    for raw in tf.data.TFRecordDataset([str(f) for f in files], compression_type="GZIP").take(1):
        ex = parse_example(raw.numpy())
        figures.append(plot_pileup(ex["image"], out / "pileup.png",
                                   f"{ex['contig']}:{ex['pos'] + 1} {ex['ref']}>"
                                   f"{','.join(ex['alts'])}"))
    metrics = {"SNP F1 (deepsci)": _f1(rows, "SNP"), "INDEL F1 (deepsci)": _f1(rows, "INDEL"),
               "SNP F1 (bcftools)": _f1(brow, "SNP"), "INDEL F1 (bcftools)": _f1(brow, "INDEL"),
               "candidates": run["candidates"], "seconds": round(time.time() - t0, 1)}
    text = (f"Simulated {length} bp, {sim['n_snps']} SNPs + {sim['n_indels']} indels; trained "
            f"on the first half ({'1 epoch, tiny model' if quick else '8 epochs'}), called the "
            f"second half.\n" + "\n".join(f"{k}: {v:.4f}" if isinstance(v, float) else
                                          f"{k}: {v}" for k, v in metrics.items()))
    return DemoResult(app="variants", title="Germline variant calling from pileup images",
                      metrics=metrics, figures=figures, text=text,
                      rows=_rows(rows, brow, "trained by the demo", f"{length // 1000} kb random genome"),
                      viewers=find_viewer_outputs(out, VIEWERS))


def run_variants_demo(config: DemoConfig, *, overwrite: bool = False) -> DemoResult:
    """``deepsci variants demo``: :func:`run_demo` with its ``run.json``."""
    with RunDir(config.out_dir, command="variants demo", config=config,
                overwrite=overwrite) as run:
        res = run_demo(run.path, quick=config.quick, train=config.train)
        run.record(**res.metrics)
    return res
