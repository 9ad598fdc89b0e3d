"""Cheaper FFNs: ``connectomics export`` (LiteRT int8/float16) and ``connectomics distill``.

**Export.** The representative and check inputs are FOVs exactly as the flood
fill feeds them to the network, ``(N, Z, Y, X, 2)``: the normalised image and the
canvas of object logits. ``connectomics export`` records them from the float
model's own flood fill (:func:`export`), so the canvas channel holds the model's
own earlier predictions, the range int8 must cover; they are drawn from a volume
given with ``--inputs`` (``vol.zarr[:image]``, any volume ``segment`` reads) or, by
default, from a synthetic volume of :func:`~.synth.synthetic_volume` with seed
:data:`DRAW_SEED`. The difference is the fraction of FOV voxels whose mask at the
segment threshold flips (:func:`mask_flips`).

**Distillation.** A dense output has no dark knowledge between classes: each
voxel's target is one probability. The teacher's target for a training region
is the teacher's *flood fill* of that region from its centre (every member fills
on its own, as at inference; the soft target is the members' mean of
``sigmoid(logits / T)``, core's ``"sigmoid"`` head kind), beside the label's soft
mask (0.05 / 0.95). The student runs the training FOV movement of ``train`` and
learns ``alpha * T^2 * KL(teacher || student) + (1 - alpha) * CE(label)`` per voxel
(:func:`distill_loss`); regions from ``--unlabelled`` volumes (EM without ground
truth) have NaN labels and learn from the teacher alone. ``T = 1`` by default: the
segmentation thresholds the probabilities themselves, and with one probability per
voxel a temperature only re-weights voxels rather than revealing class relations.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from deepsci.core.compress import (
    DistillSettings,
    ExportConfig,
    ExportSpec,
    distill_card_entry,
    run_export,
)
from deepsci.core.errors import ConfigError, InputError

from .config import InferenceConfig
from .policy import SEED_IN, SEED_OUT, logit
from .predict import APP, TASK, model_card, model_paths, normalise

__all__ = ["EXPORT", "DRAW_SEED", "ExportRun", "export", "draw", "mask_flips", "DistillConfig", "distill",
           "distill_loss"]

#: Seed of the synthetic volume that export draws from without ``--inputs``.
DRAW_SEED = 1234
#: Export refuses when more than this fraction of FOV voxels flips its mask (int8 measured ~0.1-0.5 %).
TOLERANCE = 0.01


@dataclass
class ExportRun(ExportConfig):
    """Options of ``deepsci connectomics export``.

    Attributes
    ----------
    model : str
        An FFN ``model.keras`` or a shipped model's name; empty: the default FFN.
    out : Path
        The ``.tflite`` file; its card is written beside it (``*.card.json``).
    quantize : str
        int8 (weights and activations, calibrated on --samples FOVs) | float16 (weights) | none.
    inputs : Path, optional
        An EM volume ``PATH[:INNER]`` (e.g. ``vol.zarr:image``) whose flood fill gives the FOVs;
        default: a synthetic volume (synth, seed 1234).
    samples : int
        FOVs for int8 calibration.
    check : int
        Further FOVs (not calibrated on) scored against the float model.
    batch_size : int
        The file's fixed batch; 1 (default) wastes nothing on the fill's short batches.
    tolerance : float, optional
        Refuse the export above this fraction of flipped mask voxels (default 0.01).
    seed : int
        Which seeds and FOVs are drawn.
    """

    batch_size: int = 1


def _volume(source, card) -> np.ndarray:
    if source:
        from .io import open_volume

        return np.asarray(open_volume(str(source)).read())
    from .synth import synthetic_volume

    fov = card.extra["ffn"]["fov_size"]
    shape = tuple(max(s, 2 * f + 1) for s, f in zip((48, 96, 96), fov, strict=True))
    return synthetic_volume(shape=shape, n_neurites=14, seed=DRAW_SEED)[0]


def _seed_canvas_rows(image, fov, seeds, n) -> np.ndarray:
    half = np.asarray(fov) // 2
    rows = []
    for s in seeds[:n]:
        sl = tuple(slice(int(c) - h, int(c) + h + 1) for c, h in zip(s, half, strict=True))
        canvas = np.full(fov, logit(SEED_OUT), np.float32)
        canvas[tuple(half)] = logit(SEED_IN)
        rows.append(np.stack([image[sl], canvas], -1))
    return np.asarray(rows, np.float32)


def draw(source, n: int, seed: int, card, *, model: str | None = None) -> np.ndarray:
    """``n`` FFN inputs ``(n, Z, Y, X, 2)`` (normalised image, canvas logits) drawn from an EM volume.

    Parameters
    ----------
    source : path or None
        A volume ``PATH[:INNER]``; ``None``: the synthetic volume of seed :data:`DRAW_SEED`.
    card : ModelCard
        The FFN's card (FOV, normalisation).
    model : str, optional
        The float model: the rows are then the FOVs its own flood fill evaluates (seed visits and
        later ones whose canvas holds its earlier logits); without it every row is a seed visit.
    """
    from .fill import fill_object, peak_seeds
    from .predict import FloodFiller, load_flood_filler

    fov = tuple(card.extra["ffn"]["fov_size"])
    pre = card.preprocessing
    image = normalise(_volume(source, card), pre["image_mean"], pre["image_stddev"])
    if any(s < f for s, f in zip(image.shape, fov, strict=True)):
        raise InputError(f"expected a volume of at least the model's FOV {fov}, found {image.shape}", source)
    half = np.asarray(fov) // 2
    rng = np.random.default_rng(seed)
    seeds = peak_seeds(image, margin=tuple(half))
    if len(seeds) == 0:
        seeds = np.stack([rng.integers(h, s - h, 4 * n) for h, s in zip(half, image.shape, strict=True)], 1)
    seeds = seeds[rng.permutation(len(seeds))]
    if model is None:
        return _seed_canvas_rows(image, fov, np.resize(seeds, (n, 3)), n)
    ff, _ = load_flood_filler(model)
    seen: list[np.ndarray] = []
    recorder = FloodFiller([lambda x: (seen.extend(x), ff.members[0](x))[1]], ff.fov, ff.deltas)
    # A few FOVs per object: many objects rather than the whole of the first ones.
    icfg = InferenceConfig(batch_size=1, max_fovs_per_object=max(4, 4 * n // max(len(seeds), 1)))
    for s in np.resize(seeds, (max(n, len(seeds)), 3)):
        if len(seen) >= 2 * n:
            break
        fill_object(image, np.full(image.shape, logit(SEED_OUT), np.float32), s, recorder, icfg)
    rows = np.asarray(seen, np.float32)
    return rows[np.sort(rng.choice(len(rows), n, replace=len(rows) < n))]


def mask_flips(float_out, exported_out, *, threshold: float | None = None) -> float:
    """Fraction of FOV voxels whose object mask at the segment threshold differs.

    Both are logits ``(N, Z, Y, X, 1)``; the threshold is :class:`~.config.InferenceConfig`'s
    ``segment_threshold`` (a probability) unless given.
    """
    t = logit(InferenceConfig().segment_threshold if threshold is None else threshold)
    a, b = np.asarray(float_out), np.asarray(exported_out)
    return float(np.mean((a >= t) != (b >= t)))


EXPORT = ExportSpec(app=APP, task=TASK, draw=draw, compare=mask_flips,
                    measure="fraction of FOV voxels whose mask flips", tolerance=TOLERANCE)


def export(cfg: ExportRun, *, overwrite: bool = False, say=None) -> dict:
    """``deepsci connectomics export``: :func:`~deepsci.core.compress.run_export` on the model's own fill states."""
    from deepsci.core.compress import single_model_path
    from deepsci.core.models.registry import resolve_model

    path = single_model_path(resolve_model(cfg.model or None, app=APP, task=TASK, say=say))
    spec = dataclasses.replace(EXPORT, draw=partial(draw, model=str(path)))
    return run_export(dataclasses.replace(cfg, model=str(path)), spec, overwrite=overwrite, say=say)


