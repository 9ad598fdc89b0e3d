"""``deepsci connectomics``: neuron segmentation of 3-D EM with flood-filling networks.

Thin layer: every command but ``train`` is built by :func:`deepsci.core.cli.config_command`
from its config dataclass (:mod:`.config`, :mod:`.synth`), so each default is declared
once there, and ``--config run.json`` re-runs a recorded run. ``train`` is written out
by hand with the same output group and ``--config``: its config holds the core's
``TrainConfig``, whose module imports TensorFlow, and ``deepsci --help`` must not.
Volumes are given as ``PATH[:INNER]``: ``vol.zarr[:array]``, ``file.h5:dataset``,
``vol.n5:dataset``, a folder of PNG/TIFF z-slices or a TIFF stack; axes are (z, y, x).
Tuples are comma-separated: ``--block-size 64,128,128``.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from deepsci.core.cli import RunOptions, config_command
from deepsci.core.errors import ConfigError

from .config import BaselineRun, EvaluateRun, SegmentRun, TrainAggloRun
from .import_ffn import ImportFFNConfig
from .synth import SynthRun

app = typer.Typer(
    no_args_is_help=True,
    help="Neuron segmentation of 3-D electron microscopy with flood-filling networks "
         "(train, segment with blockwise stitching, learned agglomeration, watershed baseline, "
         "VI/Rand/ERL evaluation).",
)


@config_command(app, SynthRun, name="synth", arguments=["out"],
                shown=["shape", "neurites", "radius", "gap", "label-membranes", "seed", "voxel-size"])
def synth(cfg: SynthRun, opts: RunOptions) -> None:
    """Write a synthetic EM-like volume with its ground-truth labels."""
    from .synth import run_synth

    typer.echo(json.dumps(run_synth(cfg, overwrite=opts.overwrite)))


@config_command(app, SegmentRun, name="segment",
                shown=["model", "image", "out", "preset", "agglo-classifier", "block-size",
                       "boundary-threshold", "scheduler", "workers", "voxel-size"])
def segment(cfg: SegmentRun, opts: RunOptions) -> None:
    """Segment a volume block by block and stitch (rerun to resume).

    Without --model: the shipped default FFN and its pair classifier (--preset learned).
    Options left at their default take the --preset's value.
    """
    from .segment import run_segment

    typer.echo(json.dumps(run_segment(cfg, overwrite=opts.overwrite)))


@config_command(app, TrainAggloRun, name="train-agglo",
                shown=["image", "labels", "out", "model", "seg", "preset", "kind", "agglo-min-contact",
                       "agglo-radius", "voxel-size"])
def train_agglo(cfg: TrainAggloRun, opts: RunOptions) -> None:
    """Fit the pair classifier of `segment --preset learned` on a labelled volume."""
    from .train_agglo import run_train_agglo

    typer.echo(json.dumps(run_train_agglo(cfg, overwrite=opts.overwrite)))


@config_command(app, BaselineRun, name="baseline",
                shown=["image", "out", "sigma", "threshold", "min-distance", "min-size", "markers", "voxel-size"])
def baseline(cfg: BaselineRun, opts: RunOptions) -> None:
    """Watershed baseline: boundary map -> seeded watershed."""
    from .baseline import run_baseline

    typer.echo(json.dumps(run_baseline(cfg, overwrite=opts.overwrite)))


@config_command(app, EvaluateRun, name="evaluate",
                shown=["labels", "seg", "out", "image", "baseline", "min-overlap", "voxel-size"])
def evaluate(cfg: EvaluateRun, opts: RunOptions) -> None:
    """VI split/merge, adapted Rand error, ERL, merges and splits (+ baseline and figure)."""
    from .scoring import run_evaluation

    run_evaluation(cfg, overwrite=opts.overwrite)
    typer.echo((Path(cfg.out) / "scores.md").read_text())


@config_command(app, ImportFFNConfig, name="import-ffn", arguments=["checkpoint"],
                shown=["checkpoint", "out", "fov_size", "deltas", "voxel_size_nm", "image_mean", "image_stddev",
                       "scope", "training_data", "licence"])
def import_ffn(cfg: ImportFFNConfig) -> None:
    """Import a google/ffn convstack_3d TF checkpoint as a deepsci FFN (model.keras + card)."""
    from .import_ffn import import_ffn as run_import

    typer.echo(json.dumps(run_import(cfg)))


def _compress_configs():
    # compress.py imports only the core's TensorFlow-free configs at module level.
    from .compress import DistillConfig, ExportRun

    return ExportRun, DistillConfig


_ExportRun, _DistillConfig = _compress_configs()


@config_command(app, _ExportRun, name="export", arguments=["model"],
                shown=["model", "out", "quantize", "inputs", "samples", "check", "batch-size", "tolerance"])
def export(cfg, opts: RunOptions) -> None:
    """Export an FFN to LiteRT (.tflite, int8 or float16) for `segment --model`, checked on held-out FOVs."""
    import sys

    from .compress import export as run_export

    report = run_export(cfg, overwrite=opts.overwrite, say=lambda line: print(line, file=sys.stderr))
    typer.echo(json.dumps(report))


@config_command(app, _DistillConfig, name="distill",
                shown=["teacher", "out", "image", "labels", "unlabelled", "temperature", "alpha", "depth",
                       "features", "steps-per-epoch"])
def distill(cfg, opts: RunOptions) -> None:
    """Distil a teacher FFN ensemble into a smaller FFN (a model folder like `train`'s).

    Soft targets are the teacher's flood fills of each training region; --unlabelled EM volumes
    (no ground truth) add regions learned from the teacher alone.
    """
    from .compress import distill as run_distill

    typer.echo(json.dumps(run_distill(cfg, overwrite=opts.overwrite)))


def _tuple(name: str, text: str | None, cast=int) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(cast(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise ConfigError(f"expected --{name} as comma-separated numbers, found {text!r}") from None


def _given(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def _hidden(text: str):
    return typer.Option(help=text, hidden=True)


_TRAIN_HIDDEN = ("--deltas, --depth, --features, --moves, --move-policy, --stride, --lr-schedule, --seed, "
                 "--init-model, --tensorboard/--no-tensorboard, --voxel-size, --precision, --xla/--no-xla")


@app.command(epilog=f"More options (rarely needed; also settable in a --config run.json): {_TRAIN_HIDDEN}. "
                    "Unset options: FFNTrainConfig's defaults (or the --config run's).")
def train(
    image: Annotated[str | None, typer.Option(help="EM volume PATH[:INNER].")] = None,
    labels: Annotated[str | None, typer.Option(help="Its dense ground truth PATH[:INNER].")] = None,
    out: Annotated[str | None, typer.Option(help="Output folder (a rerun resumes from its checkpoints).")] = None,
    preset: Annotated[str | None, typer.Option(help="Model size: tiny|cpu|google.")] = None,
    fov_size: Annotated[str | None, typer.Option(help="FOV z,y,x (odd); overrides the preset.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    steps_per_epoch: Annotated[int | None, typer.Option(help="Steps per epoch.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate (Adam).")] = None,
    strategy: Annotated[str | None, typer.Option(help="auto|cpu|gpu|gpu:N|mirrored|tpu|multi-worker.")] = None,
    deltas: Annotated[str | None, _hidden("FOV step z,y,x.")] = None,
    depth: Annotated[int | None, _hidden("Convolution pairs.")] = None,
    features: Annotated[int | None, _hidden("Channels per convolution.")] = None,
    moves: Annotated[int | None, _hidden("FFN steps per example (FOV movement with feedback).")] = None,
    move_policy: Annotated[str | None, _hidden("fixed|face_max")] = None,
    stride: Annotated[int | None, _hidden("Coordinate subsampling grid step.")] = None,
    lr_schedule: Annotated[str | None, _hidden("constant|cosine|exponential|step")] = None,
    seed: Annotated[int | None, _hidden("Seed of weights and data order.")] = None,
    init_model: Annotated[str | None, _hidden("Start from this model.keras's weights (same shape).")] = None,
    tensorboard: Annotated[bool | None, _hidden("Write TensorBoard scalars.")] = None,
    voxel_size: Annotated[str | None, _hidden("Voxel size z,y,x in nm; overrides the files' metadata.")] = None,
    precision: Annotated[str | None, _hidden("float32|mixed|mixed_float16|mixed_bfloat16")] = None,
    xla: Annotated[bool | None, _hidden("Compile the train step with XLA.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Re-run a recorded run: its run.json; options given here override it.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a finished run's outputs.")] = False,
    progress: Annotated[str, typer.Option("--progress", help="auto (on a terminal) | on | off.")] = "auto",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library and TensorFlow logs.")] = False,
):
    """Train an FFN on a labelled volume (resumes from checkpoints in --out)."""
    from deepsci.core.runs import config_from_run

    from .train import TrainRun, run_train

    if progress not in ("auto", "on", "off"):
        raise ConfigError(f"expected --progress auto|on|off, found {progress!r}")
    base = config_from_run(config, TrainRun) if config else TrainRun(image="", labels="", out="")
    ffn = replace(base.ffn, **_given(preset=preset, fov_size=_tuple("fov-size", fov_size), depth=depth,
                                     deltas=_tuple("deltas", deltas), features=features, moves=moves,
                                     move_policy=move_policy, stride=stride, init_model=init_model))
    ffn = replace(ffn, train=replace(ffn.train, **_given(epochs=epochs, steps_per_epoch=steps_per_epoch,
                                                         batch_size=batch_size, learning_rate=lr, seed=seed,
                                                         lr_schedule=lr_schedule, tensorboard=tensorboard)))
    accel = replace(base.accel, **_given(strategy=strategy, precision=precision, xla=xla))
    cfg = replace(base, **_given(image=image, labels=labels, out=out,
                                 voxel_size=_tuple("voxel-size", voxel_size, float)), ffn=ffn, accel=accel)
    os.environ["DEEPSCI_PROGRESS"] = {"auto": os.environ.get("DEEPSCI_PROGRESS", "auto"), "on": "1",
                                      "off": "0"}[progress]
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    typer.echo(json.dumps(run_train(cfg.validate(), overwrite=overwrite)))
