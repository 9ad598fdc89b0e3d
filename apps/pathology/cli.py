"""``deepsci pathology``: metastasis detection in whole-slide images (Camelyon16-style).

Thin layer: each command is built from its stage's config dataclass
(:func:`deepsci.core.cli.config_command`), so every default is declared once,
there, and ``--config <out>/run.json`` re-runs a recorded run. TensorFlow is
imported inside the stages, so ``--help`` stays fast.
"""
from __future__ import annotations

import typer

from deepsci.core.cli import RunOptions, config_command
from deepsci.core.compress import ExportConfig

from .compress import DistillConfig
from .detect import DetectConfig
from .evaluate import EvaluateConfig
from .heatmap import HeatmapConfig
from .synth import SynthSetConfig
from .tissue import TissueRunConfig
from .train import PathologyTrainConfig

app = typer.Typer(
    no_args_is_help=True,
    help="Breast-cancer metastases in lymph-node whole-slide images: tissue detection, "
         "multi-scale Inception patch classifier, heatmaps, lesion detection, FROC and slide AUC.",
)


@config_command(app, SynthSetConfig, name="synth", arguments=["out"],
                shown=["tumour", "normal", "size", "mpp", "lesions", "seed", "prefix"])
def synth(cfg: SynthSetConfig, opts: RunOptions) -> None:
    """Write synthetic H&E slides (pyramidal TIFF), their ASAP XML and tumour masks."""
    from .synth import run_synth

    slides = run_synth(cfg, overwrite=opts.overwrite)
    typer.echo(f"wrote {len(slides)} slides to {cfg.out} ({cfg.tumour} with metastases, {cfg.normal} "
               f"normal) at {cfg.mpp:g} um/px ({10 / cfg.mpp:g}x): train with --magnifications "
               f"{10 / cfg.mpp:g}")


@config_command(app, TissueRunConfig, name="tissue", arguments=["slide"], shown=["out", "resolution", "mpp"])
def tissue(cfg: TissueRunConfig, opts: RunOptions) -> None:
    """Detect tissue (Otsu on saturation) and write the mask as a PNG."""
    from .tissue import run_tissue

    mask, down = run_tissue(cfg, overwrite=opts.overwrite)
    typer.echo(f"tissue {mask.mean():.1%} of the slide; mask {mask.shape[1]}x{mask.shape[0]} "
               f"at {down:.1f} level-0 px per pixel -> {cfg.out}")


@config_command(app, PathologyTrainConfig, name="train", exclude=["train.progress"],
                shown=["slides", "out", "val-slides", "magnifications", "patch-size", "variant", "epochs",
                       "batch-size", "lr", "seed"])
def train(cfg: PathologyTrainConfig, opts: RunOptions) -> None:
    """Train the Inception patch classifier on slides + annotations (resumes in --out)."""
    from pathlib import Path

    from .train import MODEL_NAME, run_train

    result = run_train(cfg, overwrite=opts.overwrite)
    last = result.history[-1] if result.history else {}
    # The history's auc/val_auc are Keras' 200-threshold approximation, not the exact patch
    # AUC: only the losses are printed.
    shown = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k in ("loss", "val_loss"))
    typer.echo(f"trained {result.steps} steps: {shown} -> {Path(cfg.out) / MODEL_NAME}")


@config_command(app, HeatmapConfig, name="heatmap",
                shown=["model", "slides", "out", "stride", "batch-size", "tta", "contours",
                       "scheduler", "workers", "skip-invalid"])
def heatmap(cfg: HeatmapConfig, opts: RunOptions) -> None:
    """Sliding-window tumour-probability heatmaps over tissue (slides in parallel, resumable)."""
    from .heatmap import run_heatmaps

    results = run_heatmaps(cfg, overwrite=opts.overwrite)
    tiles = sum(r["tiles"] for r in results.values())
    contours = f" and contours at {','.join(f'{v:g}' for v in cfg.contours)}" if cfg.contours else ""
    typer.echo(f"{len(results)} heatmaps ({tiles} tissue tiles){contours} -> {cfg.out}")


@config_command(app, DetectConfig, name="detect", shown=["heatmaps", "out", "threshold", "radius", "skip-invalid"])
def detect(cfg: DetectConfig, opts: RunOptions) -> None:
    """Slide scores (heatmap maximum) and lesion points by NMS: Camelyon16 CSVs and QuPath GeoJSON."""
    from .detect import run_detect

    scores = run_detect(cfg, overwrite=opts.overwrite)
    typer.echo(f"{len(scores)} slides -> {cfg.out}/<slide>.csv (+ .detections.geojson for QuPath) and "
               f"{cfg.out}/slides.csv")


@config_command(app, EvaluateConfig, name="evaluate",
                shown=["detections", "truth", "out", "slides", "reference", "pixel-size", "level", "mpp"])
def evaluate(cfg: EvaluateConfig, opts: RunOptions) -> None:
    """Camelyon16 FROC (official rules) and slide-level ROC AUC, with plots."""
    from .evaluate import pixel_size_text, run_evaluate

    m = run_evaluate(cfg, overwrite=opts.overwrite)
    auc = f", slide AUC {m['slide_auc']:.4f}" if "slide_auc" in m else ""
    typer.echo(f"FROC {m['froc']:.4f} over {m['slides']} slides ({m['lesions']} lesions; "
               f"{pixel_size_text(m)}){auc} -> {cfg.out}")


@config_command(app, ExportConfig, name="export", arguments=["model"],
                shown=["out", "quantize", "inputs", "samples", "check", "batch-size", "tolerance", "seed"])
def export(cfg: ExportConfig, opts: RunOptions) -> None:
    """Export a patch classifier to LiteRT (.tflite, int8 | float16 | none) for `heatmap`.

    --inputs: a slide or a folder of slides (annotations beside them), whose patches
    calibrate int8 and check the export; default: a synthetic slide pair (fixed seed).
    The export is refused when the mean tumour-probability change on the held-out
    patches exceeds --tolerance (default 0.02).
    """
    from deepsci.core.compress import run_export

    from .compress import EXPORT

    def say(line: str) -> None:
        # the demo-model warning concerns real slides; the default inputs are synthetic
        if not (line.startswith("warning:") and cfg.inputs is None):
            typer.echo(line, err=line.startswith(("warning:", "model:")))

    run_export(cfg.validate(), EXPORT, overwrite=opts.overwrite, say=say)


@config_command(app, DistillConfig, name="distill", exclude=["train.progress"],
                shown=["teacher", "temperature", "alpha", "slides", "out", "val-slides", "width", "patches",
                       "epochs", "seed"])
def distill(cfg: DistillConfig, opts: RunOptions) -> None:
    """Distil a teacher (one model or an ensemble) into a small Inception student (resumes in --out)."""
    from .compress import distill as run_distill

    result = run_distill(cfg, overwrite=opts.overwrite, say=typer.echo)
    last = result.history[-1] if result.history else {}
    shown = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k in ("loss", "val_loss"))
    typer.echo(f"trained {result.steps} steps: {shown}")
