"""Distillation losses against hand computations, the teacher cache, and LiteRT exports."""
import keras
import numpy as np
import pytest

from deepsci.core.distill import (
    TeacherCache,
    distillation_loss,
    regression_distillation_loss,
    soft_targets,
)
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.export import export_litert
from deepsci.core.models.card import ModelCard
from deepsci.core.predict import load_predictor


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (3.0, 0.7), (4.0, 1.0), (2.0, 0.0)])
def test_classification_loss_is_hintons(T, alpha):
    rng = np.random.default_rng(0)
    zt = [rng.normal(size=(5, 3)) * 3 for _ in range(2)]
    zs = rng.normal(size=(5, 3)).astype("float32")
    y = np.array([0, 2, 1, 1, 0])
    p = np.mean([_softmax(z / T) for z in zt], axis=0)
    np.testing.assert_allclose(soft_targets(zt, temperature=T), p, rtol=1e-5)
    q = _softmax(zs / T)
    kl = (p * (np.log(p) - np.log(q))).sum(-1)
    ce = -np.log(_softmax(zs)[np.arange(5), y])
    want = alpha * T * T * kl + (1 - alpha) * ce
    got = distillation_loss(y, zs, p.astype("float32"), temperature=T, alpha=alpha).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_binary_head_uses_the_bernoulli_form():
    zs = np.array([[0.3], [-1.2]], "float32")
    pt = soft_targets([np.array([[2.0], [-0.5]])], temperature=2.0)
    np.testing.assert_allclose(pt[:, 0], 1 / (1 + np.exp(-np.array([1.0, -0.25]))), rtol=1e-6)
    y = np.array([[1], [0]])
    q = 1 / (1 + np.exp(-zs[:, 0] / 2))
    p = pt[:, 0]
    kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    s = 1 / (1 + np.exp(-zs[:, 0]))
    ce = -(y[:, 0] * np.log(s) + (1 - y[:, 0]) * np.log(1 - s))
    got = distillation_loss(y, zs, pt, temperature=2.0, alpha=0.6).numpy()
    np.testing.assert_allclose(got, 0.6 * 4 * kl + 0.4 * ce, rtol=1e-4)


def test_regression_loss_learns_unlabelled_targets_from_the_teacher_alone():
    s = np.array([[1.0, 2.0]], "float32")
    t = np.array([[1.5, 1.0]], "float32")
    y = np.array([[0.0, np.nan]], "float32")
    got = regression_distillation_loss(y, s, t, alpha=0.25).numpy()
    want = np.mean([0.25 * 0.5 + 0.75 * 1.0, 1.0 * 1.0])
    np.testing.assert_allclose(got, [want], rtol=1e-6)
    with pytest.raises(ConfigError, match="--alpha"):
        regression_distillation_loss(y, s, t, alpha=1.5)


def test_teacher_cache_resumes_and_refuses_another_teacher(tmp_path):
    calls = []

    def predict(x):
        calls.append(int(x[0]))
        if len(calls) == 3 and not (tmp_path / "c" / "once").exists():
            (tmp_path / "c" / "once").write_text("")
            raise KeyboardInterrupt  # killed while computing the third shard
        return {"probs": x * 2}

    chunks = [np.full((2,), i, "float32") for i in range(4)]
    cache = TeacherCache(tmp_path / "c", teacher={"models": ["a"], "temperature": 3})
    with pytest.raises(KeyboardInterrupt):
        cache.compute(predict, chunks)
    assert cache.compute(predict, chunks) == 2
    assert calls == [0, 1, 2, 2, 3]
    np.testing.assert_array_equal(cache.load()["probs"], np.repeat(np.arange(4) * 2.0, 2))
    with pytest.raises(InputError, match="another"):
        TeacherCache(tmp_path / "c", teacher={"models": ["a"], "temperature": 2})


def _conv_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, {"grade": keras.layers.Dense(5)(x), "ref": keras.layers.Dense(1)(x)})


@pytest.mark.parametrize("quantize,tol", [("none", 1e-5), ("float16", 2e-3), ("int8", 0.05)])
def test_litert_export_predicts_like_keras(tmp_path, quantize, tol):
    m = _conv_model()
    x = np.random.default_rng(1).normal(size=(40, 16, 16, 3)).astype("float32")
    card = ModelCard(app="retinopathy", task="dr-grade", input_spec={}, outputs={})
    out = tmp_path / f"m_{quantize}.tflite"
    report = export_litert(m, out, card=card, quantize=quantize, batch_size=8,
                           representative=[x[i:i + 8] for i in range(0, 32, 8)], check_inputs=x[32:])
    assert report["difference"] <= tol and report["float_ops"] == []
    p, loaded = load_predictor(out, expect="retinopathy")
    assert loaded.extra["litert"]["quantize"] == quantize
    y, ref = p(x[:11]), m(x[:11])
    for k in ("grade", "ref"):
        assert y[k].shape == (11, ref[k].shape[1])
        np.testing.assert_allclose(y[k], ref[k].numpy(), atol=tol * 4 + 1e-6)
    with pytest.raises(InputError, match="expected a variants model, found a retinopathy model"):
        load_predictor(out, expect="variants")


def test_export_refuses_beyond_tolerance_and_damaged_files_are_one_error(tmp_path):
    m = _conv_model()
    x = np.random.default_rng(2).normal(size=(16, 16, 16, 3)).astype("float32")
    card = ModelCard(app="retinopathy", task="dr-grade", input_spec={}, outputs={})
    with pytest.raises(ConfigError, match="within 1e-09"):
        export_litert(m, tmp_path / "m.tflite", card=card, quantize="int8", batch_size=8,
                      representative=[x[:8]], check_inputs=x, tolerance=1e-9)
    assert not (tmp_path / "m.tflite").exists()
    export_litert(m, tmp_path / "ok.tflite", card=card, quantize="none", batch_size=4)
    (tmp_path / "ok.tflite").write_bytes(b"garbage" * 10)
    with pytest.raises(InputError, match="does not load"):
        load_predictor(tmp_path / "ok.tflite", expect="retinopathy")
