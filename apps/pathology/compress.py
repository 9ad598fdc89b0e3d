"""Cheaper patch classifiers: ``pathology export`` (LiteRT, int8) and ``pathology distill``.

* :data:`EXPORT` tells the core's export runner (:func:`deepsci.core.compress.run_export`)
  how to draw this app's inputs and score a difference: patches of the
  model's own geometry (its card's patch size, magnifications and centre) from
  the user's slides (``--inputs``: a slide or a folder of slides, annotations
  beside them as for ``train``) or, without ``--inputs``, from a synthetic
  slide pair made with :data:`DRAW_SEED`; tumour and normal centres are drawn
  1:1 as in training, without augmentation. The difference is the mean
  absolute change of the tumour probability on held-out patches.
* :func:`distill` trains a smaller Inception of the same family (``--width``,
  ``--blocks``) on a fixed transfer set of patches against the
  temperature-softened probabilities of a teacher (one model or an
  ensemble), cached once under ``out/teacher-cache``. It writes the folder
  ``train`` writes (``model.keras`` + card, checkpoints, ``history.json``,
  ``run.json``), so ``heatmap`` and ``export`` take the student as they take
  any model; its card records ``training["distillation"]``.
* :func:`flops_per_patch` counts a classifier's multiply-adds by layer.
"""
from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.compress import DistillSettings, ExportSpec, distill_card_entry, teacher_targets
from deepsci.core.config import check_choice, check_ranges, option
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import config_to_dict
from deepsci.core.models.card import ModelCard, read_card
from deepsci.core.runs import RunDir
from deepsci.core.training import TrainConfig

from .io import list_slides
from .model import APP, TASK, build_model, model_card
from .patches import PatchConfig, cached_pool, index_slide
from .predict import scale_tiles
from .train import MODEL_NAME, VARIANTS, _auc_metric, _index, _provenance, find_annotation

__all__ = ["EXPORT", "DRAW_SEED", "TOLERANCE", "draw", "compare", "DistillConfig", "distill",
           "card_patch", "flops_per_patch"]

#: Seed of the synthetic slides ``export`` draws from when no ``--inputs`` is given (no
#: shipped model's build or demo uses it).
DRAW_SEED = 4301
#: Default refusal threshold of :func:`compare`: the issue allows a FROC loss of 0.01, and a
#: mean tumour-probability change of 0.02 leaves lesion maxima ranked as before (measured:
#: bench/compress_pathology.py reports both).
TOLERANCE = 0.02
HEADS = {"tumor": "sigmoid"}
_CHUNK = 512  # patches per teacher-cache shard


def card_patch(card: ModelCard, base: PatchConfig | None = None) -> PatchConfig:
    """The patch geometry a model was trained on (its card), other settings from ``base``."""
    spec = card.input_spec
    return dataclasses.replace(base or PatchConfig(), patch_size=int(spec["patch_size"]),
                               magnifications=tuple(float(m) for m in spec["magnifications"]),
                               center_size=int(spec["center_size"]))


def _model_inputs(raw: np.ndarray):
    """Raw pool patches ``(n, S, P, P, 3)`` uint8 -> the model's inputs.

    One scale: an array ``(n, P, P, 3)``; several: ``{"scale<i>": ...}`` (the
    towers' input names, finest first), which Keras and the export both take.
    """
    raw = np.asarray(raw)
    if raw.shape[1] == 1:
        return scale_tiles(raw[:, 0])
    return {f"scale{i}": scale_tiles(raw[:, i]) for i in range(raw.shape[1])}


def _synthetic_source(folder: Path, pc: PatchConfig) -> Path:
    from .synth import SynthConfig, make_slides

    # Level 0 at the finest magnification; 1536 px holds the coarsest patch of 40,20,10.
    cfg = SynthConfig(width=1536, height=1536, mpp=10.0 / pc.magnifications[0],
                      tumour_radius_um=(150.0, 220.0))
    make_slides(folder, n_tumour=1, n_normal=1, seed=DRAW_SEED, config=cfg)
    return folder


