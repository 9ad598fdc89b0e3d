"""What a training run is asked to do (:class:`TrainConfig`) and what it returns."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:  # annotations only: importing the config must not load TensorFlow
    import keras

__all__ = ["TrainConfig", "TrainResult", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "exponential", "step")


def _opt(default, text: str, **extra):
    """A dataclass field whose metadata the CLI turns into an option."""
    return field(default=default, metadata={"help": text, **extra})


@dataclass
class TrainConfig:
    """How to train; saved next to every trained model.

    Attributes
    ----------
    epochs : int
        Passes over the data (or of ``steps_per_epoch`` steps each).
    steps_per_epoch : int, optional
        Steps per epoch; ``None`` means one pass over the training data.
    batch_size : int
        Global batch size, summed over all replicas.
    optimizer : {"adam", "adamw", "sgd"}
    learning_rate : float
        Peak learning rate (CLI option ``--lr``).
    lr_schedule : {"constant", "cosine", "exponential", "step"}
        Decay after ``warmup_steps`` of linear warm-up; ``exponential`` and
        ``step`` multiply by ``decay_rate`` every ``decay_steps`` (``step``
        in whole stairs).
    clip_norm : float, optional
        Clip the all-reduced gradient to this global norm.
    seed : int
        Seeds weights, dropout and data order.
    deterministic : bool
        Ask TensorFlow for deterministic kernels (slower on GPU).
    jit_compile : bool
        Compile the train step with XLA; the same as
        ``AcceleratorConfig(xla=True)``, kept so that saved configs still load.
    checkpoint_every : int
        Steps between checkpoints; one is also written at every epoch end.
    monitor, mode, patience
        Early stopping on a validation quantity (``val_loss`` or
        ``val_<metric>``), ``min`` or ``max``; ``patience=None`` never stops early.
    restore_best : bool
        End with the weights of the best validation epoch.
    """

    epochs: int = _opt(10, "Training epochs.")
    steps_per_epoch: int | None = _opt(None, "Steps per epoch (default: one pass over the data).")
    batch_size: int = _opt(32, "Global batch size (all replicas together).")
    optimizer: str = _opt("adam", "adam, adamw or sgd.")
    learning_rate: float = _opt(1e-3, "Peak learning rate.", cli="lr")
    lr_schedule: str = _opt("constant", "constant, cosine, exponential or step.")
    warmup_steps: int = _opt(0, "Steps of linear learning-rate warm-up.")
    decay_rate: float = _opt(0.5, "Factor per decay_steps (exponential, step).")
    decay_steps: int | None = _opt(None, "Steps per decay (default: a quarter of the run).")
    weight_decay: float = _opt(0.0, "Decoupled weight decay (adamw).")
    clip_norm: float | None = _opt(None, "Clip the all-reduced gradient to this global norm.")
    seed: int = _opt(0, "Seed of weights, dropout and data order.")
    deterministic: bool = _opt(False, "Deterministic kernels (slower on GPU).")
    jit_compile: bool = _opt(False, "Compile the train step with XLA (as --xla).")
    checkpoint_every: int = _opt(100, "Steps between checkpoints (also at every epoch end).")
    keep_checkpoints: int = _opt(3, "Checkpoints kept.")
    monitor: str = _opt("val_loss", "Quantity for early stopping and best weights.")
    mode: str = _opt("min", "min or max of the monitored quantity.")
    patience: int | None = _opt(None, "Epochs without improvement before stopping.")
    restore_best: bool = _opt(True, "End with the best epoch's weights.")
    tensorboard: bool = _opt(True, "Write TensorBoard scalars.")
    progress: bool = _opt(True, "Show a progress bar.")

    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` for impossible values; return self."""
        # Named as the user types them (the CLI spells each field from its name or "cli").
        opt = {f.name: "--" + f.metadata.get("cli", f.name.replace("_", "-"))
               for f in dataclasses.fields(self)}
        checks = [
            (self.epochs >= 1, "epochs", ">= 1", self.epochs),
            (self.batch_size >= 1, "batch_size", ">= 1", self.batch_size),
            (self.learning_rate > 0, "learning_rate", "> 0", self.learning_rate),
            (self.optimizer in OPTIMIZERS, "optimizer", f"in {OPTIMIZERS}", self.optimizer),
            (self.lr_schedule in SCHEDULES, "lr_schedule", f"in {SCHEDULES}", self.lr_schedule),
            (self.mode in ("min", "max"), "mode", "'min' or 'max'", self.mode),
            (self.checkpoint_every >= 1, "checkpoint_every", ">= 1", self.checkpoint_every),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1, "steps_per_epoch",
             ">= 1 or unset", self.steps_per_epoch),
            (self.clip_norm is None or self.clip_norm > 0, "clip_norm", "> 0 or unset",
             self.clip_norm),
        ]
        for ok, name, what, found in checks:
            if not ok:
                raise ConfigError(f"expected {opt[name]} {what}, found {found!r}")
        return self


@dataclass
class TrainResult:
    """What :func:`deepsci.core.training.train` returns.

    Attributes
    ----------
    model : keras.Model
        The trained model (best weights when ``restore_best``).
    history : list of dict
        One record per epoch: ``epoch``, ``step``, ``loss``, metrics,
        ``val_*``, ``lr`` and ``seconds``.
    best : float, optional
        Best value of the monitored quantity.
    steps : int
        Global steps taken, resumed ones included.
    out_dir : Path, optional
    """

    model: keras.Model
    history: list[dict] = field(default_factory=list)
    best: float | None = None
    steps: int = 0
    out_dir: Path | None = None
