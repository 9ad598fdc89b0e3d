import keras
import numpy as np

from deepsci.core.models.batchnorm import batchnorm_layers, precise_batchnorm


def test_moving_statistics_become_the_exact_batch_average():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    i = keras.Input((3,))
    model = keras.Model(i, keras.layers.BatchNormalization()(inner(i)))
    layers = list(batchnorm_layers(model))
    assert len(layers) == 2
    rng = np.random.default_rng(0)
    batches = [rng.normal(5.0, 2.0, size=(16, 3)).astype("float32") for _ in range(4)]
    assert precise_batchnorm(model, iter(batches)) == 4
    first = layers[0] if layers[0] in inner.layers else layers[1]
    expected_mean = np.mean([b.mean(axis=0) for b in batches], axis=0)
    np.testing.assert_allclose(first.moving_mean.numpy(), expected_mean, rtol=1e-5)
    assert all(layer.momentum == 0.99 for layer in layers)
    assert precise_batchnorm(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), batches) == 0
