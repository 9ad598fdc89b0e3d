"""Training of the patch classifier on the deepsci training loop.

The model is the core Inception (:mod:`.model`). Patches are drawn fresh every epoch (seeded by epoch, so a resumed run sees
the same data) and read on the fly from the slides.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.models.batchnorm import precise_batchnorm  # noqa: F401 - re-exported for the app's API
from deepsci.core.training import TrainConfig

from .io import list_slides
from .model import build_model
from .patches import PatchConfig

__all__ = ["PathologyTrainConfig", "find_annotation", "train"]

MODEL_NAME = "model.keras"


@dataclass
class PathologyTrainConfig:
    """Everything ``deepsci pathology train`` needs.

    Attributes
    ----------
    slides : str
        Folder of training slides (``*_Mask.tif`` and heatmaps are skipped).
    annotations : str, optional
        Folder of ``<slide>.xml`` / ``.geojson``; defaults to ``slides``. A slide
        without annotation is a normal (tumour-free) slide.
    val_slides : str, optional
        Folder of validation slides (annotations beside them); when absent,
        validation patches are drawn from the training slides with another seed.
    out_dir : str
    variant : {"small", "v3"}
        Core Inception variant.
    width : int
        Filters per branch of the small Inception.
    patches_per_epoch, val_patches : int
    mpp : float, optional
        Microns per pixel for slides that do not record it.
    bn_batches : int
        Batches of training patches used to re-estimate BatchNorm statistics
        after training (0 turns it off).
    cache_dir : str, optional
        Keep a fixed pool of raw training patches here (read once from the
        slides); epochs then differ only by augmentation.
    """

    slides: str
    out_dir: str
    annotations: str | None = None
    val_slides: str | None = None
    patch: PatchConfig = field(default_factory=PatchConfig)
    variant: str = "small"
    width: int = 16
    blocks: tuple[int, int, int] = (1, 1, 1)
    dropout: float = 0.2
    patches_per_epoch: int = 2048
    val_patches: int = 256
    mpp: float | None = None
    strategy: str = "auto"
    bn_batches: int = 16
    cache_dir: str | None = None
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, batch_size=32,
                                                                   monitor="val_auc", mode="max"))

    def validate(self) -> PathologyTrainConfig:
        self.patch.validate()
        if self.variant not in ("small", "v3"):
            raise ConfigError(f"expected variant 'small' or 'v3', found {self.variant!r}")
        if self.variant == "v3" and self.patch.patch_size < 75:
            raise ConfigError(f"expected patch_size >= 75 for Inception-v3, found {self.patch.patch_size}")
        if self.patches_per_epoch < self.train.batch_size:
            raise ConfigError(f"expected patches_per_epoch >= batch_size ({self.train.batch_size}), "
                              f"found {self.patches_per_epoch}")
        if not Path(self.slides).is_dir():
            raise InputError("expected a folder of slides, found none", self.slides)
        self.train.validate()
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


def _auc_metric():
    import keras

    class TumourAUC(keras.metrics.AUC):
        """Patch AUC of the ``tumor`` head from logits."""

        def update_state(self, y_true, y_pred, sample_weight=None):
            return super().update_state(y_true["tumor"], y_pred["tumor"], sample_weight)

    return TumourAUC(from_logits=True, name="auc")


def _index(folder, annotations, cfg: PathologyTrainConfig):
    from deepsci.core.progress import progress

    from .patches import index_slide

    out = []
    for s in progress(list_slides(folder), desc="index slides", unit="slide"):
        out.append(index_slide(s, find_annotation(s, annotations), cfg.patch, mpp=cfg.mpp))
    return out


def train(config: PathologyTrainConfig):
    """Train the patch classifier; writes ``model.keras`` (+ sidecar) in ``out_dir``.

    Returns
    -------
    deepsci.core.training.TrainResult
    """
    from deepsci.core import training
    from deepsci.core.accelerator import resolve_strategy
    from deepsci.core.io import save_config, write_run_info
    from deepsci.core.models.serialization import save_model

    from .patches import make_dataset

    cfg = config.validate()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.json")
    indices = _index(cfg.slides, cfg.annotations, cfg)
    if not any(i.is_tumour for i in indices):
        raise InputError("expected at least one training slide with tumour annotations "
                         "(<slide>.xml or .geojson), found none", cfg.annotations or cfg.slides)
    val_indices = _index(cfg.val_slides, None, cfg) if cfg.val_slides else indices
    strategy = resolve_strategy(cfg.strategy)
    tc = cfg.train
    steps = cfg.patches_per_epoch // tc.batch_size
    tc.steps_per_epoch = steps

    def per_pipeline(n_global: int):
        def fn(ctx, epoch=0, _n=n_global, _aug=True, _seed=tc.seed):
            per_replica = ctx.get_per_replica_batch_size(tc.batch_size)
            n = _n // ctx.num_input_pipelines
            return make_dataset(indices, cfg.patch, n=n, batch_size=per_replica, seed=_seed, epoch=epoch,
                                shard=ctx.input_pipeline_id, augment_patches=_aug, mpp=cfg.mpp,
                                cache_dir=cfg.cache_dir)
        return fn

    def val_fn(ctx):
        per_replica = ctx.get_per_replica_batch_size(tc.batch_size)
        return make_dataset(val_indices, cfg.patch, n=cfg.val_patches // ctx.num_input_pipelines,
                            batch_size=per_replica, seed=tc.seed + 10_000, epoch=0,
                            shard=ctx.input_pipeline_id, augment_patches=False, mpp=cfg.mpp)

    result = training.train(
        lambda: build_model(cfg), per_pipeline(steps * tc.batch_size), _loss, tc, out,
        val_data=val_fn if cfg.val_patches > 0 else None, metrics={"auc": _auc_metric},
        strategy=strategy)
    last = result.history[-1] if result.history else {}
    sidecar = {
        "app": "pathology",
        "input_spec": {"patch_size": cfg.patch.patch_size,
                       "magnifications": list(cfg.patch.magnifications),
                       "center_size": cfg.patch.center_size, "channels": "RGB"},
        "preprocessing": "uint8 RGB / 127.5 - 1 (Inception range)",
        "output": "tumor: logit of P(tumour in the patch's centre region)",
        "train_config": {"variant": cfg.variant, "width": cfg.width, "blocks": list(cfg.blocks),
                         "epochs": tc.epochs, "batch_size": tc.batch_size,
                         "patches_per_epoch": cfg.patches_per_epoch,
                         "slides": [str(i.path) for i in indices]},
        "metrics": {k: v for k, v in last.items() if isinstance(v, (int, float))},
    }
    save_model(result.model, out / MODEL_NAME, sidecar=sidecar)
    if cfg.bn_batches > 0:
        # A fresh, strategy-free copy: its statistics can be re-estimated eagerly.
        from deepsci.core.models.serialization import load_model

        model, _ = load_model(out / MODEL_NAME)
        data = make_dataset(indices, cfg.patch, n=cfg.bn_batches * tc.batch_size, batch_size=tc.batch_size,
                            seed=tc.seed + 20_000, augment_patches=False, mpp=cfg.mpp)
        precise_batchnorm(model, (x for x, _ in data))
        sidecar["precise_batchnorm_batches"] = cfg.bn_batches
        save_model(model, out / MODEL_NAME, sidecar=sidecar)
    write_run_info(out, command="pathology train", config=cfg)
    return result
