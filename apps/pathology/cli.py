"""``deepsci pathology``: metastasis detection in whole-slide images (Camelyon16-style).

Thin layer: parse options, build one config, call the stage. TensorFlow is
imported inside the stages, so ``--help`` stays fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="Breast-cancer metastases in lymph-node whole-slide images: tissue detection, "
         "multi-scale Inception patch classifier, heatmaps, lesion detection, FROC and slide AUC.",
)

Mpp = Annotated[float | None, typer.Option(
    "--mpp", help="Microns per pixel at level 0, for slides that do not record it.")]


def _mags(text: str) -> tuple[float, ...]:
    from deepsci.core.errors import ConfigError

    try:
        mags = tuple(float(m.strip().rstrip("xX")) for m in text.split(",") if m.strip())
    except ValueError:
        raise ConfigError(f"expected magnifications like '40' or '40,20,10', found {text!r}") from None
    if not mags:
        raise ConfigError(f"expected at least one magnification, found {text!r}")
    return mags


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder (slides, ASAP XML, *_Mask.tif).")],
    tumour: Annotated[int, typer.Option("--tumour", help="Slides with metastases.")] = 4,
    normal: Annotated[int, typer.Option(help="Slides without metastases.")] = 4,
    size: Annotated[int, typer.Option(help="Level-0 width and height in pixels.")] = 2048,
    mpp: Annotated[float, typer.Option(help="Microns per pixel at level 0 (0.25 = 40x).")] = 0.5,
    lesions: Annotated[int, typer.Option(help="Metastases per tumour slide.")] = 1,
    seed: int = 0,
    prefix: Annotated[str, typer.Option(help="Prefix of the slide names.")] = "",
):
    """Write synthetic H&E slides (pyramidal TIFF), their ASAP XML and tumour masks."""
    from .synth import SynthConfig, make_slides

    cfg = SynthConfig(width=size, height=size, mpp=mpp, n_tumours=lesions)
    slides = make_slides(out, n_tumour=tumour, n_normal=normal, seed=seed, config=cfg, prefix=prefix)
    typer.echo(f"wrote {len(slides)} slides to {out} ({tumour} with metastases, {normal} normal) at "
               f"{mpp:g} um/px ({10 / mpp:g}x): train with --magnifications {10 / mpp:g}")


@app.command()
def tissue(
    slide: Annotated[Path, typer.Argument(help="A whole-slide image.")],
    out: Annotated[Path, typer.Option("--out", help="PNG of the tissue mask.")],
    resolution: Annotated[float, typer.Option(help="Mask microns per pixel.")] = 8.0,
    mpp: Mpp = None,
):
    """Detect tissue (Otsu on saturation) and write the mask as a PNG."""
    import numpy as np
    from PIL import Image

    from deepsci.core.io import atomic_path

    from .io import Slide
    from .tissue import TissueConfig, slide_tissue

    with Slide(slide, mpp=mpp) as s:
        mask, down = slide_tissue(s, TissueConfig(mpp=resolution))
    with atomic_path(out) as tmp:
        Image.fromarray((mask * 255).astype(np.uint8)).save(tmp, format="PNG")
    typer.echo(f"tissue {mask.mean():.1%} of the slide; mask {mask.shape[1]}x{mask.shape[0]} "
               f"at {down:.1f} level-0 px per pixel -> {out}")


@app.command()
def train(
    slides: Annotated[Path, typer.Option("--slides", help="Folder of training slides.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (model.keras, checkpoints).")],
    annotations: Annotated[Path | None, typer.Option(
        help="Folder of <slide>.xml (ASAP) / .geojson (QuPath); default: --slides.")] = None,
    val_slides: Annotated[Path | None, typer.Option(help="Folder of validation slides.")] = None,
    magnifications: Annotated[str, typer.Option(
        help="Objective powers, finest first: '40' (single scale) or '40,20,10' (towers).")] = "40",
    patch_size: Annotated[int, typer.Option(help="Patch side in pixels at every scale.")] = 96,
    center_size: Annotated[int, typer.Option(help="Label centre region (pixels, finest scale).")] = 32,
    variant: Annotated[str, typer.Option(help="Inception variant: small or v3.")] = "small",
    width: Annotated[int, typer.Option(help="Filters per branch (small Inception).")] = 16,
    epochs: int = 5,
    batch_size: int = 32,
    patches_per_epoch: int = 2048,
    val_patches: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
    strategy: Annotated[str, typer.Option(help="auto|cpu|gpu|mirrored|...")] = "auto",
    cache: Annotated[Path | None, typer.Option(
        help="Cache a fixed pool of raw patches here (read once; epochs differ by augmentation).")] = None,
    mpp: Mpp = None,
):
    """Train the Inception patch classifier on slides + annotations (resumes in --out)."""
    from deepsci.core.training import TrainConfig

    from .patches import PatchConfig
    from .train import PathologyTrainConfig
    from .train import train as run

    cfg = PathologyTrainConfig(
        slides=str(slides), out_dir=str(out), annotations=str(annotations) if annotations else None,
        val_slides=str(val_slides) if val_slides else None,
        patch=PatchConfig(patch_size=patch_size, magnifications=_mags(magnifications),
                          center_size=center_size),
        variant=variant, width=width, patches_per_epoch=patches_per_epoch, val_patches=val_patches,
        mpp=mpp, strategy=strategy, cache_dir=str(cache) if cache else None,
        train=TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                          monitor="val_auc" if val_patches else "loss",
                          mode="max" if val_patches else "min"),
    ).validate()
    result = run(cfg)
    last = result.history[-1] if result.history else {}
    shown = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k in ("loss", "auc", "val_loss", "val_auc"))
    typer.echo(f"trained {result.steps} steps: {shown} -> {out / 'model.keras'}")


@app.command()
def heatmap(
    model: Annotated[Path, typer.Option("--model", help="model.keras from `train`.")],
    slides: Annotated[Path, typer.Option("--slides", help="A slide or a folder of slides.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    stride: Annotated[int | None, typer.Option(
        help="Window step in pixels at the finest scale (default: the centre region).")] = None,
    batch_size: Annotated[int, typer.Option(help="Tiles per inference batch.")] = 128,
    tta: Annotated[bool, typer.Option(help="Average the 8 orientations.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="tiff, zarr or both.")] = "tiff",
    scheduler: Annotated[str, typer.Option(
        help="local (a Dask cluster started for this run), inline, or tcp://host:port: a running "
             "cluster (`dask scheduler`; `dask worker ADDRESS --nworkers N --nthreads 1`), whose "
             "workers keep the loaded model, so runs after the first start at once.")] = "local",
    workers: Annotated[int | None, typer.Option(help="Local Dask workers (default: min(slides, cores)).")] = None,
    threads: Annotated[int | None, typer.Option(
        help="TensorFlow threads per worker (default: each machine's cores split among its Dask threads).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Recompute slides finished before.")] = False,
    mpp: Mpp = None,
):
    """Sliding-window tumour-probability heatmaps over tissue (slides in parallel, resumable)."""
    from .heatmap import HeatmapConfig, run_heatmaps

    cfg = HeatmapConfig(model=str(model), slides=str(slides), out_dir=str(out), stride=stride,
                        batch_size=batch_size, tta=tta, format=fmt, scheduler=scheduler,
                        workers=workers, threads=threads, overwrite=overwrite, mpp=mpp).validate()
    results = run_heatmaps(cfg)
    tiles = sum(r["tiles"] for r in results.values())
    typer.echo(f"{len(results)} heatmaps ({tiles} tissue tiles) -> {out}")


@app.command()
def detect(
    heatmaps: Annotated[Path, typer.Option("--heatmaps", help="Folder (or file) of heatmaps.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for <slide>.csv and slides.csv.")],
    threshold: Annotated[float, typer.Option(help="Lowest reported lesion probability.")] = 0.5,
    radius: Annotated[float, typer.Option(help="NMS radius in microns.")] = 100.0,
):
    """Slide scores (heatmap maximum) and lesion points by NMS: Camelyon16 submission CSVs."""
    from .detect import DetectConfig
    from .detect import detect as run

    scores = run(DetectConfig(heatmaps=str(heatmaps), out_dir=str(out), threshold=threshold,
                              radius_um=radius))
    typer.echo(f"{len(scores)} slides -> {out}/<slide>.csv and {out}/slides.csv")


@app.command()
def evaluate(
    detections: Annotated[Path, typer.Option("--detections", help="Folder from `detect`.")],
    truth: Annotated[Path, typer.Option(
        "--truth", help="Folder of <slide>.xml/.geojson or <slide>_Mask.tif (absent = normal).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json and plots.")],
    slides: Annotated[Path | None, typer.Option(help="Folder of the slides (default: --truth).")] = None,
    level: Annotated[int, typer.Option(help="Evaluation-mask level (Camelyon16: 5).")] = 5,
    mpp: Mpp = None,
):
    """Camelyon16 FROC (official rules) and slide-level ROC AUC, with plots."""
    from .evaluate import EvaluateConfig
    from .evaluate import evaluate as run

    m = run(EvaluateConfig(detections=str(detections), truth=str(truth), out_dir=str(out),
                           slides=str(slides) if slides else None, level=level, mpp=mpp))
    auc = f", slide AUC {m['slide_auc']:.4f}" if "slide_auc" in m else ""
    typer.echo(f"FROC {m['froc']:.4f} over {m['slides']} slides ({m['lesions']} lesions){auc} -> {out}")
