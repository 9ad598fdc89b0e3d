"""``deepsci connectomics``: neuron segmentation of 3-D EM with flood-filling networks.

Thin layer: parse options, build one config, call the stage. TensorFlow is
imported inside the stages, so ``--help`` stays fast. Volumes are given as
``PATH[:INNER]``: ``vol.zarr[:array]``, ``file.h5:dataset``, ``vol.n5:dataset``,
a folder of PNG/TIFF z-slices or a TIFF stack; axes are (z, y, x).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="Neuron segmentation of 3-D electron microscopy with flood-filling networks "
         "(train, segment with blockwise stitching, watershed baseline, VI/Rand/ERL evaluation).",
)

Vol = Annotated[str, typer.Option(help="Volume PATH[:INNER] (zarr, FILE.h5:DATASET, N5, slice folder, TIFF).")]
Out = Annotated[Path, typer.Option("--out", help="Output folder.")]
Triple = tuple[int, int, int]
VoxelSize = Annotated[tuple[float, float, float] | None, typer.Option(
    help="(z, y, x) voxel size in nm; overrides the file's metadata.")]


def _opt3(v):
    return None if v is None or tuple(v) == (0, 0, 0) else tuple(int(x) for x in v)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output .zarr (arrays image and labels).")],
    shape: Annotated[Triple, typer.Option(help="(z, y, x) size.")] = (48, 96, 96),
    neurites: Annotated[int, typer.Option(help="Number of tubes.")] = 12,
    radius: Annotated[tuple[float, float], typer.Option(help="Min and max tube radius (voxels).")] = (3.0, 7.0),
    seed: int = 0,
):
    """Write a synthetic EM-like volume with its ground-truth labels."""
    from .io import write_volume
    from .synth import SynthConfig, synthetic_volume

    image, labels = synthetic_volume(SynthConfig(shape=shape, n_neurites=neurites, radius=radius, seed=seed))
    write_volume(out, {"image": image, "labels": labels}, voxel_size=(1.0, 1.0, 1.0))
    typer.echo(f"wrote {out} (image {image.shape} uint8, labels with {len(set(labels.ravel()) - {0})} objects)")


@app.command()
def train(
    image: Vol, labels: Vol, out: Out,
    preset: Annotated[str, typer.Option(help="Model size: tiny|cpu|google.")] = "cpu",
    fov_size: Annotated[Triple | None, typer.Option(help="FOV (z, y, x), odd; overrides the preset.")] = None,
    deltas: Annotated[Triple | None, typer.Option(help="FOV step (z, y, x).")] = None,
    depth: Annotated[int | None, typer.Option(help="Convolution pairs.")] = None,
    features: Annotated[int | None, typer.Option(help="Channels per convolution.")] = None,
    moves: Annotated[int, typer.Option(help="FFN steps per example (FOV movement with feedback).")] = 3,
    move_policy: Annotated[str, typer.Option(help="fixed|face_max")] = "face_max",
    stride: Annotated[int, typer.Option(help="Coordinate subsampling grid step.")] = 2,
    epochs: int = 4,
    steps_per_epoch: int = 100,
    batch_size: int = 8,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate (Adam).")] = 1e-3,
    lr_schedule: Annotated[str, typer.Option(help="constant|cosine|exponential|step")] = "constant",
    seed: int = 0,
    init_model: Annotated[Path | None, typer.Option(
        help="Start from this model.keras's weights (same shape), e.g. to fine-tune with a new schedule.")] = None,
    tensorboard: bool = True,
    voxel_size: VoxelSize = None,
    strategy: Annotated[str, typer.Option(
        help="auto|cpu|gpu|gpu:N|mirrored|tpu|multi-worker (see `deepsci devices`).")] = "auto",
):
    """Train an FFN on a labelled volume (resumes from checkpoints in --out)."""
    from deepsci.core.accelerator import resolve_strategy
    from deepsci.core.training import TrainConfig

    from .io import check_same_shape, open_volume
    from .train import FFNTrainConfig, train_ffn

    cfg = FFNTrainConfig(
        preset=preset, fov_size=_opt3(fov_size), deltas=_opt3(deltas), depth=depth, features=features,
        moves=moves, move_policy=move_policy, stride=stride, init_model=str(init_model) if init_model else None,
        train=TrainConfig(epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                          learning_rate=lr, lr_schedule=lr_schedule, seed=seed, monitor="loss",
                          tensorboard=tensorboard),
    ).validate()
    img = open_volume(image, voxel_size=voxel_size)
    lab = open_volume(labels, voxel_size=voxel_size, kind="labels")
    check_same_shape(img, lab)
    result = train_ffn(img, lab, cfg, out, strategy=resolve_strategy(strategy))
    typer.echo(json.dumps(result))


@app.command()
def segment(
    model: Annotated[Path, typer.Option(help="model.keras from `train`.")],
    image: Vol, out: Out,
    block_size: Annotated[Triple | None, typer.Option(help="Block (z, y, x); default: whole volume.")] = None,
    overlap: Annotated[Triple | None, typer.Option(help="Block overlap (z, y, x); default: the FOV.")] = None,
    seed_policy: Annotated[str, typer.Option(
        help="peaks|membrane|grid; none: no flood fill, segments = --reseed-unclaimed regions; watershed: "
             "watershed supervoxels (--boundary-threshold, --peak-min-distance) for --agglo-classifier.")] = "peaks",
    peak_min_distance: Annotated[int, typer.Option(help="Minimum distance between two seeds (voxels).")] = 3,
    move_threshold: float = 0.9,
    segment_threshold: float = 0.6,
    min_segment_size: int = 100,
    boundary_threshold: Annotated[float | None, typer.Option(
        help="Boundary-map level (0-1) objects never cross; default: no limit.")] = None,
    boundary_sigma: Annotated[float, typer.Option(help="Smoothing of the boundary map (voxels).")] = 1.0,
    fill_unclaimed: Annotated[bool, typer.Option(
        help="Give unclaimed voxels to objects by a watershed of the boundary map.")] = False,
    reseed_unclaimed: Annotated[int, typer.Option(
        help="Unclaimed regions below --boundary-threshold of at least this many voxels become objects (0: off).")] = 0,
    agglomerate: Annotated[bool, typer.Option(
        help="FFN agglomeration: join touching segments when FFN runs seeded on both sides agree.")] = False,
    agglo_threshold: Annotated[float | None, typer.Option(
        help="Fraction of each segment the other side's FFN run must recover to join them "
             "(a probability with --agglo-classifier). Unset --agglo-* options: AgglomerationConfig's defaults.")] = None,
    agglo_min_contact: Annotated[int | None, typer.Option(help="Smallest contact (voxel faces) of a tested pair.")] = None,
    agglo_radius: Annotated[int | None, typer.Option(help="Half-size of the box around a contact (voxels).")] = None,
    agglo_boundary_threshold: Annotated[float | None, typer.Option(
        help="Boundary-map level the agglomeration runs never enter; default: no limit.")] = None,
    agglo_rounds: Annotated[int | None, typer.Option(
        help="Agglomeration rounds (later ones re-test grown segments).")] = None,
    agglo_classifier: Annotated[Path | None, typer.Option(
        help="Pair classifier from `train-agglo`: greedy agglomeration on its join probability.")] = None,
    batch_size: Annotated[int, typer.Option(help="FOVs per FFN call.")] = 8,
    consensus: Annotated[bool, typer.Option(help="Forward + reversed seed order, split consensus.")] = True,
    scheduler: Annotated[str, typer.Option(help="local|inline|tcp://host:port (Dask).")] = "local",
    workers: Annotated[int | None, typer.Option(help="Local Dask workers.")] = None,
    voxel_size: VoxelSize = None,
):
    """Segment a volume block by block and stitch (rerun to resume)."""
    from .inference import AgglomerationConfig, InferenceConfig
    from .segment import SegmentConfig, segment_volume

    agg = AgglomerationConfig.from_options(
        radius=agglo_radius, min_contact=agglo_min_contact, threshold=agglo_threshold,
        boundary_threshold=agglo_boundary_threshold, rounds=agglo_rounds,
        classifier=None if agglo_classifier is None else str(agglo_classifier))
    cfg = SegmentConfig(
        inference=InferenceConfig(seed_policy=seed_policy, peak_min_distance=peak_min_distance,
                                  move_threshold=move_threshold, segment_threshold=segment_threshold,
                                  min_segment_size=min_segment_size, boundary_threshold=boundary_threshold,
                                  boundary_sigma=boundary_sigma, fill_unclaimed=fill_unclaimed,
                                  reseed_unclaimed=reseed_unclaimed, agglomerate=agglomerate,
                                  agglomeration=agg, batch_size=batch_size, consensus=consensus),
        block_size=_opt3(block_size), overlap=_opt3(overlap), scheduler=scheduler, workers=workers)
    result = segment_volume(model, image, out, cfg, voxel_size=voxel_size)
    typer.echo(json.dumps(result))


@app.command("train-agglo")
def train_agglo(
    image: Vol, labels: Vol,
    seg: Annotated[str, typer.Option(help="Un-agglomerated segmentation of IMAGE (`segment` without --agglomerate).")],
    out: Out,
    model: Annotated[Path | None, typer.Option(
        help="FFN model.keras: its pair recoveries become features; default: boundary and size features only.")] = None,
    agglo_min_contact: Annotated[int | None, typer.Option(help="Smallest contact given FFN runs (as in segment).")] = None,
    agglo_radius: Annotated[int | None, typer.Option(help="Half-size of the FFN box (as in segment).")] = None,
    boundary_sigma: Annotated[float, typer.Option(help="Smoothing of the boundary map (as in segment).")] = 1.0,
    kind: Annotated[str, typer.Option(help="forest (random forest) | logistic (logistic regression).")] = "forest",
    voxel_size: VoxelSize = None,
):
    """Fit the agglomeration pair classifier (for segment --agglo-classifier) on a labelled volume."""
    from .inference import AgglomerationConfig
    from .rag import run_train_agglo

    agg = AgglomerationConfig.from_options(radius=agglo_radius, min_contact=agglo_min_contact)
    typer.echo(json.dumps(run_train_agglo(model, image, labels, seg, out, agg=agg, boundary_sigma=boundary_sigma,
                                          kind=kind, voxel_size=voxel_size)))


@app.command()
def baseline(
    image: Vol, out: Out,
    sigma: float = 1.0,
    threshold: Annotated[float | None, typer.Option(help="Boundary level (0-1); default Otsu.")] = None,
    min_distance: int = 4,
    min_size: int = 100,
    markers: Annotated[str, typer.Option(help="peaks (distance-transform maxima) | components (interior regions)")] = "peaks",
    voxel_size: VoxelSize = None,
):
    """Watershed baseline: boundary map -> seeded watershed."""
    from .baseline import BaselineConfig, run_baseline

    cfg = BaselineConfig(sigma=sigma, threshold=threshold, min_distance=min_distance, min_size=min_size,
                         markers=markers).validate()
    typer.echo(json.dumps(run_baseline(image, out, cfg, voxel_size=voxel_size)))


@app.command()
def evaluate(
    labels: Annotated[str, typer.Option(help="Ground-truth volume PATH[:INNER] (integer ids).")],
    seg: Annotated[list[str], typer.Option(help="Segmentation [NAME=]PATH[:INNER]; repeatable.")],
    out: Out,
    image: Annotated[str | None, typer.Option(help="EM image: adds the slice figure and the baseline.")] = None,
    with_baseline: Annotated[bool, typer.Option("--baseline/--no-baseline",
                                                help="Score a watershed baseline too (needs --image).")] = True,
    min_overlap: Annotated[int, typer.Option(help="Voxels for an overlap to count as merge/split.")] = 100,
    voxel_size: VoxelSize = None,
):
    """VI split/merge, adapted Rand error, ERL, merges and splits (+ baseline and figure)."""
    from .evaluate import run_evaluation

    named = {}
    for s in seg:
        name, _, spec = s.partition("=") if "=" in s.split(":")[0] else ("", "", s)
        named[name or (Path(spec.split(":")[0]).parent.name or spec)] = spec
    run_evaluation(labels, named, out, image=image, baseline=with_baseline,
                   voxel_size=voxel_size, min_overlap=min_overlap)
    typer.echo((Path(out) / "scores.md").read_text())
