"""Training of the patch classifier on the deepsci training loop.

The model is the core Inception (:mod:`.model`). Patches are drawn fresh every
epoch (seeded by epoch, so a resumed run sees the same data) and read on the
fly from the slides. The output folder holds ``model.keras`` with its card
(``model.card.json``), the loop's checkpoints and history, and one ``run.json``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from deepsci.core.accelerator import AcceleratorConfig
from deepsci.core.config import check_choice, check_ranges, option
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import config_to_dict
from deepsci.core.runs import RunDir, read_run
from deepsci.core.training import TrainConfig

from .io import list_slides
from .model import APP, TASK, build_model, model_card
from .patches import PatchConfig, index_slide, make_dataset

__all__ = ["PathologyTrainConfig", "VARIANTS", "find_annotation", "run_train"]

MODEL_NAME = "model.keras"
VARIANTS = ("small", "v3")


def _train_defaults() -> TrainConfig:
    return TrainConfig(epochs=5, batch_size=32, monitor="val_auc", mode="max")


@dataclass
class PathologyTrainConfig:
    """Everything ``deepsci pathology train`` needs (recorded in ``run.json``).

    Attributes
    ----------
    slides : str
        Folder of training slides (``*_Mask.tif`` and heatmaps are skipped).
    out : str
        Output folder: ``model.keras`` and its card, checkpoints; a rerun resumes.
    annotations : str, optional
        Folder of ``<slide>.xml`` / ``.geojson``; defaults to ``slides``. A slide
        without annotation is a normal (tumour-free) slide.
    val_slides : str, optional
        Folder of validation slides (annotations beside them); when absent,
        validation patches are drawn from the training slides with another seed.
    patch : PatchConfig
        Patch size, magnifications (one tower each) and label centre.
    variant : {"small", "v3"}
        Core Inception variant.
    width : int
        Filters per branch of the small Inception.
    blocks : tuple of int
        Mixed blocks per stage of the small Inception.
    dropout : float
    patches_per_epoch, val_patches : int
        Training patches drawn per epoch; validation patches (0: no validation,
        the best epoch follows the training loss).
    mpp : float, optional
        Microns per pixel for slides that do not record it.
    bn_batches : int
        Batches of training patches used to re-estimate BatchNorm statistics
        after training (0 turns it off).
    cache_dir : str, optional
        Keep a fixed pool of raw training patches here (read once from the
        slides); epochs then differ only by augmentation.
    train : TrainConfig
        The core loop's settings (epochs, batch size, learning rate, seed ...).
    accel : AcceleratorConfig
        Where and in which precision to train (``--strategy``, ``--precision``, ``--xla``).
    """

    slides: str = option(help="Folder of training slides.")
    out: str = option(help="Output folder (model.keras, checkpoints).")
    annotations: str | None = option(None, "Folder of <slide>.xml (ASAP) / .geojson (QuPath); "
                                     "default: --slides.")
    val_slides: str | None = option(None, "Folder of validation slides.")
    patch: PatchConfig = option(factory=PatchConfig)
    variant: str = option("small", "Inception variant: small or v3.", choices=VARIANTS)
    width: int = option(16, "Filters per branch (small Inception).", min=1)
    blocks: tuple[int, int, int] = option((1, 1, 1), "Mixed blocks per stage (small Inception).", min=1)
    dropout: float = option(0.2, "Dropout before the head.", min=0, max=0.99)
    patches_per_epoch: int = option(2048, "Training patches per epoch.", min=1)
    val_patches: int = option(256, "Validation patches (0: none).", min=0)
    mpp: float | None = option(None, "Microns per pixel at level 0, for slides that do not record "
                               "it.", min=0, min_exclusive=True)
    bn_batches: int = option(16, "Batches that re-estimate BatchNorm statistics after training.", min=0)
    cache_dir: str | None = option(None, "Cache a fixed pool of raw patches here (read once; epochs "
                                   "differ by augmentation).", cli="cache")
    train: TrainConfig = option(factory=_train_defaults)
    accel: AcceleratorConfig = option(factory=AcceleratorConfig)

    def validate(self) -> PathologyTrainConfig:
        """Raise ConfigError / InputError for impossible settings or missing slides; return self."""
        self.patch.validate()
        self.train.validate()
        self.accel.validate()
        check_ranges(self)
        check_choice("--variant", self.variant, VARIANTS)
        if len(self.blocks) != 3:
            raise ConfigError(f"expected --blocks as three integers, found {self.blocks}")
        if self.variant == "v3" and self.patch.patch_size < 75:
            raise ConfigError(f"expected --patch-size >= 75 for Inception-v3, found {self.patch.patch_size}")
        if self.patches_per_epoch < self.train.batch_size:
            raise ConfigError(f"expected --patches-per-epoch >= --batch-size ({self.train.batch_size}), "
                              f"found {self.patches_per_epoch}")
        if not Path(self.slides).is_dir():
            raise InputError("expected a folder of slides, found none", self.slides)
        return self


def find_annotation(slide: Path, folder: str | Path | None) -> Path | None:
    """``<folder>/<slide stem>.xml`` or ``.geojson``, if present."""
    folder = Path(folder) if folder else slide.parent
    for suf in (".xml", ".geojson", ".json"):
        p = folder / f"{slide.stem}{suf}"
        if p.is_file():
            return p
    return None


def _loss(y, y_pred):
    import keras

    return keras.losses.binary_crossentropy(y["tumor"], y_pred["tumor"], from_logits=True)


def _auc_metric(label=None):
    """Keras' patch AUC of the ``tumor`` head; ``label(y_true)`` picks the hard labels
    (default ``y_true["tumor"]``; distillation's targets nest them under ``"label"``)."""
    import keras

    pick = label or (lambda y: y["tumor"])

    class TumourAUC(keras.metrics.AUC):
        """Patch AUC of the ``tumor`` head from logits."""

        def update_state(self, y_true, y_pred, sample_weight=None):
            return super().update_state(pick(y_true), y_pred["tumor"], sample_weight)

    return TumourAUC(from_logits=True, name="auc")


def _index(folder, annotations, cfg: PathologyTrainConfig):
    from deepsci.core.progress import progress

    out = []
    for s in progress(list_slides(folder), desc="index slides", unit="slide"):
        out.append(index_slide(s, find_annotation(s, annotations), cfg.patch, mpp=cfg.mpp))
    return out


def _loop_config(cfg: PathologyTrainConfig) -> TrainConfig:
    """The core loop's settings for this run (the recorded config is left as given)."""
    tc = cfg.train
    if not cfg.val_patches and tc.monitor.startswith("val_"):
        # no validation patches: early stopping and the best epoch follow the training loss
        tc = dataclasses.replace(tc, monitor="loss", mode="min")
    return dataclasses.replace(tc, steps_per_epoch=cfg.patches_per_epoch // tc.batch_size)


def _fit(cfg: PathologyTrainConfig, tc: TrainConfig, indices: list, out: Path):
    """The core loop over freshly drawn patches; returns its TrainResult."""
    from deepsci.core import training
    from deepsci.core.accelerator import setup

    strategy = setup(cfg.accel)
    val_indices = _index(cfg.val_slides, None, cfg) if cfg.val_slides else indices

    def train_fn(ctx, epoch=0):
        per_replica = ctx.get_per_replica_batch_size(tc.batch_size)
        n = tc.steps_per_epoch * tc.batch_size // ctx.num_input_pipelines
        return make_dataset(indices, cfg.patch, n=n, batch_size=per_replica, seed=tc.seed, epoch=epoch,
                            shard=ctx.input_pipeline_id, augment_patches=True, mpp=cfg.mpp,
                            cache_dir=cfg.cache_dir)

    def val_fn(ctx):
        per_replica = ctx.get_per_replica_batch_size(tc.batch_size)
        return make_dataset(val_indices, cfg.patch, n=cfg.val_patches // ctx.num_input_pipelines,
                            batch_size=per_replica, seed=tc.seed + 10_000, epoch=0,
                            shard=ctx.input_pipeline_id, augment_patches=False, mpp=cfg.mpp)

    return training.train(lambda: build_model(cfg), train_fn, _loss, tc, out,
                          val_data=val_fn if cfg.val_patches > 0 else None, metrics={"auc": _auc_metric},
                          strategy=strategy)


def _provenance(cfg: PathologyTrainConfig, indices: list) -> dict:
    record = Path(cfg.slides) / "run.json"
    synthetic = False
    if record.is_file():
        try:
            synthetic = read_run(record).get("command") == "pathology synth"
        except InputError:
            pass  # a foreign run.json says nothing about the slides
    return {"name": Path(cfg.slides).resolve().name, "files": [str(i.path) for i in indices],
            "synthetic": synthetic, "seeds": {"train": cfg.train.seed},
            "validation": "val_slides" if cfg.val_slides else "other patches of the training slides"}


def run_train(config: PathologyTrainConfig, *, overwrite: bool = False):
    """Train the patch classifier; writes ``model.keras`` (+ card) and ``run.json`` in ``out``.

    A rerun of an unfinished run resumes from its checkpoints; ``overwrite``
    replaces a finished one.

    Returns
    -------
    deepsci.core.training.TrainResult
    """
    from deepsci.core.models.serialization import load_model, save_model

    cfg = config.validate()
    with RunDir(cfg.out, command="pathology train", config=cfg,
                inputs=[cfg.slides, cfg.annotations, cfg.val_slides], overwrite=overwrite) as run:
        indices = _index(cfg.slides, cfg.annotations, cfg)
        if not any(i.is_tumour for i in indices):
            raise InputError("expected at least one training slide with tumour annotations "
                             "(<slide>.xml or .geojson), found none", cfg.annotations or cfg.slides)
        tc = _loop_config(cfg)
        result = _fit(cfg, tc, indices, run.path)
        last = result.history[-1] if result.history else {}
        # keras.metrics.AUC sums 200 thresholds: an approximation, named so in the card (the
        # exact patch AUC is release/demo's sklearn one).
        validation = {(f"{k}_approx" if k == "val_auc" else k): v for k, v in last.items()
                      if k.startswith("val_") and isinstance(v, (int, float))}
        card = model_card(cfg, training={"command": "pathology train", "config": config_to_dict(cfg),
                                         "loop": config_to_dict(tc), "precise_batchnorm_batches": cfg.bn_batches},
                          data=_provenance(cfg, indices), metrics={"validation": validation})
        path = run.file(MODEL_NAME)
        save_model(result.model, path, card=card)
        if cfg.bn_batches > 0:
            # A fresh, strategy-free copy: its statistics can be re-estimated eagerly.
            model, _ = load_model(path, expect=APP, task=TASK)
            data = make_dataset(indices, cfg.patch, n=cfg.bn_batches * tc.batch_size, batch_size=tc.batch_size,
                                seed=tc.seed + 20_000, augment_patches=False, mpp=cfg.mpp)
            from deepsci.core.models.batchnorm import precise_batchnorm  # loads Keras

            precise_batchnorm(model, (x for x, _ in data))
            save_model(model, path, card=card)
        run.record(steps=result.steps, model=MODEL_NAME,
                   last_epoch={k: v for k, v in last.items() if isinstance(v, (int, float))})
    return result
