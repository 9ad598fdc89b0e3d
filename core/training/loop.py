"""The distributed step functions and the epoch loop.

Losses are scaled by the global number of examples, so results do not
depend on the replica count; gradients are all-reduced (then clipped) by the
optimizer; BatchNorm statistics are averaged over replicas before every
evaluation and checkpoint.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from .checkpoint import Checkpoints
from .config import TrainConfig
from .data import epoch_data, unpack

__all__ = ["Loop", "EpochRunner", "sync_replica_state", "evaluate", "improved"]

_HALF = (tf.float16, tf.bfloat16)


def _float32(structure):
    """Half-precision outputs as float32: losses and metrics lose digits in bfloat16."""
    return tf.nest.map_structure(
        lambda t: tf.cast(t, tf.float32) if getattr(t, "dtype", None) in _HALF else t, structure)


class _Once:
    """A tf.function wrapper that runs one collective per call."""

    def __init__(self, fn, to_numpy=True):
        self.fn, self.to_numpy = tf.function(fn), to_numpy

    def __call__(self, value):
        out = self.fn(value)
        return tuple(float(v) for v in tf.unstack(out)) if self.to_numpy else out


class Loop:
    """The compiled steps and the bookkeeping variables that checkpoints hold.

    Parameters
    ----------
    model : keras.Model
    optimizer : keras.optimizers.Optimizer
    loss_fn : callable
        ``loss_fn(y_true, y_pred)`` -> per-example loss, shape (B,).
    strategy : tf.distribute.Strategy
    forward : callable, optional
        ``forward(model, x, training)``; default ``model(x, training=training)``.
    want_outputs : bool
        Gather labels and predictions across replicas (metrics need them).
    xla : bool
        Compile each replica's forward and backward pass with XLA
        (:attr:`gradients`, :attr:`eval_losses`). The collectives and the
        optimizer update stay outside the compiled function, where every
        strategy can run them.
    """

    def __init__(self, model, optimizer, loss_fn, strategy, *, forward: Callable | None = None,
                 want_outputs: bool = False, xla: bool = False):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.want_outputs, self.xla = want_outputs, xla
        self.forward = forward or (lambda m, x, training: m(x, training=training))
        self.strategy = strategy
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        # History and early-stopping state travel inside the checkpoint so that
        # they can never disagree with the weights they describe.
        self.state = tf.Variable("{}", dtype=tf.string, trainable=False, name="loop_state")
        self.epoch_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="epoch_sum")
        self.epoch_n = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="epoch_n")
        # reduce_retracing: graph batches change shape every step.
        compiled = (lambda f: tf.function(f, jit_compile=True, reduce_retracing=True)) if xla else (
            lambda f: f)
        self.gradients = compiled(self._gradients)
        self.eval_losses = compiled(self._eval_losses)
        self.train_step = tf.function(self._train_step, reduce_retracing=True)
        self.eval_step = tf.function(self._eval_step, reduce_retracing=True)
        self._sum = _Once(self._sum_fn)
        self._gather = _Once(self._gather_fn, to_numpy=False)

    def variables(self) -> dict[str, tf.Variable]:
        """The bookkeeping variables by checkpoint name."""
        return {"step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "state": self.state, "epoch_sum": self.epoch_sum, "epoch_n": self.epoch_n}

    def load_state(self) -> dict:
        """History and early-stopping state restored with the checkpoint."""
        return json.loads(self.state.numpy().decode() or "{}")

    def _losses(self, x, y, w, training):
        y_pred = _float32(self.forward(self.model, x, training))
        per_example = tf.cast(tf.reshape(self.loss_fn(y, y_pred), [-1]), tf.float32)
        w = tf.ones_like(per_example) if w is None else tf.cast(tf.reshape(w, [-1]), tf.float32)
        return y_pred, tf.reduce_sum(per_example * w), tf.reduce_sum(w)

    @staticmethod
    def _weight_sum(y, w):
        if w is not None:
            return tf.reduce_sum(tf.cast(w, tf.float32))
        first = tf.nest.flatten(y)[0]
        return tf.cast(tf.shape(first)[0], tf.float32)

    def _gradients(self, x, y, w, global_n):
        """One replica's forward and backward pass: (grads, y_pred, loss sum, weight sum)."""
        with tf.GradientTape() as tape:
            y_pred, local_sum, local_n = self._losses(x, y, w, True)
            loss = local_sum / tf.maximum(global_n, 1e-12)
            if self.model.losses:
                loss += tf.add_n(self.model.losses) / self.strategy.num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
        grads = tape.gradient(scaled, self.model.trainable_variables)
        return grads, y_pred, local_sum, local_n

    def _replica_train(self, batch):
        x, y, w = unpack(batch)
        ctx = tf.distribute.get_replica_context()
        # The global example count is reduced before the tape so that no
        # collective op is differentiated (replicas would order them differently).
        global_n = tf.stop_gradient(ctx.all_reduce(tf.distribute.ReduceOp.SUM, self._weight_sum(y, w)))
        grads, y_pred, local_sum, local_n = self.gradients(x, y, w, global_n)
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return tf.stack([local_sum, local_n]), y, y_pred, w

    def _train_step(self, batch):
        return self.strategy.run(self._replica_train, args=(batch,))

    def _eval_losses(self, x, y, w):
        return self._losses(x, y, w, False)

    def _replica_eval(self, batch):
        x, y, w = unpack(batch)
        y_pred, local_sum, local_n = self.eval_losses(x, y, w)
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


