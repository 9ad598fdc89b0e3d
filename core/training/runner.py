"""The training run: strategy, model and optimizer, resume, epochs, best weights."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from ..accelerator import AcceleratorConfig, current, resolve_strategy, set_precision, setup
from ..errors import ConfigError
from ..io import write_json
from ..progress import progress
from .checkpoint import Checkpoints
from .config import TrainConfig, TrainResult
from .data import count_steps
from .loop import EpochRunner, Loop
from .schedules import make_optimizer

__all__ = ["train"]


def _strategy_and_xla(cfg: TrainConfig, strategy, accelerator: AcceleratorConfig | None):
    """The strategy to run on and whether to compile; sets the precision policy first."""
    if accelerator is not None and strategy is None:
        strategy = setup(accelerator)
    elif accelerator is not None:
        set_precision(accelerator.validate().precision, strategy)
    acc = accelerator or current()
    strategy = strategy or resolve_strategy(acc.strategy, logical_cpus=acc.logical_cpus)
    return strategy, bool(cfg.jit_compile or acc.xla)


def _outputs(out_dir: Path, cfg: TrainConfig, chief: bool):
    """Only the chief writes TensorBoard logs (the config is recorded once, in the run's run.json)."""
    if chief:
        out_dir.mkdir(parents=True, exist_ok=True)
    return (tf.summary.create_file_writer(str(out_dir / "tensorboard"))
            if cfg.tensorboard and chief else tf.summary.create_noop_writer())


def _build(build_model, cfg: TrainConfig, strategy, total_steps: int):
    """Model and optimizer, created inside the strategy's scope under the current policy."""
    with strategy.scope():
        model = build_model()
        optimizer = make_optimizer(cfg, total_steps)
        optimizer.build(model.trainable_variables)
    return model, optimizer


def _total_steps(cfg: TrainConfig, strategy, train_data) -> int:
    steps_per_epoch = cfg.steps_per_epoch or count_steps(strategy, train_data)
    if steps_per_epoch < 1:
        raise ConfigError("expected at least one training batch, found an empty dataset")
    return steps_per_epoch * cfg.epochs


def _finish(runner: EpochRunner, ckpts: Checkpoints, cfg: TrainConfig, out_dir: Path) -> None:
    """End with the best weights when asked; the chief writes the history."""
    if cfg.restore_best and runner.best_weights is not None:
        runner.loop.model.set_weights(runner.best_weights)
    elif cfg.restore_best and runner.best is not None:
        ckpts.restore_best()  # resumed after the best epoch: every worker reads the chief's copy
    if ckpts.chief:
        write_json(out_dir / "history.json", runner.history)


def train(build_model: Callable[[], keras.Model], train_data, loss_fn: Callable, config: TrainConfig,
          out_dir: str | os.PathLike, *, val_data=None, metrics: dict[str, Callable] | None = None,
          strategy=None, forward: Callable | None = None,
          accelerator: AcceleratorConfig | None = None) -> TrainResult:
    """Train a model with the deepsci distributed loop; resumes from ``out_dir``'s checkpoints.

    Parameters
    ----------
    build_model : callable
        Returns a new, built ``keras.Model``; called inside ``strategy.scope()``.
    train_data, val_data : DataSource
        Batched ``(x, y[, sample_weight])`` datasets or ``fn(ctx[, epoch])`` (:mod:`.data`).
    loss_fn : callable
        ``loss_fn(y_true, y_pred)`` -> per-example loss, shape (B,); ``y_pred`` is float32.
    config : TrainConfig
    out_dir : path
        ``checkpoints/``, ``best/``, ``tensorboard/`` and ``history.json`` (the
        chief's only); an existing checkpoint is resumed. The resolved config is
        recorded by the caller's :class:`~deepsci.core.runs.RunDir`, not here.
    metrics : dict of name -> factory of a Keras metric, optional
    strategy : tf.distribute.Strategy, optional
        Overrides the accelerator's strategy.
    forward : callable, optional
        ``forward(model, x, training)`` when the model is not simply ``model(x)``.
    accelerator : AcceleratorConfig, optional
        Passed to :func:`~deepsci.core.accelerator.setup`; default: the current
        one. Its ``xla`` (or ``config.jit_compile``) compiles the step.

    Returns
    -------
    TrainResult
    """
    cfg, out_dir = config.validate(), Path(out_dir)
    strategy, xla = _strategy_and_xla(cfg, strategy, accelerator)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    total_steps = _total_steps(cfg, strategy, train_data)
    model, optimizer = _build(build_model, cfg, strategy, total_steps)
    # Bookkeeping and metrics live on the host, outside the strategy: they are
    # updated eagerly from reduced values, and strings cannot be mirrored.
    loop = Loop(model, optimizer, loss_fn, strategy, forward=forward, want_outputs=bool(metrics), xla=xla)
    ckpts = Checkpoints(model=model, optimizer=optimizer, state=loop.variables(), out_dir=out_dir,
                        strategy=strategy, keep=cfg.keep_checkpoints)
    ckpts.restore()
    writer = _outputs(out_dir, cfg, ckpts.chief)
    runner = EpochRunner(loop, ckpts, cfg, writer=writer, metrics=tuple(
        {k: f() for k, f in (metrics or {}).items()} for _ in range(2)),
        bar=progress(total=total_steps, desc="train", unit="step", initial=int(loop.step.numpy()),
                     disable=None if (cfg.progress and ckpts.chief) else True))
    try:
        runner.run(train_data, val_data)
    finally:
        runner.bar.close()
        writer.flush()
        ckpts.close()
    _finish(runner, ckpts, cfg, out_dir)
    return TrainResult(model=model, history=runner.history, best=runner.best,
                       steps=int(loop.step.numpy()), out_dir=out_dir)
