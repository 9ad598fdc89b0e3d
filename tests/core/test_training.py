import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from deepsci.core.accelerator import AcceleratorConfig, resolve_strategy, setup
from deepsci.core.errors import ConfigError
from deepsci.core.training import TrainConfig, runner, train

WORKER = Path(__file__).with_name("train_worker.py")


def _regression(n=128, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = (x @ rng.normal(size=(d, 1))).astype("float32")
    return x, y


def _mlp(d=5):
    def build():
        keras.utils.set_random_seed(11)
        i = keras.Input((d,))
        return keras.Model(i, keras.layers.Dense(1)(keras.layers.Dense(8, activation="tanh")(i)))
    return build


def _mse(y, p):
    return tf.reduce_mean(tf.square(y - p), axis=-1)


def _per_replica_data(x, y, batch):
    def fn(ctx, epoch):
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=epoch)
        return ds.batch(ctx.get_per_replica_batch_size(batch), drop_remainder=True)
    return fn


@pytest.mark.parametrize("clip_norm", [None, 0.5])
def test_two_replicas_match_one_device(tmp_path, clip_norm):
    # Tolerance: 1e-4 relative, float32 sums in a different order across replicas.
    x, y = _regression()
    data = _per_replica_data(x, y, 32)
    cfg = TrainConfig(epochs=3, batch_size=32, learning_rate=0.05, clip_norm=clip_norm,
                      tensorboard=False, progress=False)
    one = train(_mlp(), data, _mse, cfg, tmp_path / "one", strategy=resolve_strategy("cpu"))
    two_strategy = resolve_strategy("mirrored")
    assert two_strategy.num_replicas_in_sync == 2
    two = train(_mlp(), data, _mse, cfg, tmp_path / "two", strategy=two_strategy)
    losses_one = [h["loss"] for h in one.history]
    losses_two = [h["loss"] for h in two.history]
    assert losses_one[-1] < losses_one[0]
    np.testing.assert_allclose(losses_two, losses_one, rtol=1e-4)
    for a, b in zip(one.model.get_weights(), two.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_dataset_form_metrics_early_stopping_and_outputs(tmp_path):
    x, y = _regression(n=96)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    anti = tf.data.Dataset.from_tensor_slices((x, -y)).batch(32)
    cfg = TrainConfig(epochs=30, batch_size=32, learning_rate=0.05, patience=2, monitor="val_mae",
                      lr_schedule="cosine", warmup_steps=3, progress=False)
    result = train(_mlp(), ds, _mse, cfg, tmp_path, val_data=anti,
                   metrics={"mae": lambda: keras.metrics.MeanAbsoluteError()})
    # Fitting y makes the error on -y grow: patience ends the run early and the
    # best (earliest) weights are restored.
    assert len(result.history) < 30
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert {"loss", "val_loss", "mae", "val_mae", "lr"} <= set(result.history[0])
    assert result.best == min(h["val_mae"] for h in result.history)
    assert json.loads((tmp_path / "history.json").read_text()) == result.history
    assert not (tmp_path / "train_config.json").exists()  # one record per run: the RunDir's run.json
    assert list((tmp_path / "tensorboard").iterdir())
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))


def test_sample_weights_scale_the_loss(tmp_path):
    x, y = _regression(n=32)
    w = np.zeros(32, "float32")
    w[:16] = 1.0
    ds_w = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(32)
    ds_half = tf.data.Dataset.from_tensor_slices((x[:16], y[:16])).batch(32)
    cfg = TrainConfig(epochs=1, batch_size=32, progress=False, tensorboard=False)
    a = train(_mlp(), ds_w, _mse, cfg, tmp_path / "a")
    b = train(_mlp(), ds_half, _mse, cfg, tmp_path / "b")
    assert a.history[0]["loss"] == pytest.approx(b.history[0]["loss"], rel=1e-5)


@pytest.mark.parametrize("field,value", [("epochs", 0), ("optimizer", "lbfgs"),
                                         ("lr_schedule", "magic"), ("clip_norm", -1.0)])