def sync_replica_state(model: keras.Model, strategy) -> None:
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


def evaluate(loop: Loop, data, metrics: dict) -> dict:
    """Mean validation loss and metrics over one pass of ``data``."""
    total = count = 0.0
    for batch in epoch_data(loop.strategy, data, 0, 0, None):
        s, n, y, y_pred, w = loop.reduce(loop.eval_step(batch))
        total += float(s)
        count += float(n)
        if metrics:
            _update_metrics(metrics, y, y_pred, w)
    out = {"val_loss": total / max(count, 1e-12)}
    out.update(_metric_values(metrics, "val_"))
    return out


def improved(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` beats ``best`` in ``mode`` ("min"/"max"); NaN never does."""
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if mode == "min" else value > best


class EpochRunner:
    """Runs the epochs left in a (possibly resumed) run.

    Parameters
    ----------
    loop : Loop
    checkpoints : Checkpoints
        Already restored: the loop's variables say where to continue.
    cfg : TrainConfig
    metrics : (dict, dict)
        Train and validation metric objects by name.
    writer : tf.summary.SummaryWriter
    bar : tqdm
    """

    def __init__(self, loop: Loop, checkpoints: Checkpoints, cfg: TrainConfig, *,
                 metrics: tuple[dict, dict], writer, bar):
        self.loop, self.ckpts, self.cfg = loop, checkpoints, cfg
        self.train_metrics, self.val_metrics = metrics
        self.writer, self.bar = writer, bar
        state = loop.load_state()
        self.history: list[dict] = state.get("history", [])
        self.best, self.wait = state.get("best"), state.get("wait", 0)
        self.stopped = state.get("stopped", False)
        self.best_weights: list[np.ndarray] | None = None
        self.t0 = time.perf_counter()

    def save(self) -> None:
        """Checkpoint weights, optimizer and bookkeeping at the current step."""
        sync_replica_state(self.loop.model, self.loop.strategy)
        self.loop.state.assign(json.dumps({"history": self.history, "best": self.best,
                                           "wait": self.wait, "stopped": self.stopped}))
        self.ckpts.save(int(self.loop.step.numpy()))

    def run(self, train_data, val_data=None) -> None:
        """Train until ``cfg.epochs`` or early stopping."""
        loop = self.loop
        epoch = int(loop.epoch.numpy())
        while epoch < self.cfg.epochs and not self.stopped:
            self._train_epoch(train_data, epoch)
            self._end_epoch(epoch, val_data)
            epoch += 1
            loop.epoch.assign(epoch)
            loop.step_in_epoch.assign(0)
            self.save()

    def _train_epoch(self, train_data, epoch: int) -> None:
        loop, cfg = self.loop, self.cfg
        skip = int(loop.step_in_epoch.numpy())
        if skip == 0:
            loop.epoch_sum.assign(0.0)
            loop.epoch_n.assign(0.0)
        for batch in epoch_data(loop.strategy, train_data, epoch, skip, cfg.steps_per_epoch):
            s, n, y, y_pred, w = loop.reduce(loop.train_step(batch))
            loop.epoch_sum.assign_add(float(s))
            loop.epoch_n.assign_add(float(n))
            if self.train_metrics:
                _update_metrics(self.train_metrics, y, y_pred, w)
            step = int(loop.step.assign_add(1).numpy())
            loop.step_in_epoch.assign_add(1)
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{float(s) / max(float(n), 1e-12):.4g}", epoch=epoch + 1)
            if step % 10 == 0:
                with self.writer.as_default(step=step):
                    tf.summary.scalar("train/batch_loss", float(s) / max(float(n), 1e-12))
            if step % cfg.checkpoint_every == 0:
                self.save()

    def _end_epoch(self, epoch: int, val_data) -> None:
        loop, cfg = self.loop, self.cfg
        record = {"epoch": epoch + 1, "step": int(loop.step.numpy()),
                  "loss": float(loop.epoch_sum.numpy() / max(loop.epoch_n.numpy(), 1e-12))}
        record.update(_metric_values(self.train_metrics, ""))
        sync_replica_state(loop.model, loop.strategy)
        if val_data is not None:
            record.update(evaluate(loop, val_data, self.val_metrics))
        record["lr"] = float(np.asarray(loop.optimizer.learning_rate))
        record["seconds"] = round(time.perf_counter() - self.t0, 3)
        self.history.append(record)
        with self.writer.as_default(step=record["step"]):
            for k, v in record.items():
                if k not in ("epoch", "step") and isinstance(v, float):
                    tf.summary.scalar(f"epoch/{k}", v)
        value = record.get(cfg.monitor)
        if value is None:
            return
        if improved(value, self.best, cfg.mode):
            self.best, self.wait = value, 0
            self.best_weights = self.ckpts.save_best()
        else:
            self.wait += 1
            if cfg.patience is not None and self.wait >= cfg.patience:
                self.stopped = True
