"""A tiny training job run as a subprocess by the resume and multi-worker tests.

usage: python train_worker.py OUT_DIR STRATEGY [SLOW_SECONDS] [--results DIR] [--tensorboard] [--val]
Writes RESULTS/final-<task>.npz (RESULTS defaults to OUT_DIR) with the trained
weights and the history, and RESULTS/worker-<task>.json with this process's
id and whether it was the chief.
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("DEEPSCI_PROGRESS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deepsci.core.accelerator import is_chief, resolve_strategy  # noqa: E402
from deepsci.core.training import TrainConfig, train  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("out_dir")
parser.add_argument("spec")
parser.add_argument("slow", nargs="?", type=float, default=0.0)
parser.add_argument("--results", default=None)
parser.add_argument("--tensorboard", action="store_true")
parser.add_argument("--val", action="store_true")
args = parser.parse_args()
slow = args.slow

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


def val(ctx):
    ds = tf.data.Dataset.from_tensor_slices((X[:64], Y[:64])).shard(ctx.num_input_pipelines,
                                                                    ctx.input_pipeline_id)
    return ds.batch(ctx.get_per_replica_batch_size(16), drop_remainder=True)


def build():
    i = keras.Input((6,))
    h = keras.layers.Dense(16, activation="relu")(i)
    h = keras.layers.Dropout(0.2, seed=3)(h)
    return keras.Model(i, keras.layers.Dense(1)(h))


def loss(y, p):
    return tf.reduce_mean(tf.square(tf.reshape(y, [-1, 1]) - tf.reshape(p, [-1, 1])), axis=-1)


strategy = resolve_strategy(args.spec)
cfg = TrainConfig(epochs=4, batch_size=16, learning_rate=0.01, checkpoint_every=2, seed=7,
                  tensorboard=args.tensorboard, progress=False)
result = train(build, data, loss, cfg, args.out_dir, strategy=strategy, val_data=val if args.val else None)
task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0)
results = args.results or args.out_dir
os.makedirs(results, exist_ok=True)
np.savez(os.path.join(results, f"final-{task}.npz"), *result.model.get_weights(),
         history=json.dumps(result.history))
with open(os.path.join(results, f"worker-{task}.json"), "w") as f:
    json.dump({"pid": os.getpid(), "chief": is_chief(strategy)}, f)
