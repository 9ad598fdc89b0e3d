"""Precise BatchNorm: exact moving statistics for models trained briefly.

With Keras' momentum 0.99, a run of a few hundred steps leaves the moving
mean and variance mostly at their initial values, so inference-mode outputs
differ from training-mode ones (scores collapse to one class). Running the
final weights over some training batches in training mode with momentum
``i / (i + 1)`` for the ``i``-th batch makes the moving statistics the exact
average over those batches (as SWA's ``update_bn`` does).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import keras

__all__ = ["batchnorm_layers", "precise_batchnorm"]


def batchnorm_layers(model: keras.Model) -> Iterator[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of ``model``, nested models included."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer
        elif isinstance(layer, keras.Model):
            yield from batchnorm_layers(layer)


def precise_batchnorm(model: keras.Model, batches: Iterable) -> int:
    """Set BatchNorm moving statistics to their exact average over ``batches``.

    Parameters
    ----------
    model : keras.Model
    batches : iterable
        Model inputs, e.g. ``(N, H, W, C)`` arrays of un-augmented training
        images; a few dozen batches suffice.

    Returns
    -------
    int
        Number of batches used. Momentum values are restored afterwards.
    """
    layers = list(batchnorm_layers(model))
    if not layers:
        return 0
    saved = [layer.momentum for layer in layers]
    n = 0
    try:
        for x in batches:
            for layer in layers:
                layer.momentum = n / (n + 1.0)
            model(x, training=True)
            n += 1
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return n
