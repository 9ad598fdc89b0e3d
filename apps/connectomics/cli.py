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


def _rare(help: str) -> typer.Option:
    """A hidden option: still accepted, listed in the command's help text, not in its option table."""
    return typer.Option(help=help, hidden=True)


@app.command(epilog="Rarer options (unset: the preset's value): --seed-policy, --peak-min-distance, "
                    "--move-threshold, --min-segment-size, --boundary-sigma, --fill-unclaimed, --reseed-unclaimed, "
                    "--agglomerate, --agglo-threshold, --agglo-min-contact, --agglo-radius, --agglo-boundary-threshold, "
                    "--agglo-rounds, --batch-size, --consensus/--no-consensus.")
def segment(
    model: Annotated[Path, typer.Option(help="model.keras from `train`.")],
    image: Vol, out: Out,
    preset: Annotated[str, typer.Option(
        help="Pipeline: ffn (flood fill, default) | membrane (membrane seeds, boundary limit, FFN agglomeration) | "
             "supervoxels (watershed over-segmentation for train-agglo) | learned (supervoxels + learned "
             "agglomeration, needs --agglo-classifier; the best on real EM).")] = "ffn",
    agglo_classifier: Annotated[Path | None, typer.Option(
        help="Pair classifier from `train-agglo` (greedy agglomeration on its join probability).")] = None,
    block_size: Annotated[Triple | None, typer.Option(help="Block (z, y, x); default: whole volume.")] = None,
    overlap: Annotated[Triple | None, typer.Option(help="Block overlap (z, y, x); default: the FOV.")] = None,
    boundary_threshold: Annotated[float | None, typer.Option(
        help="Boundary-map level (0-1) objects never cross; unset: the preset's.")] = None,
    segment_threshold: Annotated[float | None, typer.Option(help="Object probability of a voxel.")] = None,
    scheduler: Annotated[str, typer.Option(help="local|inline|tcp://host:port (Dask).")] = "local",
    workers: Annotated[int | None, typer.Option(help="Local Dask workers.")] = None,
    voxel_size: VoxelSize = None,
    seed_policy: Annotated[str | None, _rare("peaks|membrane|grid|none|watershed.")] = None,
    peak_min_distance: Annotated[int | None, _rare("Minimum distance between two seeds (voxels).")] = None,
    move_threshold: Annotated[float | None, _rare("Face probability to move the FOV.")] = None,
    min_segment_size: Annotated[int | None, _rare("Smallest object (voxels).")] = None,
    boundary_sigma: Annotated[float | None, _rare("Smoothing of the boundary map (voxels).")] = None,
    fill_unclaimed: Annotated[bool | None, _rare("Watershed-fill unclaimed voxels.")] = None,
    reseed_unclaimed: Annotated[int | None, _rare("Unclaimed interior regions of >= N voxels become objects.")] = None,
    agglomerate: Annotated[bool | None, _rare("Join touching segments (FFN pair runs or the classifier).")] = None,
    agglo_threshold: Annotated[float | None, _rare("Join threshold of the agglomeration.")] = None,
    agglo_min_contact: Annotated[int | None, _rare("Smallest contact (voxel faces) of a tested pair.")] = None,
    agglo_radius: Annotated[int | None, _rare("Half-size of the box around a contact (voxels).")] = None,
    agglo_boundary_threshold: Annotated[float | None, _rare("Boundary level the agglomeration runs never enter.")] = None,
    agglo_rounds: Annotated[int | None, _rare("Agglomeration rounds.")] = None,
    batch_size: Annotated[int | None, _rare("FOVs per FFN call.")] = None,
    consensus: Annotated[bool | None, _rare("Forward + reversed seed order, split consensus.")] = None,
):
    """Segment a volume block by block and stitch (rerun to resume)."""
    from .config import SegmentConfig, preset_inference
    from .segment import segment_volume

    agg = {"radius": None if agglo_radius is None else (agglo_radius,) * 3, "min_contact": agglo_min_contact,
           "threshold": agglo_threshold, "boundary_threshold": agglo_boundary_threshold, "rounds": agglo_rounds,
           "classifier": None if agglo_classifier is None else str(agglo_classifier)}
    icfg = preset_inference(
        preset, seed_policy=seed_policy, peak_min_distance=peak_min_distance, move_threshold=move_threshold,
        segment_threshold=segment_threshold, min_segment_size=min_segment_size, boundary_threshold=boundary_threshold,
        boundary_sigma=boundary_sigma, fill_unclaimed=fill_unclaimed, reseed_unclaimed=reseed_unclaimed,
        agglomerate=agglomerate if agglomerate is not None else (True if agglo_classifier else None),
        batch_size=batch_size, consensus=consensus, agglomeration=agg)
    cfg = SegmentConfig(inference=icfg, block_size=_opt3(block_size), overlap=_opt3(overlap), scheduler=scheduler,
                        workers=workers).validate()
    result = segment_volume(model, image, out, cfg, voxel_size=voxel_size)
    typer.echo(json.dumps(result))


@app.command("train-agglo")
def train_agglo(
    image: Vol, labels: Vol, out: Out,
    model: Annotated[Path | None, typer.Option(
        help="FFN model.keras: its pair recoveries become features; default: boundary and size features only.")] = None,
    seg: Annotated[str | None, typer.Option(
        help="Un-agglomerated segmentation of IMAGE (`segment --preset supervoxels`); default: made here with "
             "the learned preset's supervoxel settings.")] = None,
    agglo_min_contact: Annotated[int | None, typer.Option(help="Smallest contact given FFN runs (as in segment).")] = None,
    agglo_radius: Annotated[int | None, typer.Option(help="Half-size of the FFN box (as in segment).")] = None,
    boundary_sigma: Annotated[float | None, typer.Option(help="Smoothing of the boundary map (as in segment).")] = None,
    kind: Annotated[str, typer.Option(help="forest (random forest) | logistic (logistic regression).")] = "forest",
    voxel_size: VoxelSize = None,
):
    """Fit the pair classifier of `segment --preset learned` on a labelled volume."""
    from .config import preset_inference
    from .train_agglo import run_train_agglo

    icfg = preset_inference("learned", training=True, boundary_sigma=boundary_sigma, agglomeration={
        "radius": None if agglo_radius is None else (agglo_radius,) * 3, "min_contact": agglo_min_contact})
    typer.echo(json.dumps(run_train_agglo(model, image, labels, out, seg=seg, icfg=icfg, kind=kind,
                                          voxel_size=voxel_size)))


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
    from .baseline import run_baseline
    from .config import BaselineConfig

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
    from .scoring import run_evaluation

    named = {}
    for s in seg:
        name, _, spec = s.partition("=") if "=" in s.split(":")[0] else ("", "", s)
        named[name or (Path(spec.split(":")[0]).parent.name or spec)] = spec
    run_evaluation(labels, named, out, image=image, baseline=with_baseline,
                   voxel_size=voxel_size, min_overlap=min_overlap)
    typer.echo((Path(out) / "scores.md").read_text())