def test_bad_config_is_a_config_error(tmp_path, field, value):
    x, y = _regression(n=8)
    cfg = TrainConfig(**{field: value})
    with pytest.raises(ConfigError, match="expected"):
        train(_mlp(), tf.data.Dataset.from_tensor_slices((x, y)).batch(4), _mse, cfg, tmp_path)


def _run_worker(out_dir, spec="cpu", slow=0.0, env=None):
    return subprocess.Popen([sys.executable, str(WORKER), str(out_dir), spec, str(slow)],
                            env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _weights(path):
    with np.load(path) as z:
        return [z[k] for k in z.files if k != "history"], json.loads(str(z["history"]))


def test_sigkill_and_resume_ends_with_the_same_weights(tmp_path):
    ref = _run_worker(tmp_path / "ref")
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()[-2000:]
    victim = _run_worker(tmp_path / "run", slow=0.05)
    ckpts = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not list(ckpts.glob("ckpt-*.index")):
        assert victim.poll() is None, victim.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    time.sleep(0.3)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "run" / "final-0.npz").exists()  # it really died mid-run
    resumed = _run_worker(tmp_path / "run")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    ref_w, ref_h = _weights(tmp_path / "ref" / "final-0.npz")
    run_w, run_h = _weights(tmp_path / "run" / "final-0.npz")
    for a, b in zip(ref_w, run_w, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert [h["loss"] for h in run_h] == pytest.approx([h["loss"] for h in ref_h], rel=1e-5)


def test_ragged_last_step_on_two_replicas_with_batchnorm(tmp_path):
    # 5 per-replica batches over 2 replicas: the last step would leave one
    # replica empty; the loop pads it with a zero-weight batch instead.
    x, y = _regression(n=40)

    def data(ctx):
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    def build():
        i = keras.Input((5,))
        h = keras.layers.BatchNormalization()(keras.layers.Dense(4)(i))
        return keras.Model(i, keras.layers.Dense(1)(h))

    cfg = TrainConfig(epochs=1, batch_size=16, progress=False, tensorboard=False)
    result = train(build, data, _mse, cfg, tmp_path, val_data=data,
                   strategy=resolve_strategy("mirrored"),
                   metrics={"mae": lambda: keras.metrics.MeanAbsoluteError()})
    assert result.steps == 3
    expected_mae = float(np.mean(np.abs(result.model(x, training=False).numpy() - y)))
    assert result.history[0]["val_mae"] == pytest.approx(expected_mae, rel=1e-4)


class _ListHeld(keras.layers.Layer):
    """Sub-layers kept in a Python list, which TensorFlow's object graph misses."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [keras.layers.Dense(4), keras.layers.BatchNormalization()]

    def call(self, x, training=None):
        return self.blocks[1](self.blocks[0](x), training=training)


def test_best_weights_restored_from_disk_cover_list_held_layers(tmp_path):
    # "loss" in mode max makes epoch 0 the best; a second call finds the run
    # finished and must restore that epoch's weights, moving statistics included.
    x, y = _regression()

    def build():
        keras.utils.set_random_seed(3)
        i = keras.Input((5,))
        return keras.Model(i, keras.layers.Dense(1)(_ListHeld()(i)))

    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    cfg = TrainConfig(epochs=3, batch_size=16, progress=False, tensorboard=False,
                      monitor="loss", mode="max", restore_best=True)
    first = train(build, data, _mse, cfg, tmp_path, strategy=resolve_strategy("cpu"))
    again = train(build, data, _mse, cfg, tmp_path, strategy=resolve_strategy("cpu"))
    assert len(first.model.weights) == len(again.model.weights) == 8
    for a, b in zip(first.model.weights, again.model.weights, strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6)


@pytest.fixture
def loops(monkeypatch):
    """The Loop objects that train() builds, in order."""
    made = []

    class Recorded(runner.Loop):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(runner, "Loop", Recorded)
    yield made
    setup(AcceleratorConfig())  # float32 and no XLA for the tests that follow


def test_xla_compiles_each_replica_step_and_trains_alike(tmp_path, loops):
    x, y = _regression()
    data = _per_replica_data(x, y, 32)
    cfg = TrainConfig(epochs=2, batch_size=32, learning_rate=0.05, tensorboard=False, progress=False)
    ref = train(_mlp(), data, _mse, cfg, tmp_path / "ref", strategy=resolve_strategy("cpu"))
    xla = train(_mlp(), data, _mse, cfg, tmp_path / "xla",
                accelerator=AcceleratorConfig(strategy="cpu", xla=True))
    assert [loop.xla for loop in loops] == [False, True]
    assert not hasattr(loops[0].gradients, "experimental_get_compiler_ir")
    # Raises unless the function is marked jit_compile and XLA can compile it.
    hlo = loops[1].gradients.experimental_get_compiler_ir(
        tf.constant(x[:32]), tf.constant(y[:32]), None, tf.constant(32.0))(stage="hlo")
    assert re.search(r"f32\[32,8\]\{[^}]*\} dot\(", hlo)  # the hidden layer, as compiled
    np.testing.assert_allclose([h["loss"] for h in xla.history], [h["loss"] for h in ref.history],
                               rtol=1e-4)
    for a, b in zip(ref.model.get_weights(), xla.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_mixed_precision_on_cpu_is_bfloat16_with_float32_variables_and_xla(tmp_path, loops):
    x, y = _regression()
    data = _per_replica_data(x, y, 32)
    cfg = TrainConfig(epochs=3, batch_size=32, learning_rate=0.05, tensorboard=False, progress=False)
    ref = train(_mlp(), data, _mse, cfg, tmp_path / "ref", strategy=resolve_strategy("cpu"))
    mixed = train(_mlp(), data, _mse, cfg, tmp_path / "mixed",
                  accelerator=AcceleratorConfig(strategy="mirrored", precision="mixed", xla=True))
    assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"
    dense = [layer for layer in mixed.model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.compute_dtype for layer in dense] == ["bfloat16", "bfloat16"]
    assert {v.dtype for v in mixed.model.weights} == {"float32"}
    assert mixed.model(x[:4]).dtype == "bfloat16"
    # bfloat16 needs no loss scaling (it has float32's exponent range).
    assert not isinstance(loops[1].optimizer, keras.optimizers.LossScaleOptimizer)
    hlo = loops[1].gradients.experimental_get_compiler_ir(
        tf.constant(x[:16]), tf.constant(y[:16]), None, tf.constant(32.0))(stage="hlo")
    assert re.search(r"bf16\[16,8\]\{[^}]*\} dot\(", hlo)  # compute in bfloat16 inside XLA
    losses = [h["loss"] for h in mixed.history]
    assert losses[-1] < 0.5 * losses[0]
    # bfloat16 keeps 8 bits of mantissa: the run follows float32 to about 2 %.
    np.testing.assert_allclose(losses, [h["loss"] for h in ref.history], rtol=0.05)


def test_float16_loss_scaling_skips_an_overflow_on_every_replica(tmp_path, loops):
    x, y = _regression()
    big = y.copy()
    big[16:32] *= 1e4  # the first step's batch of replica 1: its float16 gradient overflows
    initial = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()).initial_scale

    def data(ctx):
        return tf.data.Dataset.from_tensor_slices((x, big)).batch(ctx.get_per_replica_batch_size(32))

    cfg = TrainConfig(epochs=1, batch_size=32, learning_rate=0.05, tensorboard=False, progress=False)
    result = train(_mlp(), data, _mse, cfg, tmp_path,
                   accelerator=AcceleratorConfig(strategy="mirrored", precision="mixed_float16"))
    opt = loops[0].optimizer
    assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
    dense = [layer for layer in result.model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.compute_dtype for layer in dense] == ["float16", "float16"]
    assert {v.dtype for v in result.model.weights} == {"float32"}
    # Both replicas skipped that one step and halved the scale once; had only
    # replica 1 skipped, replica 0 would apply and the weights turn to NaN.
    assert float(np.asarray(opt.dynamic_scale)) == initial / 2
    assert all(np.isfinite(w).all() for w in result.model.get_weights())
    assert np.isfinite(result.history[0]["loss"])