def _slide_indices(source: Path, pc: PatchConfig, mpp: float | None = None) -> list:
    slides = list_slides(source)
    return [index_slide(s, find_annotation(s, None), pc, mpp=mpp) for s in slides]


def draw(source: str | Path | None, n: int, seed: int, card: ModelCard):
    """``n`` preprocessed patches of the model's geometry, for calibration and the check.

    Parameters
    ----------
    source : path or None
        A slide or a folder of slides (``<slide>.xml`` / ``.geojson`` beside
        them mark tumour; a slide without one is normal). ``None``: one tumour
        and one normal synthetic slide made with :data:`DRAW_SEED`.
    n : int
    seed : int
        Which centres are drawn (tumour and normal 1:1, no augmentation).
    card : ModelCard
        The model's card (patch size, magnifications, centre).

    Returns
    -------
    ndarray, shape (n, P, P, 3), float32 in [-1, 1]
        Or a dict ``{"scale<i>": (n, P, P, 3)}`` for a multi-magnification model.
    """
    pc = dataclasses.replace(card_patch(card), jitter=0)
    with tempfile.TemporaryDirectory(prefix="deepsci-pathology-draw-") as tmp:
        tmp = Path(tmp)
        if source is None:
            source = _synthetic_source(tmp / "slides", pc)
        elif not Path(source).exists():
            raise InputError("expected a slide or a folder of slides for --inputs, found none", source)
        indices = _slide_indices(Path(source), pc)
        raw, _ = cached_pool(indices, pc, n=int(n), seed=int(seed), shard=0, cache_dir=tmp / "pool")
        return _model_inputs(np.array(raw))


def _probability(out) -> np.ndarray:
    z = np.asarray(out["tumor"] if isinstance(out, dict) else out, np.float64)
    return 1.0 / (1.0 + np.exp(-z))


def compare(float_out, exported_out) -> float:
    """Mean absolute difference of the tumour probability (logits -> sigmoid), float vs exported."""
    return float(np.mean(np.abs(_probability(float_out) - _probability(exported_out))))


EXPORT = ExportSpec(app=APP, task=TASK, draw=draw, compare=compare,
                    measure="mean |delta tumour probability|", tolerance=TOLERANCE)


def _distill_defaults() -> TrainConfig:
    return TrainConfig(epochs=5, batch_size=32, monitor="val_auc", mode="max", tensorboard=False)