# ------------------------------------------------------------------ distillation


@dataclass
class DistillConfig:
    """``deepsci connectomics distill``: a smaller FFN trained on a teacher's flood fills.

    Attributes
    ----------
    out : str
        Output folder, laid out as ``train``'s (``model.keras`` + card, history, ``run.json``) plus
        ``teacher-cache/`` (the teacher's masks, resumable).
    image : str
        Labelled EM volume ``PATH[:INNER]`` (empty with --unlabelled only: teacher targets alone).
    labels : str
        Its dense ground truth ``PATH[:INNER]``.
    unlabelled : str
        EM volumes without ground truth, comma-separated: regions learned from the teacher alone.
    distillation : DistillSettings
        The teacher FFNs (an ensemble: ``a.keras,b.keras``), T and alpha.
    depth, features : int, optional
        The student's convolution pairs and channels; default: half the teacher's depth, its features.
    examples : int
        Labelled training regions (balanced partitions, as ``train`` samples them).
    unlabelled_examples : int
        Regions drawn at random from the --unlabelled volumes.
    moves : int
        FFN steps per example (FOV movement with feedback, as ``train``).
    epochs, steps_per_epoch, batch_size, learning_rate, seed
        The training schedule (Adam).
    voxel_size : tuple of float, optional
        (z, y, x) in nm; overrides the files' metadata.
    """

    out: str = ""
    image: str = ""
    labels: str = ""
    unlabelled: str = ""
    distillation: DistillSettings = field(default_factory=lambda: DistillSettings(temperature=1.0))
    depth: int | None = None
    features: int | None = None
    examples: int = 1000
    unlabelled_examples: int = 1000
    moves: int = 2
    epochs: int = 4
    steps_per_epoch: int = 100
    batch_size: int = 8
    learning_rate: float = 2e-3
    seed: int = 0
    voxel_size: tuple[float, float, float] | None = None

    def validate(self) -> DistillConfig:
        self.distillation.validate()
        if not self.out:
            raise ConfigError("expected --out, found none")
        if bool(self.image) != bool(self.labels):
            raise ConfigError("expected --image and --labels together (or --unlabelled alone)")
        if not self.image and not self.unlabelled:
            raise ConfigError("expected --image/--labels or --unlabelled volumes to distil on")
        for name in ("examples", "unlabelled_examples", "moves", "epochs", "steps_per_epoch", "batch_size"):
            low = 0 if "examples" in name else 1
            if int(getattr(self, name)) < low:
                raise ConfigError(f"expected --{name.replace('_', '-')} >= {low}, found {getattr(self, name)}")
        for name in ("depth", "features"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ConfigError(f"expected --{name} >= 1, found {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ConfigError(f"expected --learning-rate > 0, found {self.learning_rate}")
        from .config import check_voxel_size

        check_voxel_size(self.voxel_size)
        return self



def _crop(vol: np.ndarray, coords: np.ndarray, region) -> np.ndarray:
    half = np.asarray(region) // 2
    return np.stack([vol[tuple(slice(int(c) - h, int(c) - h + r) for c, h, r in zip(cc, half, region, strict=True))]
                     for cc in coords]) if len(coords) else np.zeros((0, *region), vol.dtype)


def _random_coords(shape, region, n: int, rng) -> np.ndarray:
    half = np.asarray(region) // 2
    hi = np.asarray(shape) - (np.asarray(region) - half)
    if np.any(hi < half):
        return np.zeros((0, 3), np.int64)
    return np.stack([rng.integers(h, m + 1, n) for h, m in zip(half, hi, strict=True)], 1)


def _teacher_masks(regions: np.ndarray, members: list, temperature: float) -> np.ndarray:
    """The members' mean ``sigmoid(fill logits / T)`` of each region filled from its centre, (K, R, R, R, 1)."""
    from deepsci.core.distill import soft_targets

    from .fill import fill_object

    icfg = InferenceConfig()
    centre = np.asarray(regions.shape[1:4]) // 2
    fills = []
    for ff in members:
        canvases = []
        for img in regions.astype(np.float32):
            canvas = np.full(img.shape, logit(SEED_OUT), np.float32)
            fill_object(img, canvas, centre, ff, icfg)
            canvases.append(canvas[..., None])
        fills.append(np.asarray(canvases))
    return soft_targets(fills, temperature=temperature).astype(np.float16)


def _examples(cfg: DistillConfig, ffn_cfg, mean: float, std: float):
    """Image regions and soft label masks (NaN: unlabelled), both (K, R, R, R) float16."""
    from .io import open_volume
    from .train import _coordinates

    region = ffn_cfg.region_size()
    rng = np.random.default_rng(cfg.seed)
    xs, ys = [], []
    if cfg.image:
        img = open_volume(cfg.image, voxel_size=cfg.voxel_size)
        lab_vol = open_volume(cfg.labels, voxel_size=cfg.voxel_size, kind="labels")
        image, lab = img.read(), lab_vol.read()
        if image.shape != lab.shape:
            raise InputError(f"expected labels of the image's shape {image.shape}, found {lab.shape}", cfg.labels)
        coords = _coordinates(lab, ffn_cfg, cfg.labels)[0][:cfg.examples]
        regions = _crop(lab, coords, region)
        centre = regions[(slice(None), *[r // 2 for r in region])]
        xs.append(_crop(normalise(image, mean, std), coords, region))
        ys.append(np.where(regions == centre[:, None, None, None], SEED_IN, SEED_OUT))
    for spec in model_paths(cfg.unlabelled) if cfg.unlabelled else []:
        image = open_volume(spec, voxel_size=cfg.voxel_size).read()
        n = int(cfg.unlabelled_examples) // len(model_paths(cfg.unlabelled))
        coords = _random_coords(image.shape, region, n, rng)
        if not len(coords):
            raise InputError(f"expected an unlabelled volume of at least {tuple(region)} voxels, found {image.shape}",
                             spec)
        xs.append(_crop(normalise(image, mean, std), coords, region))
        ys.append(np.full(xs[-1].shape, np.nan))
    x = np.concatenate(xs).astype(np.float16)
    if len(x) < cfg.batch_size:
        raise InputError(f"expected at least --batch-size {cfg.batch_size} training regions, found {len(x)}",
                         cfg.image or cfg.unlabelled)
    return x, np.concatenate(ys).astype(np.float16)


def _dataset(x, y, teacher, ffn_cfg, seed: int):
    import tensorflow as tf

    from .train import _permutations, augment_regions

    region = np.asarray(ffn_cfg.region_size(), np.int64)
    perms = _permutations(region)

    def prepare(i, xi, yi, ti):
        parts = [tf.cast(v, tf.float32)[..., None] if len(v.shape) == 3 else tf.cast(v, tf.float32)
                 for v in (xi, yi, ti)]
        xi, yi, ti = augment_regions(parts, example_id=i, seed=seed, perms=perms, region=region)
        return xi, {"label": yi, "teacher": ti}

    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(x), dtype=np.int64), x, y, teacher))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).map(prepare)
    return ds.batch(ffn_cfg.train.batch_size, drop_remainder=True).prefetch(2)


def distill_loss(ffn_cfg, settings: DistillSettings):
    """Per-example loss ``(B,)`` of the student's FOV steps against labels and teacher masks.

    Per voxel ``alpha * T^2 * KL + (1 - alpha) * CE`` (:func:`deepsci.core.distill.distillation_loss`,
    Bernoulli form); a NaN label (unlabelled region) leaves the teacher term alone. Voxels are
    averaged per step and steps as ``train`` does (steps whose move found no face do not count).
    """
    import tensorflow as tf

    from deepsci.core.distill import distillation_loss

    from .train import fov_gather

    gather = fov_gather(ffn_cfg.model_config().fov_size)
    T, alpha = float(settings.temperature), float(settings.alpha)
    steps = int(ffn_cfg.moves)

    def loss_fn(y_true, y_pred):
        corner, z = y_pred["corner"], y_pred["logits"]
        lab = tf.stack([gather(y_true["label"], corner[:, i]) for i in range(steps)], 1)
        tea = tf.stack([gather(y_true["teacher"], corner[:, i]) for i in range(steps)], 1)
        known = tf.logical_not(tf.math.is_nan(lab))[..., 0]
        lab0 = tf.where(tf.math.is_nan(lab), tf.zeros_like(lab), lab)
        soft = distillation_loss(lab0, z, tea, temperature=T, alpha=1.0)
        hard = distillation_loss(lab0, z, tea, temperature=T, alpha=0.0)
        per_voxel = tf.where(known, alpha * soft + (1 - alpha) * hard, soft)
        per_step = tf.reduce_mean(per_voxel, axis=[2, 3, 4])
        w = y_pred["valid"]
        return tf.reduce_sum(per_step * w, 1) / tf.maximum(tf.reduce_sum(w, 1), 1.0)

    return loss_fn


def _student(cfg: DistillConfig, teacher_card):
    from deepsci.core.training import TrainConfig

    from .train import FFNTrainConfig

    t = teacher_card.extra["ffn"]
    depth = cfg.depth if cfg.depth is not None else max(1, int(t["depth"]) // 2)
    features = cfg.features if cfg.features is not None else int(t["features"])
    train = TrainConfig(epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch, batch_size=cfg.batch_size,
                        learning_rate=cfg.learning_rate, seed=cfg.seed, monitor="loss", tensorboard=False)
    # The student keeps the teacher's FOV and step: the teacher's masks cover the student's regions.
    return FFNTrainConfig(fov_size=tuple(t["fov_size"]), deltas=tuple(t["deltas"]), depth=depth, features=features,
                          moves=cfg.moves, train=train).validate()


def distill(cfg: DistillConfig, *, overwrite: bool = False, progress: bool = False) -> dict:
    """Train a student FFN on a teacher's flood fills (and labels); write a ``train``-style model folder.

    Returns
    -------
    dict
        ``model`` path, final ``loss``, ``steps``, ``examples`` (labelled, unlabelled), ``teacher``
        (member paths), ``teacher_shards_computed`` and ``seconds``.
    """
    from deepsci.core.distill import TeacherCache
    from deepsci.core.ensemble import model_paths as ensemble_paths
    from deepsci.core.io import config_to_dict
    from deepsci.core.models.registry import resolve_model
    from deepsci.core.models.serialization import save_model
    from deepsci.core.runs import RunDir
    from deepsci.core.training import train

    from .model import build_model
    from .predict import load_flood_filler
    from .train import TrainRun, _card, make_forward

    t0 = time.perf_counter()
    cfg.validate()
    settings = cfg.distillation
    paths = [str(p) for p in ensemble_paths(resolve_model(settings.teacher, app=APP, task=TASK))]
    tcard = model_card(",".join(paths))  # members agree on FOV and normalisation
    ffn_cfg = _student(cfg, tcard)
    mean, std = tcard.preprocessing["image_mean"], tcard.preprocessing["image_stddev"]
    x, y = _examples(cfg, ffn_cfg, mean, std)
    inputs = [s.split(":")[0] for s in (cfg.image, cfg.labels, *model_paths(cfg.unlabelled)) if s]
    with RunDir(cfg.out, command="connectomics distill", config=cfg, inputs=[*paths, *inputs],
                overwrite=overwrite) as run:
        members = [load_flood_filler(p)[0] for p in paths]
        ident = {"models": [str(Path(p).resolve()) for p in paths], "temperature": settings.temperature,
                 "kind": "flood-fill", "region": list(ffn_cfg.region_size()),
                 "data": _fingerprint(x)}
        cache = TeacherCache(Path(run.path) / "teacher-cache", teacher=ident)
        chunks = [x[i:i + 64] for i in range(0, len(x), 64)]
        computed = cache.compute(lambda c: {"mask": _teacher_masks(c, members, settings.temperature)}, chunks,
                                 progress=progress)
        masks = cache.load()["mask"]
        forward, _ = make_forward(ffn_cfg)
        result = train(lambda: build_model(ffn_cfg.model_config(), None), _dataset(x, y, masks, ffn_cfg, cfg.seed),
                       distill_loss(ffn_cfg, settings), ffn_cfg.train, run.path, forward=forward)
        loss = result.history[-1]["loss"] if result.history else None
        n_lab = int(np.sum(~np.isnan(y[:, 0, 0, 0].astype(np.float32))))
        record = TrainRun(image=cfg.image or cfg.unlabelled, labels=cfg.labels, out=cfg.out, ffn=ffn_cfg)
        card = _card(ffn_cfg, record, mean=mean, std=std, voxel_size=tcard.input_spec.get("voxel_size", (1, 1, 1)),
                     loss=loss, coords=len(x))
        entry = distill_card_entry(settings, paths, data={"image": cfg.image, "labels": cfg.labels,
                                                          "unlabelled": model_paths(cfg.unlabelled),
                                                          "labelled_regions": n_lab,
                                                          "unlabelled_regions": int(len(x) - n_lab)},
                                   student={"depth": ffn_cfg.depth, "features": ffn_cfg.features})
        card = dataclasses.replace(card, training={**card.training, "command": "connectomics distill",
                                                   "config": config_to_dict(cfg), "distillation": entry},
                                   name=f"{card.name} (distilled)")
        save_model(result.model, run.file("model.keras"), card=card)
        summary = {"model": str(run.file("model.keras")), "loss": loss, "steps": result.steps,
                   "examples": {"labelled": n_lab, "unlabelled": int(len(x) - n_lab)}, "teacher": paths,
                   "teacher_shards_computed": int(computed), "seconds": round(time.perf_counter() - t0, 2)}
        run.record(**summary)
    return summary


def _fingerprint(x: np.ndarray) -> str:
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]
