"""One distributed training loop for every deepsci model.

Keras 3's ``Model.fit`` fails under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585), so deepsci trains with a plain custom loop:
``strategy.run`` on distributed datasets, losses scaled by the global number
of examples, gradients all-reduced and then clipped, and checkpoints that
make a killed run resume to the same weights as an uninterrupted one.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .accelerator import is_chief, resolve_strategy
from .errors import ConfigError
from .io import config_to_dict, write_json
from .progress import progress

__all__ = ["TrainConfig", "TrainResult", "train"]

_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULES = ("constant", "cosine", "exponential", "step")


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
        Peak learning rate.
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
    checkpoint_every : int
        Steps between checkpoints; one is also written at every epoch end.
    monitor, mode, patience
        Early stopping on a validation quantity (``val_loss`` or
        ``val_<metric>``), ``min`` or ``max``; ``patience=None`` never stops early.
    restore_best : bool
        End with the weights of the best validation epoch.
    """

    epochs: int = 10
    steps_per_epoch: int | None = None
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    decay_rate: float = 0.5
    decay_steps: int | None = None
    weight_decay: float = 0.0
    clip_norm: float | None = None
    seed: int = 0
    deterministic: bool = False
    jit_compile: bool = False
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    monitor: str = "val_loss"
    mode: str = "min"
    patience: int | None = None
    restore_best: bool = True
    tensorboard: bool = True
    progress: bool = True

    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` for impossible values; return self."""
        checks = [
            (self.epochs >= 1, "epochs >= 1", self.epochs),
            (self.batch_size >= 1, "batch_size >= 1", self.batch_size),
            (self.learning_rate > 0, "learning_rate > 0", self.learning_rate),
            (self.optimizer in _OPTIMIZERS, f"optimizer in {_OPTIMIZERS}", self.optimizer),
            (self.lr_schedule in _SCHEDULES, f"lr_schedule in {_SCHEDULES}", self.lr_schedule),
            (self.mode in ("min", "max"), "mode 'min' or 'max'", self.mode),
            (self.checkpoint_every >= 1, "checkpoint_every >= 1", self.checkpoint_every),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1,
             "steps_per_epoch >= 1 or None", self.steps_per_epoch),
            (self.clip_norm is None or self.clip_norm > 0, "clip_norm > 0 or None", self.clip_norm),
        ]
        for ok, what, found in checks:
            if not ok:
                raise ConfigError(f"expected {what}, found {found!r}")
        return self


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: keras.Model
    history: list[dict] = field(default_factory=list)
    best: float | None = None
    steps: int = 0
    out_dir: Path | None = None


@keras.saving.register_keras_serializable(package="deepsci")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to the wrapped schedule's value at ``warmup_steps``."""

    def __init__(self, after, warmup_steps: int):
        if warmup_steps < 0:
            raise ValueError(f"Expected warmup_steps >= 0. Received: warmup_steps={warmup_steps}")
        self.after = after
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = tf.cast(max(self.warmup_steps, 1), tf.float32)
        after = self.after(step - warm) if callable(self.after) else tf.constant(self.after, tf.float32)
        ramp = tf.minimum((step + 1.0) / warm, 1.0)
        return tf.where(step < warm, after * ramp, after) if self.warmup_steps else after

    def get_config(self):
        after = (keras.saving.serialize_keras_object(self.after)
                 if callable(self.after) else float(self.after))
        return {"after": after, "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        after = config["after"]
        if isinstance(after, dict):
            after = keras.saving.deserialize_keras_object(after)
        return cls(after, config["warmup_steps"])


def _schedule(cfg: TrainConfig, total_steps: int):
    lr = cfg.learning_rate
    decay_steps = cfg.decay_steps or max(total_steps // 4, 1)
    if cfg.lr_schedule == "constant":
        after = lr
    elif cfg.lr_schedule == "cosine":
        after = keras.optimizers.schedules.CosineDecay(lr, max(total_steps - cfg.warmup_steps, 1))
    else:
        after = keras.optimizers.schedules.ExponentialDecay(
            lr, decay_steps, cfg.decay_rate, staircase=cfg.lr_schedule == "step")
    if cfg.warmup_steps:
        return WarmupSchedule(after, cfg.warmup_steps)
    return after


def _clip_after_all_reduce(optimizer, clip_norm: float) -> None:
    """Clip the gradient by its global norm after the cross-replica sum.

    Keras clips (``global_clipnorm``) each replica's partial gradient before
    its all-reduce, which is not the norm of the gradient actually applied.
    Wrapping the optimizer's own reduction keeps a single collective and clips
    the summed gradient, so clipping is the same on 1 or N replicas.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    reduce = inner._all_reduce_sum_gradients

    def reduce_then_clip(grads_and_vars):
        pairs = [(g, v) for g, v in reduce(grads_and_vars) if g is not None]
        clipped, _ = tf.clip_by_global_norm([g for g, _ in pairs], clip_norm)
        return list(zip(clipped, [v for _, v in pairs], strict=True))

    inner._all_reduce_sum_gradients = reduce_then_clip


def _optimizer(cfg: TrainConfig, total_steps: int):
    lr = _schedule(cfg, total_steps)
    if cfg.optimizer == "adam":
        opt = keras.optimizers.Adam(lr)
    elif cfg.optimizer == "adamw":
        opt = keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay or 1e-4)
    else:
        opt = keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    if cfg.clip_norm:
        _clip_after_all_reduce(opt, cfg.clip_norm)
    if keras.mixed_precision.dtype_policy().name == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


# ---------------------------------------------------------------- data


def _accepts_epoch(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "epoch" in params or len(params) >= 2


def _pipelines(strategy) -> tuple[int, int, int]:
    """(number of input pipelines, this worker's pipeline id, replicas on this worker)."""
    local = max(len(getattr(strategy.extended, "worker_devices", ()) or ()), 1)
    pipelines = max(strategy.num_replicas_in_sync // local, 1)
    resolver = getattr(strategy, "cluster_resolver", None)
    task_id = getattr(resolver, "task_id", 0) or 0 if pipelines > 1 else 0
    return pipelines, task_id, local


def _with_weights(ds):
    def add(*element):
        if len(element) == 3:
            return element
        x, y = element
        return x, y, tf.ones([tf.shape(tf.nest.flatten(y)[0])[0]], tf.float32)
    return ds.map(add)


def _pad_to_replicas(ds, batches: int, local: int):
    """Append zero-weight copies of a batch so every step feeds every local replica.

    Without this, a ragged last step hands some replicas an empty batch,
    which layers such as BatchNormalization cannot take.
    """
    rem = batches % local
    if local == 1 or rem == 0 or batches == 0:
        return ds
    ds = _with_weights(ds)
    pad = ds.take(1).map(lambda x, y, w: (x, y, tf.zeros_like(w))).repeat(local - rem)
    return ds.concatenate(pad)


def _make(source, ctx, epoch):
    return source(ctx, epoch=epoch) if _accepts_epoch(source) else source(ctx)


def _epoch_data(strategy, source, epoch: int, skip: int, steps: int | None):
    """The distributed dataset of one epoch with ``skip`` global steps already consumed."""
    if isinstance(source, tf.data.Dataset):
        ds = source.repeat().take(steps) if steps else source
        return strategy.experimental_distribute_dataset(ds.skip(skip))
    _, _, local = _pipelines(strategy)

    def per_replica(ctx):
        ds = _make(source, ctx, epoch)
        if steps:
            ds = ds.repeat().take(steps * local)
        else:
            ds = _pad_to_replicas(ds, _cardinality(ds), local)
        # Each global step takes one per-replica batch for every local replica.
        return ds.skip(skip * local)

    return strategy.distribute_datasets_from_function(per_replica)


def _cardinality(ds) -> int:
    n = int(ds.cardinality())
    if n < 0:
        n = int(ds.reduce(np.int64(0), lambda c, _: c + 1))
    return n


def _count_steps(strategy, source) -> int:
    """Global steps in one pass over ``source`` on this worker."""
    if isinstance(source, tf.data.Dataset):
        return _cardinality(source)
    pipelines, task_id, local = _pipelines(strategy)
    ctx = tf.distribute.InputContext(pipelines, task_id, strategy.num_replicas_in_sync)
    return -(-_cardinality(_make(source, ctx, 0)) // local)


def _unpack(batch):
    if isinstance(batch, (tuple, list)):
        if len(batch) == 3:
            return batch
        if len(batch) == 2:
            return batch[0], batch[1], None
    raise ValueError(
        f"Expected dataset elements (x, y) or (x, y, sample_weight). Received: {type(batch).__name__}"
        f" of length {len(batch) if hasattr(batch, '__len__') else '?'}")


# ---------------------------------------------------------------- loop


class _Loop:
    """The compiled steps and the state that checkpoints hold."""

    def __init__(self, model, optimizer, loss_fn, forward, strategy, cfg, *, want_outputs: bool):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        # Gather labels and predictions across replicas only when metrics need them.
        self.want_outputs = want_outputs
        self.forward = forward or (lambda m, x, training: m(x, training=training))
        self.strategy, self.cfg = strategy, cfg
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        # History and early-stopping state travel inside the checkpoint so that
        # they can never disagree with the weights they describe.
        self.state = tf.Variable("{}", dtype=tf.string, trainable=False, name="loop_state")
        self.epoch_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="epoch_sum")
        self.epoch_n = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="epoch_n")
        # reduce_retracing: graph batches change shape every step.
        self.train_step = tf.function(self._train_step, reduce_retracing=True)
        self.eval_step = tf.function(self._eval_step, reduce_retracing=True)
        self._sum = _Once(self._sum_fn)
        self._gather = _Once(self._gather_fn, to_numpy=False)

    def _losses(self, x, y, w, training):
        y_pred = self.forward(self.model, x, training)
        per_example = tf.cast(tf.reshape(self.loss_fn(y, y_pred), [-1]), tf.float32)
        w = tf.ones_like(per_example) if w is None else tf.cast(tf.reshape(w, [-1]), tf.float32)
        return y_pred, tf.reduce_sum(per_example * w), tf.reduce_sum(w)

    @staticmethod
    def _weight_sum(y, w):
        if w is not None:
            return tf.reduce_sum(tf.cast(w, tf.float32))
        first = tf.nest.flatten(y)[0]
        return tf.cast(tf.shape(first)[0], tf.float32)

    def _replica_train(self, batch):
        x, y, w = _unpack(batch)
        ctx = tf.distribute.get_replica_context()
        # The global example count is reduced before the tape so that no
        # collective op is differentiated (replicas would order them differently).
        global_n = tf.stop_gradient(ctx.all_reduce(tf.distribute.ReduceOp.SUM, self._weight_sum(y, w)))
        with tf.GradientTape() as tape:
            y_pred, local_sum, local_n = self._losses(x, y, w, True)
            loss = local_sum / tf.maximum(global_n, 1e-12)
            if self.model.losses:
                loss += tf.add_n(self.model.losses) / self.strategy.num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return tf.stack([local_sum, local_n]), y, y_pred, w

    def _train_step(self, batch):
        return self.strategy.run(self._replica_train, args=(batch,))

    def _replica_eval(self, batch):
        x, y, w = _unpack(batch)
        y_pred, local_sum, local_n = self._losses(x, y, w, False)
        return tf.stack([local_sum, local_n]), y, y_pred, w

    def _eval_step(self, batch):
        return self.strategy.run(self._replica_eval, args=(batch,))

    def reduce(self, outputs):
        """Global (loss sum, count) and, when metrics need them, gathered outputs.

        Each collective runs in its own function call: several collectives in
        one cross-replica graph may be issued in a different order per device.
        """
        pair, y, y_pred, w = outputs
        total, count = self._sum(pair)
        if not self.want_outputs:
            return total, count, None, None, None
        y, y_pred = tf.nest.map_structure(self._gather, y), tf.nest.map_structure(self._gather, y_pred)
        return total, count, y, y_pred, None if w is None else self._gather(w)

    def _sum_fn(self, pair):
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, pair, axis=None)

    def _gather_fn(self, value):
        return self.strategy.gather(value, axis=0)



class _Once:
    """A tf.function wrapper that runs one collective per call."""

    def __init__(self, fn, to_numpy=True):
        self.fn, self.to_numpy = tf.function(fn), to_numpy

    def __call__(self, value):
        out = self.fn(value)
        return tuple(float(v) for v in tf.unstack(out)) if self.to_numpy else out


def _sync_replica_state(model, strategy) -> None:
    """Average float non-trainable variables (BatchNorm moving statistics) over replicas.

    Keras 3 creates them with aggregation "none", so under a mirrored strategy
    each replica keeps its own copy and evaluation would depend on the
    replica. The exponential moving average is linear in the batch
    statistics, so averaging the copies gives exactly the moving average of
    the replica-averaged statistics, as tf.keras's MEAN aggregation did.
    """
    if strategy.num_replicas_in_sync == 1:
        return
    for v in model.non_trainable_variables:
        tv = getattr(v, "value", v)
        parts = getattr(tv, "values", None)
        if not parts or len(parts) < 1 or not tv.dtype.is_floating:
            continue
        local = len(parts)
        per_replica = strategy.experimental_distribute_values_from_function(
            lambda ctx, parts=parts, local=local: tf.identity(parts[ctx.replica_id_in_sync_group % local]))
        tv.assign(strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None))


def _update_metrics(metrics: dict, y, y_pred, w) -> None:
    for m in metrics.values():
        if w is None:
            m.update_state(y, y_pred)
        else:
            m.update_state(y, y_pred, sample_weight=w)


def _metric_values(metrics: dict, prefix: str) -> dict:
    out = {}
    for name, m in metrics.items():
        value = m.result()
        out[prefix + name] = float(np.asarray(value)) if np.size(value) == 1 else np.asarray(value).tolist()
        m.reset_state()
    return out


def _evaluate(loop: _Loop, strategy, data, metrics: dict) -> dict:
    """Mean validation loss and metrics over one pass of ``data``."""
    total = count = 0.0
    for batch in _epoch_data(strategy, data, 0, 0, None):
        s, n, y, y_pred, w = loop.reduce(loop.eval_step(batch))
        total += float(s)
        count += float(n)
        if metrics:
            _update_metrics(metrics, y, y_pred, w)
    out = {"val_loss": total / max(count, 1e-12)}
    out.update(_metric_values(metrics, "val_"))
    return out


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if mode == "min" else value > best


def _checkpoint_dirs(out_dir: Path, strategy) -> tuple[Path, Path, bool]:
    chief = is_chief(strategy)
    ckpt_dir = out_dir / "checkpoints"
    if chief:
        return ckpt_dir, ckpt_dir, True
    # Non-chief workers must take part in saving (collective ops) but write
    # to a throw-away folder; they restore from the chief's.
    task = getattr(getattr(strategy, "cluster_resolver", None), "task_id", 0)
    return ckpt_dir, Path(tempfile.mkdtemp(prefix=f"deepsci-worker{task}-")), False


def train(
    build_model: Callable[[], keras.Model],
    train_data,
    loss_fn: Callable,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    val_data=None,
    metrics: dict[str, Callable] | None = None,
    strategy=None,
    forward: Callable | None = None,
) -> TrainResult:
    """Train a model with the deepsci distributed loop.

    Parameters
    ----------
    build_model : callable
        Returns a new, built ``keras.Model``; called inside ``strategy.scope()``.
    train_data : tf.data.Dataset or callable
        Batched ``(x, y)`` or ``(x, y, sample_weight)`` elements at the global
        batch size, or ``fn(input_context)`` / ``fn(input_context, epoch)``
        returning a dataset batched per replica (use it for disjoint-union
        graphs; the ``epoch`` form makes per-epoch shuffles exact on resume).
    loss_fn : callable
        ``loss_fn(y_true, y_pred)`` returning the per-example loss, shape ``(B,)``.
    config : TrainConfig
    out_dir : path
        Holds ``checkpoints/``, ``tensorboard/``, ``history.json`` and
        ``train_config.json``; an existing checkpoint there is resumed.
    val_data : same forms as ``train_data``, optional
    metrics : dict of name -> factory, optional
        Each factory returns an object with ``update_state(y_true, y_pred,
        sample_weight=None)``, ``result()`` and ``reset_state()`` (a Keras metric).
    strategy : tf.distribute.Strategy, optional
        Defaults to ``resolve_strategy("auto")``.
    forward : callable, optional
        ``forward(model, x, training)`` when the model is not simply ``model(x)``.

    Returns
    -------
    TrainResult
    """
    cfg = config.validate()
    out_dir = Path(out_dir)
    strategy = strategy or resolve_strategy("auto")
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()

    steps_per_epoch = cfg.steps_per_epoch or _count_steps(strategy, train_data)
    if steps_per_epoch < 1:
        raise ConfigError("expected at least one training batch, found an empty dataset")
    total_steps = steps_per_epoch * cfg.epochs

    with strategy.scope():
        model = build_model()
        optimizer = _optimizer(cfg, total_steps)
        optimizer.build(model.trainable_variables)
    # Bookkeeping and metrics live on the host, outside the strategy: they are
    # updated eagerly from reduced values, and strings cannot be mirrored.
    loop = _Loop(model, optimizer, loss_fn, forward, strategy, cfg, want_outputs=bool(metrics))
    train_metrics = {k: f() for k, f in (metrics or {}).items()}
    val_metrics = {k: f() for k, f in (metrics or {}).items()}
    if cfg.jit_compile:
        loop.train_step = tf.function(loop._train_step, jit_compile=True, reduce_retracing=True)

    # Random-generator states (dropout, augmentation) are model variables but not
    # weights, and Checkpoint(model=...) skips them; without them a resumed run
    # draws different masks.
    weight_ids = {id(w) for w in model.weights}
    rng_state = [v.value for v in model.variables if id(v) not in weight_ids]
    # The weights are listed besides the model because TensorFlow's object graph
    # misses Keras 3 sub-layers held in Python lists (their non-trainable state
    # would otherwise be lost on resume).
    weights = [v.value for v in model.weights]
    ckpt = tf.train.Checkpoint(model=model, weights=weights, optimizer=optimizer,
                               rng_state=rng_state,
                               step=loop.step, epoch=loop.epoch,
                               step_in_epoch=loop.step_in_epoch, state=loop.state,
                               epoch_sum=loop.epoch_sum, epoch_n=loop.epoch_n)
    read_dir, write_dir, chief = _checkpoint_dirs(out_dir, strategy)
    manager = tf.train.CheckpointManager(ckpt, str(write_dir), max_to_keep=cfg.keep_checkpoints)
    best_ckpt = tf.train.Checkpoint(weights=weights)
    latest = tf.train.latest_checkpoint(str(read_dir))
    if latest:
        ckpt.restore(latest).assert_existing_objects_matched()
    state = json.loads(loop.state.numpy().decode() or "{}")
    history: list[dict] = state.get("history", [])
    best, wait = state.get("best"), state.get("wait", 0)
    if chief:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "train_config.json", config_to_dict(cfg))
    writer = (tf.summary.create_file_writer(str(out_dir / "tensorboard"))
              if cfg.tensorboard and chief else tf.summary.create_noop_writer())

    def save_state():
        _sync_replica_state(model, strategy)
        loop.state.assign(json.dumps({"history": history, "best": best, "wait": wait,
                                      "stopped": state.get("stopped", False)}))
        manager.save(checkpoint_number=int(loop.step.numpy()))

    best_weights = None
    start = int(loop.step.numpy())
    bar = progress(total=total_steps, desc="train", unit="step", initial=start,
                   disable=None if (cfg.progress and chief) else True)
    t0 = time.perf_counter()
    epoch = int(loop.epoch.numpy())
    try:
        while epoch < cfg.epochs and not state.get("stopped", False):
            skip = int(loop.step_in_epoch.numpy())
            if skip == 0:
                loop.epoch_sum.assign(0.0)
                loop.epoch_n.assign(0.0)
            data = _epoch_data(strategy, train_data, epoch, skip, cfg.steps_per_epoch)
            for batch in data:
                s, n, y, y_pred, w = loop.reduce(loop.train_step(batch))
                loop.epoch_sum.assign_add(float(s))
                loop.epoch_n.assign_add(float(n))
                if train_metrics:
                    _update_metrics(train_metrics, y, y_pred, w)
                step = int(loop.step.assign_add(1).numpy())
                loop.step_in_epoch.assign_add(1)
                bar.update(1)
                bar.set_postfix(loss=f"{float(s) / max(float(n), 1e-12):.4g}", epoch=epoch + 1)
                if step % 10 == 0:
                    with writer.as_default(step=step):
                        tf.summary.scalar("train/batch_loss", float(s) / max(float(n), 1e-12))
                if step % cfg.checkpoint_every == 0:
                    save_state()
            record = {"epoch": epoch + 1, "step": int(loop.step.numpy()),
                      "loss": float(loop.epoch_sum.numpy() / max(loop.epoch_n.numpy(), 1e-12))}
            record.update(_metric_values(train_metrics, ""))
            _sync_replica_state(model, strategy)
            if val_data is not None:
                record.update(_evaluate(loop, strategy, val_data, val_metrics))
            lr = optimizer.learning_rate
            record["lr"] = float(np.asarray(lr))
            record["seconds"] = round(time.perf_counter() - t0, 3)
            history.append(record)
            with writer.as_default(step=record["step"]):
                for k, v in record.items():
                    if k not in ("epoch", "step") and isinstance(v, float):
                        tf.summary.scalar(f"epoch/{k}", v)
            value = record.get(cfg.monitor)
            if value is not None:
                if _improved(value, best, cfg.mode):
                    best, wait = value, 0
                    best_weights = [np.array(v) for v in model.weights]
                    if chief:
                        best_ckpt.write(str(out_dir / "best" / "weights"))
                else:
                    wait += 1
                    if cfg.patience is not None and wait >= cfg.patience:
                        state["stopped"] = True
            epoch += 1
            loop.epoch.assign(epoch)
            loop.step_in_epoch.assign(0)
            save_state()
    finally:
        bar.close()
        writer.flush()
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)

    if cfg.restore_best and best_weights is not None:
        model.set_weights(best_weights)
    elif cfg.restore_best and best is not None and (out_dir / "best" / "weights.index").exists():
        # Resumed after the best epoch: every worker reads the chief's copy.
        best_ckpt.read(str(out_dir / "best" / "weights")).expect_partial()
    if chief:
        write_json(out_dir / "history.json", history)
    return TrainResult(model=model, history=history, best=best,
                       steps=int(loop.step.numpy()), out_dir=out_dir)