@dataclass
class DistillConfig:
    """Settings of ``deepsci pathology distill`` (recorded in ``run.json``).

    The student takes the teacher's patch size, magnifications and centre
    (its card's); ``patch`` gives the sampling's other settings.

    Attributes
    ----------
    slides : str
        Folder of slides whose patches are the transfer set (annotations
        beside them, or in ``annotations``, give the hard labels).
    out : str
        Output folder, laid out as ``train``'s: ``model.keras`` + card, checkpoints.
    distill : DistillSettings
        Teacher (models, an ensemble folder or shipped names), T and alpha.
    annotations, val_slides : str, optional
        As for ``train``; without ``val_slides`` validation patches come from
        the training slides with another seed.
    variant, width, blocks, dropout
        The student: a small Inception, narrower / shallower than the teacher.
    patches, val_patches : int
        Transfer-set patches (fixed: the teacher runs once on them) and validation patches.
    teacher_cache : str, optional
        Where the teacher's outputs are cached (default ``out/teacher-cache``);
        a cache of another teacher or temperature is refused.
    patch : PatchConfig
    mpp : float, optional
    bn_batches : int
        Batches that re-estimate BatchNorm statistics after training.
    train : TrainConfig
        Epochs, batch size, learning rate, seed of the core loop.
    """

    slides: str = option(help="Folder of slides: the transfer set's patches.")
    out: str = option(help="Output folder (model.keras, checkpoints, teacher-cache/).")
    distill: DistillSettings = option(factory=DistillSettings)
    annotations: str | None = option(None, "Folder of annotations; default: --slides.")
    val_slides: str | None = option(None, "Folder of validation slides.")
    variant: str = option("small", "Student Inception variant.", choices=VARIANTS)
    width: int = option(8, "Student filters per branch (the shipped model has 16).", min=1)
    blocks: tuple[int, int, int] = option((1, 1, 1), "Student mixed blocks per stage.", min=1)
    dropout: float = option(0.2, "Student dropout before the head.", min=0, max=0.99)
    patches: int = option(2048, "Transfer-set patches (the teacher runs on them once).", min=1)
    val_patches: int = option(256, "Validation patches (0: none).", min=0)
    teacher_cache: str | None = option(None, "Teacher-output cache (default: OUT/teacher-cache).")
    patch: PatchConfig = option(factory=PatchConfig)
    mpp: float | None = option(None, "Microns per pixel at level 0, for slides that do not record it.",
                               min=0, min_exclusive=True)
    bn_batches: int = option(16, "Batches that re-estimate BatchNorm statistics after training.", min=0)
    train: TrainConfig = option(factory=_distill_defaults)

    def validate(self) -> DistillConfig:
        """Raise ConfigError / InputError for impossible settings or missing slides; return self."""
        self.distill.validate()
        self.train.validate()
        check_ranges(self)
        check_choice("--variant", self.variant, VARIANTS)
        if len(self.blocks) != 3:
            raise ConfigError(f"expected --blocks as three integers, found {self.blocks}")
        if self.patches < self.train.batch_size:
            raise ConfigError(f"expected --patches >= --batch-size ({self.train.batch_size}), "
                              f"found {self.patches}")
        if not Path(self.slides).is_dir():
            raise InputError("expected a folder of slides, found none", self.slides)
        return self


def _teacher_card(settings: DistillSettings) -> ModelCard:
    from deepsci.core.ensemble import model_paths
    from deepsci.core.models.registry import resolve_model

    paths = model_paths(resolve_model(settings.teacher, app=APP, task=TASK, say=None))
    # Every member checked before the run folder exists: a damaged or foreign teacher found
    # only when TensorFlow loads it would leave the patch cache of a run that cannot go on.
    cards = [read_card(p, expect=APP, task=TASK) for p in paths]
    for p in paths:
        _check_keras_archive(Path(p))
    return cards[0]


def _check_keras_archive(path: Path) -> None:
    """Refuse a ``.keras`` that is no zip archive with a ``config.json`` (without TensorFlow)."""
    import zipfile

    if path.suffix != ".keras":
        return
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise InputError(f"expected a Keras model file (a .keras zip archive), found a damaged file ({e})",
                         path) from None
    if "config.json" not in names:
        raise InputError("expected a Keras model file (a .keras zip archive) with its config.json, found "
                         f"{len(names)} other member(s)", path)


def _chunks(pools: list[np.ndarray]) -> Iterator:
    for pool in pools:
        for start in range(0, len(pool), _CHUNK):
            yield _model_inputs(np.asarray(pool[start:start + _CHUNK]))


