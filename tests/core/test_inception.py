import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from deepsci.core.accelerator import resolve_strategy
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.models import inception
from deepsci.core.models.card import ModelCard
from deepsci.core.models.serialization import load_model, save_model
from deepsci.core.training import TrainConfig, train


@pytest.mark.parametrize("shape", [(75, 75, 3), (100, 221, 7)])
def test_inception_v3_any_size_and_channels(shape):
    model = inception.inception_v3(shape)
    out = model(np.zeros((2, *shape), "float32"))
    assert out.shape == (2, 2048)


def test_inception_v3_rejects_small_inputs():
    with pytest.raises(ValueError, match="Expected Inception-v3 inputs of at least 75x75"):
        inception.inception_v3((64, 64, 3))


@pytest.mark.parametrize("shape,blocks,width", [((32, 32, 3), (1, 1, 1), 8),
                                                ((48, 64, 7), (2, 1, 0), 12),
                                                ((16, 16, 1), (0, 0, 1), 4)])
def test_small_inception_shapes(shape, blocks, width):
    model = inception.small_inception(shape, blocks=blocks, width=width)
    x = np.random.default_rng(0).normal(size=(3, *shape)).astype("float32")
    feats = model(x)
    assert feats.shape[0] == 3 and feats.shape[1] > 0
    assert np.isfinite(feats.numpy()).all()


def test_small_inception_validates_arguments():
    with pytest.raises(ValueError, match="Expected width >= 4"):
        inception.small_inception((32, 32, 3), width=2)
    with pytest.raises(ValueError, match="Expected blocks"):
        inception.small_inception((32, 32, 3), blocks=(1, 1))
    with pytest.raises(ConfigError):
        inception.backbone("v4", (32, 32, 3))


def test_classifier_heads_are_logits_dict():
    model = inception.classifier((32, 32, 3), {"grade": 5, "referable": 1}, width=8)
    out = model(np.zeros((4, 32, 32, 3), "float32"))
    assert set(out) == {"grade", "referable"}
    assert out["grade"].shape == (4, 5) and out["referable"].shape == (4, 1)
    assert out["grade"].dtype == tf.float32


def test_multi_tower_concatenates_scales():
    model = inception.multi_tower([(32, 32, 3), (32, 32, 3), (32, 32, 3)], {"tumour": 1}, width=8)
    xs = [np.random.default_rng(i).normal(size=(2, 32, 32, 3)).astype("float32") for i in range(3)]
    assert model(xs)["tumour"].shape == (2, 1)
    towers = [layer for layer in model.layers if layer.name.startswith("multi_tower_tower")]
    assert len(towers) == 3
    assert model.get_layer("towers").output.shape[-1] == 3 * towers[0].output.shape[-1]


def test_local_weights_file_spread_over_channels(tmp_path):
    rgb = inception.inception_v3((299, 299, 3))
    rng = np.random.default_rng(0)
    rgb.set_weights([rng.normal(size=w.shape).astype("float32") for w in rgb.get_weights()])
    path = tmp_path / "v3_notop.weights.h5"
    rgb.save_weights(path)
    seven = inception.inception_v3((100, 221, 7), weights=path)
    k_rgb, k7 = rgb.layers[1].get_weights()[0], seven.layers[1].get_weights()[0]
    assert k7.shape == (3, 3, 7, 32)
    np.testing.assert_allclose(k7[:, :, 0], k_rgb.mean(axis=2) * 3 / 7, rtol=1e-5)
    last_conv = [i for i, layer in enumerate(rgb.layers) if isinstance(layer, keras.layers.Conv2D)][-1]
    np.testing.assert_array_equal(rgb.layers[last_conv].get_weights()[0],
                                  seven.layers[last_conv].get_weights()[0])
    with pytest.raises(InputError, match="expected a local Inception-v3 weights file"):
        inception.inception_v3(weights=tmp_path / "missing.h5")


def test_save_and_load_round_trip(tmp_path):
    model = inception.classifier((32, 32, 3), {"y": 3}, width=8)
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    card = ModelCard(app="test", task="y", input_spec={"shape": [32, 32, 3]})
    path = save_model(model, tmp_path / "m.keras", card=card)
    loaded, meta = load_model(path)
    np.testing.assert_allclose(loaded(x)["y"], model(x)["y"], rtol=1e-6)
    assert meta.app == "test" and meta.input_spec == {"shape": [32, 32, 3]} and meta.deepsci_version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.card.json", "m.keras"]


def test_load_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no file"):
        load_model(tmp_path / "none.keras")
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    (tmp_path / "bad.card.json").write_text(json.dumps(ModelCard(app="x", task="t").to_dict()))
    with pytest.raises(InputError, match="does not load"):
        load_model(tmp_path / "bad.keras")
    with pytest.raises(InputError, match=".keras"):
        save_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]), tmp_path / "m.h5",
                   card=ModelCard(app="x", task="t"))


def test_small_inception_learns_a_toy_task(tmp_path):
    # Bright square in the left half (class 0) or the right half (class 1).
    rng = np.random.default_rng(0)
    n = 96
    x = rng.normal(0, 0.3, size=(n, 24, 24, 1)).astype("float32")
    y = rng.integers(0, 2, n)
    for i, label in enumerate(y):
        c = rng.integers(2, 8) + 12 * label
        r = rng.integers(2, 18)
        x[i, r:r + 4, c:c + 4, 0] += 2.0
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype("int32"))).shuffle(n, seed=0).batch(16)

    def build():
        return inception.classifier((24, 24, 1), {"cls": 2}, width=8, dropout=0.0)

    def loss(y_true, y_pred):
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred["cls"], from_logits=True)

    cfg = TrainConfig(epochs=6, batch_size=16, learning_rate=3e-3, progress=False, tensorboard=False)
    # One device: replica equivalence is tested in test_training; here only learning matters.
    result = train(build, ds, loss, cfg, tmp_path, strategy=resolve_strategy("cpu"))
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.6 * losses[0]
