"""A tiny training job run as a subprocess by the resume and multi-worker tests.

usage: python train_worker.py OUT_DIR STRATEGY [SLOW_SECONDS]
Writes OUT_DIR/final-<task>.npz with the trained weights and the history.
"""
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("DEEPSCI_PROGRESS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deepsci.core.accelerator import resolve_strategy  # noqa: E402
from deepsci.core.training import TrainConfig, train  # noqa: E402

out_dir, spec = sys.argv[1], sys.argv[2]
slow = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0

rng = np.random.default_rng(0)
X = rng.normal(size=(192, 6)).astype("float32")
Y = (X @ rng.normal(size=(6, 1)) + 0.1 * rng.normal(size=(192, 1))).astype("float32")


def _pause(x, y):
    # Slows each batch so that a test can kill the job mid-run.
    time.sleep(slow)
    return x, y


def data(ctx, epoch):
    ds = tf.data.Dataset.from_tensor_slices((X, Y)).shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
    ds = ds.shuffle(192, seed=100 + epoch).batch(ctx.get_per_replica_batch_size(16), drop_remainder=True)
    if slow:
        ds = ds.map(lambda x, y: tf.py_function(_pause, [x, y], [tf.float32, tf.float32]))
    return ds


def build():
    i = keras.Input((6,))
    h = keras.layers.Dense(16, activation="relu")(i)
    h = keras.layers.Dropout(0.2, seed=3)(h)
    return keras.Model(i, keras.layers.Dense(1)(h))


def loss(y, p):
    return tf.reduce_mean(tf.square(tf.reshape(y, [-1, 1]) - tf.reshape(p, [-1, 1])), axis=-1)


strategy = resolve_strategy(spec)
cfg = TrainConfig(epochs=4, batch_size=16, learning_rate=0.01, checkpoint_every=2, seed=7,
                  tensorboard=False, progress=False)
result = train(build, data, loss, cfg, out_dir, strategy=strategy)
task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0)
np.savez(os.path.join(out_dir, f"final-{task}.npz"), *result.model.get_weights(),
         history=json.dumps(result.history))
