"""BatchNorm folding: the inference-only copy gives the trained model's probabilities."""
import numpy as np
import pytest

from deepsci.apps.pathology import patches
from deepsci.apps.pathology.model import build_model
from deepsci.apps.pathology.predict import fold_batchnorm, foldable_pairs
from deepsci.apps.pathology.train import PathologyTrainConfig


def _randomise_batchnorm(model, seed: int) -> int:
    """Non-trivial statistics (a fresh model's are mean 0, var 1: folding them proves little)."""
    import keras

    rng = np.random.default_rng(seed)
    n_bn = 0
    stack = [model]
    while stack:
        for layer in stack.pop().layers:
            if isinstance(layer, keras.Model):
                stack.append(layer)
            elif isinstance(layer, keras.layers.BatchNormalization):
                c = layer.moving_mean.shape[0]
                layer.moving_mean.assign(rng.normal(0, 0.5, c).astype("float32"))
                layer.moving_variance.assign(rng.uniform(0.3, 3.0, c).astype("float32"))
                if layer.center:
                    layer.beta.assign(rng.normal(0, 0.3, c).astype("float32"))
                n_bn += 1
    return n_bn


def _count(model, cls) -> int:
    import keras

    n = 0
    for layer in model.layers:
        n += _count(layer, cls) if isinstance(layer, keras.Model) else isinstance(layer, cls)
    return n


@pytest.mark.parametrize("variant,mags,patch", [("small", (20.0,), 32), ("small", (40.0, 20.0), 32),
                                                ("v3", (20.0,), 75)])
def test_folded_copy_gives_the_same_probabilities(variant, mags, patch):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)  # the initial weights too: the check below must not depend on luck
    cfg = PathologyTrainConfig(slides=".", out=".", width=8, variant=variant,
                               patch=patches.PatchConfig(patch_size=patch, magnifications=mags, center_size=16))
    model = build_model(cfg)
    n_bn = _randomise_batchnorm(model, seed=3)
    # a strong random head spreads the untrained features' small differences over the probabilities
    head = model.get_layer("tumor")
    head.kernel.assign(np.random.default_rng(4).normal(0, 2.0, head.kernel.shape).astype("float32"))
    assert len(foldable_pairs(model)) == n_bn  # every Conv-BN-ReLU of the core Inceptions folds
    folded = fold_batchnorm(model)
    assert _count(folded, keras.layers.BatchNormalization) == 0
    assert _count(folded, keras.layers.Conv2D) == _count(model, keras.layers.Conv2D)
    rng = np.random.default_rng(0)
    # patches of different brightness (noise alone averages out in an untrained network)
    level = np.linspace(-0.8, 0.8, 4, dtype="float32")[:, None, None, None]
    x = [(level + rng.uniform(-0.2, 0.2, (4, patch, patch, 3))).astype("float32") for _ in mags]
    inp = x[0] if len(mags) == 1 else x
    logits = model(inp, training=False)["tumor"].numpy()
    folded_logits = folded(inp, training=False)["tumor"].numpy()
    # random BatchNorm statistics move the logits far from where an unfolded or half-folded copy
    # would put them (a fold that drops the bias fails here); untrained v3 gives nearly equal
    # logits for every patch, so the check is on values, not on their spread
    # logits too: saturated probabilities alone would hide a wrong fold
    np.testing.assert_allclose(folded_logits, logits, atol=1e-3, rtol=1e-4)
    want = tf.sigmoid(logits).numpy()
    np.testing.assert_allclose(tf.sigmoid(folded_logits).numpy(), want, atol=1e-4, rtol=0)
    # the original is untouched (folding works on a copy)
    np.testing.assert_allclose(tf.sigmoid(model(inp, training=False)["tumor"]).numpy(), want, atol=0)


def test_fold_leaves_unfoldable_layers_alone():
    import keras

    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, use_bias=False, padding="same")(inputs)
    shared = keras.layers.BatchNormalization()(a)
    # the convolution output feeds two layers: folding the BatchNorm into it would change the other branch
    out = keras.layers.Concatenate()([shared, a])
    model = keras.Model(inputs, out)
    _randomise_batchnorm(model, seed=1)
    assert foldable_pairs(model) == {}
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(fold_batchnorm(model)(x, training=False).numpy(),
                               model(x, training=False).numpy(), atol=1e-6)
