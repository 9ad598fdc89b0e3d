"""Training data for the loop: datasets or per-replica functions, distributed per epoch.

A ``DataSource`` is either a ``tf.data.Dataset`` of batched ``(x, y)`` or
``(x, y, sample_weight)`` elements at the global batch size, or a function
``fn(input_context)`` / ``fn(input_context, epoch)`` returning one batched
per replica.
"""
from __future__ import annotations

import inspect

import numpy as np
import tensorflow as tf

__all__ = ["epoch_data", "count_steps", "unpack", "pipelines", "pad_to_replicas", "cardinality"]


def _accepts_epoch(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "epoch" in params or len(params) >= 2


def pipelines(strategy) -> tuple[int, int, int]:
    """(number of input pipelines, this worker's pipeline id, replicas on this worker)."""
    local = max(len(getattr(strategy.extended, "worker_devices", ()) or ()), 1)
    n = max(strategy.num_replicas_in_sync // local, 1)
    resolver = getattr(strategy, "cluster_resolver", None)
    task_id = getattr(resolver, "task_id", 0) or 0 if n > 1 else 0
    return n, task_id, local


def _with_weights(ds: tf.data.Dataset) -> tf.data.Dataset:
    def add(*element):
        if len(element) == 3:
            return element
        x, y = element
        return x, y, tf.ones([tf.shape(tf.nest.flatten(y)[0])[0]], tf.float32)
    return ds.map(add)


def pad_to_replicas(ds: tf.data.Dataset, batches: int, local: int) -> tf.data.Dataset:
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


def _make(source, ctx, epoch: int) -> tf.data.Dataset:
    return source(ctx, epoch=epoch) if _accepts_epoch(source) else source(ctx)


def cardinality(ds: tf.data.Dataset) -> int:
    """Number of elements of a finite dataset (counted when TensorFlow cannot tell)."""
    n = int(ds.cardinality())
    if n < 0:
        n = int(ds.reduce(np.int64(0), lambda c, _: c + 1))
    return n


def epoch_data(strategy, source, epoch: int, skip: int, steps: int | None):
    """The distributed dataset of one epoch with ``skip`` global steps already consumed.

    Parameters
    ----------
    strategy : tf.distribute.Strategy
    source : DataSource
    epoch : int
        Passed to ``fn(ctx, epoch)`` sources, so a resumed epoch reshuffles alike.
    skip : int
        Global steps of this epoch already taken (resume mid-epoch).
    steps : int, optional
        Fixed steps per epoch (the data repeats); ``None``: one pass.
    """
    if isinstance(source, tf.data.Dataset):
        ds = source.repeat().take(steps) if steps else source
        return strategy.experimental_distribute_dataset(ds.skip(skip))
    _, _, local = pipelines(strategy)

    def per_replica(ctx):
        ds = _make(source, ctx, epoch)
        if steps:
            ds = ds.repeat().take(steps * local)
        else:
            ds = pad_to_replicas(ds, cardinality(ds), local)
        # Each global step takes one per-replica batch for every local replica.
        return ds.skip(skip * local)

    return strategy.distribute_datasets_from_function(per_replica)


def count_steps(strategy, source) -> int:
    """Global steps in one pass over ``source`` on this worker."""
    if isinstance(source, tf.data.Dataset):
        return cardinality(source)
    n, task_id, local = pipelines(strategy)
    ctx = tf.distribute.InputContext(n, task_id, strategy.num_replicas_in_sync)
    return -(-cardinality(_make(source, ctx, 0)) // local)


def unpack(batch) -> tuple:
    """``(x, y, sample_weight or None)`` of one batch."""
    if isinstance(batch, (tuple, list)):
        if len(batch) == 3:
            return batch
        if len(batch) == 2:
            return batch[0], batch[1], None
    raise ValueError(
        f"Expected dataset elements (x, y) or (x, y, sample_weight). Received: {type(batch).__name__}"
        f" of length {len(batch) if hasattr(batch, '__len__') else '?'}")
