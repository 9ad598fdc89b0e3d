"""``train``: fit the genotype classifier on labelled examples with the core training loop."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import read_json, save_config, write_run_info

from .make_examples import example_files
from .model import HEAD, INPUT_SHAPE, build_model, example_dataset, load_genotype_model

__all__ = ["TrainVariantsConfig", "train_variants", "genotype_loss"]


@dataclass
class TrainVariantsConfig:
    """Options of ``deepsci variants train``."""

    examples: str = ""                    # make-examples folder(s), comma-separated
    out_dir: str = "model"
    val_examples: str | None = None
    variant: str = "small"                # small | v3
    width: int = 16
    warm_start: str | None = None         # an earlier model.keras (or its folder)
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    seed: int = 0
    strategy: str = "auto"
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        if not self.examples:
            raise ConfigError("expected --examples, found none")
        if self.variant not in ("small", "v3"):
            raise ConfigError(f"expected --model-variant small or v3, found {self.variant!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"expected epochs and batch size >= 1, found {self.epochs} and "
                              f"{self.batch_size}")


def genotype_loss(y_true, y_pred):
    """Per-example softmax cross-entropy of the genotype head, shape (B,)."""
    import keras

    logits = y_pred[HEAD] if isinstance(y_pred, dict) else y_pred
    return keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)


class _Accuracy:
    """Genotype accuracy over dict outputs (the loop passes the whole y_pred)."""

    def __init__(self):
        import keras
        self.m = keras.metrics.SparseCategoricalAccuracy()

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.m.update_state(y_true, y_pred[HEAD] if isinstance(y_pred, dict) else y_pred,
                            sample_weight=sample_weight)

    def result(self):
        return self.m.result()

    def reset_state(self):
        self.m.reset_state()


def _check_training_examples(paths: str) -> list[Path]:
    """Example shards of one or more (comma-separated) labelled make-examples outputs."""
    files = []
    for path in [p for p in str(paths).split(",") if p]:
        files += example_files(path)
        info = Path(path) / "examples_info.json" if Path(path).is_dir() else None
        if info is not None and info.exists() and not read_json(info).get("training", True):
            raise InputError("expected examples made with --truth-vcf (labelled), found "
                             "calling-mode examples", path)
    return files


def train_variants(config: TrainVariantsConfig) -> dict:
    """Train (or warm-start and continue training) a genotype model; saves ``model.keras``.

    Returns the history, the best monitored value and the saved model path.
    """
    from deepsci.core.accelerator import resolve_strategy
    from deepsci.core.models.serialization import save_model
    from deepsci.core.training import TrainConfig, train

    config.validate()
    files = _check_training_examples(config.examples)
    val_files = _check_training_examples(config.val_examples) if config.val_examples else None
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    strategy = resolve_strategy(config.strategy)

    def builder():
        if config.warm_start:
            model, _ = load_genotype_model(config.warm_start)
            return model
        return build_model(config.variant, width=config.width) if config.variant == "small" \
            else build_model(config.variant)

    tcfg = TrainConfig(epochs=config.epochs, batch_size=config.batch_size,
                       learning_rate=config.learning_rate, lr_schedule=config.lr_schedule,
                       warmup_steps=config.warmup_steps, seed=config.seed,
                       monitor="val_loss" if val_files else "loss", clip_norm=5.0,
                       checkpoint_every=200)
    def train_ds(ctx):
        # Per-replica batches: an uneven split of a ragged *global* batch across replicas
        # fails in BatchNormalization under MirroredStrategy; whole per-replica batches
        # (the last one padded by the core loop) do not.
        return example_dataset(files, batch_size=ctx.get_per_replica_batch_size(
            config.batch_size), training=True, seed=config.seed)
    val_ds = (example_dataset(val_files, batch_size=config.batch_size, training=False,
                              labelled_only=True) if val_files else None)
    t0 = time.time()
    res = train(builder, train_ds, genotype_loss, tcfg, out / "train", val_data=val_ds,
                metrics={"accuracy": _Accuracy}, strategy=strategy)
    sidecar = {
        "app": "variants",
        "input_spec": {"shape": list(INPUT_SHAPE), "dtype": "uint8",
                       "channels": "read_base,base_quality,mapping_quality,strand,"
                                   "read_supports_variant,base_differs_from_ref,insert_size"},
        "preprocessing": "x / 127 - 1 inside the model",
        "classes": ["hom_ref", "het", "hom_alt"],
        "variant": config.variant,
        "train_config": {"epochs": config.epochs, "batch_size": config.batch_size,
                         "learning_rate": config.learning_rate,
                         "warm_start": config.warm_start},
        "metrics": res.history[-1] if res.history else {},
    }
    model_path = out / "model.keras"
    save_model(res.model, model_path, sidecar=sidecar)
    save_config(config, out / "config.json")
    write_run_info(out, command="variants train", config=config)
    return {"model": str(model_path), "history": res.history, "best": res.best,
            "steps": res.steps, "seconds": time.time() - t0}