def _dataset(pool_x, pool_y, teacher, *, batch_size: int, seed: int, epoch: int, shuffle: bool,
             shard: int = 0, shards: int = 1):
    """``(x, {"label": {"tumor"}, "teacher": {"tumor"}})`` batches of a fixed pool, reshuffled by epoch."""
    import tensorflow as tf

    idx = np.arange(len(pool_y))
    if shuffle:
        idx = np.random.default_rng([seed, epoch]).permutation(idx)
    idx = idx[shard::shards]
    nscale, p = pool_x.shape[1], pool_x.shape[2]

    def gen():
        for k in idx:
            yield tuple(np.asarray(pool_x[k])), np.float32(pool_y[k]), np.float32(teacher[k, 0])

    sig = (tuple(tf.TensorSpec((p, p, 3), tf.uint8) for _ in range(nscale)),
           tf.TensorSpec((), tf.float32), tf.TensorSpec((), tf.float32))

    def to_example(patches, label, soft):
        xs = [tf.cast(q, tf.float32) / 255.0 * 2.0 - 1.0 for q in patches]  # patches.preprocess
        x = xs[0] if nscale == 1 else tuple(xs)
        return x, {"label": {"tumor": tf.reshape(label, (1,))}, "teacher": {"tumor": tf.reshape(soft, (1,))}}

    ds = tf.data.Dataset.from_generator(gen, output_signature=sig).map(to_example, num_parallel_calls=2)
    ds = ds.batch(batch_size).prefetch(2)
    return ds.apply(tf.data.experimental.assert_cardinality(-(-len(idx) // batch_size)))


def _pools(cfg: DistillConfig, student, run_path: Path) -> tuple:
    """Transfer-set and validation pools ``(n, S, P, P, 3)`` uint8 with labels, read once."""
    indices = _index(cfg.slides, cfg.annotations, student)
    if not any(i.is_tumour for i in indices):
        raise InputError("expected at least one slide with tumour annotations (<slide>.xml or "
                         ".geojson), found none", cfg.annotations or cfg.slides)
    cache = run_path / "patch-cache"
    seed = cfg.train.seed
    train = cached_pool(indices, student.patch, n=cfg.patches, seed=seed, shard=0, cache_dir=cache, mpp=cfg.mpp)
    val = None
    if cfg.val_patches:
        vind = _index(cfg.val_slides, None, student) if cfg.val_slides else indices
        val = cached_pool(vind, student.patch, n=cfg.val_patches, seed=seed + 10_000, shard=0,
                          cache_dir=cache, mpp=cfg.mpp)
    return indices, train, val


def _fit(cfg: DistillConfig, student, tc: TrainConfig, train, val, soft: dict, out: Path, loss_fn):
    from deepsci.core import training

    def train_fn(ctx, epoch=0):
        bs = ctx.get_per_replica_batch_size(tc.batch_size)
        return _dataset(*train, soft["train"], batch_size=bs, seed=tc.seed, epoch=epoch, shuffle=True,
                        shard=ctx.input_pipeline_id, shards=ctx.num_input_pipelines)

    def val_fn(ctx):
        bs = ctx.get_per_replica_batch_size(tc.batch_size)
        return _dataset(*val, soft["val"], batch_size=bs, seed=tc.seed, epoch=0, shuffle=False,
                        shard=ctx.input_pipeline_id, shards=ctx.num_input_pipelines)

    def auc():
        return _auc_metric(lambda y: y["label"]["tumor"])

    return training.train(lambda: build_model(student), train_fn, loss_fn, tc, out,
                          val_data=val_fn if val is not None else None, metrics={"auc": auc})


def distill(config: DistillConfig, *, overwrite: bool = False, say: Callable[[str], None] | None = None):
    """Distil the teacher into a small student; writes ``model.keras`` (+ card) and ``run.json``.

    The teacher's tumour probabilities at temperature T are computed once on
    the fixed transfer set (cached, resumable); the student minimises
    ``alpha T^2 KL + (1 - alpha) CE`` (:func:`deepsci.core.compress.distill_loss_fn`)
    on the core loop. ``alpha = 0`` is the hard-label control. A rerun of an
    unfinished run resumes; ``overwrite`` replaces a finished one.

    Returns
    -------
    deepsci.core.training.TrainResult
    """
    from deepsci.core.compress import distill_loss_fn
    from deepsci.core.models.serialization import load_model, save_model

    cfg = config.validate()
    say = say or (lambda line: None)
    teacher = _teacher_card(cfg.distill)
    student = dataclasses.replace(cfg, patch=card_patch(teacher, cfg.patch))
    with RunDir(cfg.out, command="pathology distill", config=cfg,
                inputs=[cfg.slides, cfg.annotations, cfg.val_slides], overwrite=overwrite) as run:
        indices, train, val = _pools(cfg, student, run.path)
        cache_dir = Path(cfg.teacher_cache) if cfg.teacher_cache else run.path / "teacher-cache"
        pools = [train[0]] + ([val[0]] if val is not None else [])
        before = len(list(cache_dir.glob("shard-*.npz")))
        targets, teacher_paths = teacher_targets(cfg.distill, list(_chunks(pools)), app=APP, task=TASK,
                                                 cache_dir=cache_dir, heads=HEADS, batch_size=64)
        computed = len(list(cache_dir.glob("shard-*.npz"))) - before
        probs = targets["tumor"]
        if len(probs) != cfg.patches + (cfg.val_patches if val is not None else 0):
            raise InputError("expected a teacher cache of this transfer set, found one of another size "
                             "(use a new --teacher-cache)", cache_dir)
        soft = {"train": probs[:cfg.patches], "val": probs[cfg.patches:]}
        tc = dataclasses.replace(cfg.train, steps_per_epoch=cfg.patches // cfg.train.batch_size)
        if val is None and tc.monitor.startswith("val_"):
            tc = dataclasses.replace(tc, monitor="loss", mode="min")
        result = _fit(cfg, student, tc, train, val, soft, run.path, distill_loss_fn(HEADS, cfg.distill))
        last = result.history[-1] if result.history else {}
        validation = {(f"{k}_approx" if k == "val_auc" else k): v for k, v in last.items()
                      if k.startswith("val_") and isinstance(v, (int, float))}
        entry = distill_card_entry(
            cfg.distill, teacher_paths,
            data={"slides": str(cfg.slides), "patches": cfg.patches, "val_patches": cfg.val_patches,
                  "teacher_cache": str(cache_dir), "augmentation": "none (the teacher saw the same patches)"},
            student={"variant": cfg.variant, "width": cfg.width, "blocks": list(cfg.blocks)})
        card = model_card(student, training={"command": "pathology distill", "config": config_to_dict(cfg),
                                             "loop": config_to_dict(tc), "distillation": entry,
                                             "precise_batchnorm_batches": cfg.bn_batches},
                          data=_provenance(cfg, indices), metrics={"validation": validation})
        path = run.file(MODEL_NAME)
        save_model(result.model, path, card=card)
        if cfg.bn_batches > 0:
            from deepsci.core.models.batchnorm import precise_batchnorm

            model, _ = load_model(path, expect=APP, task=TASK)
            data = _dataset(*train, soft["train"], batch_size=tc.batch_size, seed=tc.seed + 20_000,
                            epoch=0, shuffle=True)
            precise_batchnorm(model, (x for x, _ in data.take(cfg.bn_batches)))
            save_model(model, path, card=card)
        run.record(steps=result.steps, model=MODEL_NAME, teacher=[str(p) for p in teacher_paths],
                   teacher_shards_computed=int(computed),
                   last_epoch={k: v for k, v in last.items() if isinstance(v, (int, float))})
    say(f"distilled {len(teacher_paths)} teacher model(s) into a width-{cfg.width} student -> {path}")
    return result


def flops_per_patch(model) -> int:
    """Multiply-add FLOPs (2 per MAC) of one example through ``model``, counted by layer.

    Conv2D / DepthwiseConv2D / Dense layers of the (nested) functional model
    from their output shapes; BatchNorm, activations, pooling and
    concatenation are left out (a few % of the total for an Inception).
    """
    import keras

    total = 0

    def walk(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                yield from walk(layer)
            else:
                yield layer

    for layer in walk(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c_out = layer.output.shape
            total += 2 * h * w * int(np.prod(layer.kernel_size)) * c_out
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            c_in = layer.input.shape[-1] // layer.groups
            total += 2 * h * w * int(np.prod(layer.kernel_size)) * c_in * c_out
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * int(layer.input.shape[-1]) * int(layer.units)
    return int(total)
