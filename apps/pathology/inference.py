"""Inference-only copy of a trained patch classifier: BatchNorm folded into the convolutions.

Every ``Conv2D(use_bias=False) -> BatchNormalization -> ReLU`` triple of the
core Inceptions computes, at inference, ``relu(conv(x, k) * g + b)`` with the
per-channel ``g = gamma / sqrt(var + eps)`` and ``b = beta - mean * g``. The
copy returned by :func:`fold_batchnorm` holds one ``Conv2D(kernel=k * g,
bias=b, activation="relu")`` per triple instead. TensorFlow's grappler
remapper then runs it as one fused Conv2D+BiasAdd+Relu kernel, so the
narrow (16-64 channel) layers of the small Inception no longer pass over
their activations three times. The copy computes the same probabilities
(to float32 rounding) and is never saved or trained.

:func:`predict_function` turns a model (folded or as trained) into what the
heatmap runs: uint8 tiles in, tumour probabilities out, traced once for one
fixed batch shape.
"""
from __future__ import annotations

import numpy as np

__all__ = ["fold_batchnorm", "foldable_pairs", "predict_function"]


def _sole_consumer(layer):
    """The one layer that consumes ``layer``'s output, or ``None`` when there are several."""
    nodes = getattr(layer, "_outbound_nodes", [])
    ops = {id(n.operation): n.operation for n in nodes}
    return next(iter(ops.values())) if len(ops) == 1 and len(nodes) == 1 else None


def _walk(model):
    import keras

    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer)


def foldable_pairs(model) -> dict[str, tuple[str, str | None]]:
    """``{conv name: (batchnorm name, relu name or None)}`` for every foldable triple.

    A convolution folds when its only consumer is an inference-mode
    BatchNormalization over the channel axis and it is not already biased or
    activated; the ReLU joins it when it is the BatchNormalization's only consumer.
    """
    import keras

    out = {}
    for conv in _walk(model):
        if type(conv) is not keras.layers.Conv2D or conv.use_bias or conv.activation is not keras.activations.linear:
            continue
        bn = _sole_consumer(conv)
        if type(bn) is not keras.layers.BatchNormalization or bn.axis not in (-1, 3):
            continue
        act = _sole_consumer(bn)
        relu = (act.name if type(act) is keras.layers.Activation
                and act.activation is keras.activations.relu else None)
        out[conv.name] = (bn.name, relu)
    return out


def _folded_weights(conv, bn) -> tuple[np.ndarray, np.ndarray]:
    kernel = conv.get_weights()[0]
    mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    gamma = bn.gamma.numpy() if bn.scale else np.ones_like(mean)
    beta = bn.beta.numpy() if bn.center else np.zeros_like(mean)
    # float64 for the product so folding itself adds no rounding beyond float32 storage
    g = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + bn.epsilon)
    return (kernel * g).astype(np.float32), (beta - mean * g).astype(np.float32)


def fold_batchnorm(model):
    """An inference-only copy of ``model`` with BatchNorm folded into the convolutions.

    Parameters
    ----------
    model : keras.Model
        A functional model (nested functional models allowed), e.g. the
        pathology classifier ``(N, P, P, 3) -> {"tumor": (N, 1)}`` logits.

    Returns
    -------
    keras.Model
        Same inputs and outputs; call it with ``training=False`` only (its
        BatchNorm statistics are constants now). Layers that do not fold are
        cloned unchanged with the original weights.
    """
    import keras

    pairs = foldable_pairs(model)
    folded_bn = {bn for bn, _ in pairs.values()}
    folded_relu = {relu for _, relu in pairs.values() if relu}
    originals = {layer.name: layer for layer in _walk(model)}

    def clone(layer):
        if layer.name in pairs:
            cfg = {**layer.get_config(), "use_bias": True}
            if pairs[layer.name][1]:
                cfg["activation"] = "relu"
            return keras.layers.Conv2D.from_config(cfg)
        return layer.__class__.from_config(layer.get_config())

    def call(layer, *args, **kwargs):
        # a folded BatchNorm or ReLU is skipped: the convolution before it did its work
        return args[0] if layer.name in skipped else layer(*args, **kwargs)

    skipped = folded_bn | folded_relu
    copy = keras.models.clone_model(model, clone_function=clone, call_function=call, recursive=True)
    for layer in _walk(copy):
        if not layer.weights or isinstance(layer, keras.Model):
            continue  # input layers (renamed by the cloning), pooling, concatenation, nested models
        src = originals[layer.name]
        if layer.name in pairs:
            layer.set_weights(list(_folded_weights(src, originals[pairs[layer.name][0]])))
        else:
            layer.set_weights(src.get_weights())
    return copy


def _orientations(xs):
    """The 8 orientations (4 rotations, each also mirrored) of every scale's batch."""
    import tensorflow as tf

    views = []
    for k in range(4):
        r = [tf.image.rot90(x, k) for x in xs]
        views += [r, [tf.image.flip_left_right(x) for x in r]]
    return views


def predict_function(model, *, patch_size: int, scales: int, batch_size: int, tta: bool = False):
    """The heatmap's inference step, traced once for a fixed batch shape.

    Parameters
    ----------
    model : keras.Model
        Pathology classifier (folded or not): ``(N, P, P, 3)`` per scale -> ``{"tumor": (N, 1)}`` logits.
    patch_size, scales : int
        ``P`` and the number of magnifications (model inputs).
    batch_size : int
        The only batch size it accepts; the caller pads the last batch, so
        a slide never triggers a second trace.
    tta : bool
        Average the 8 orientations, stacked along the batch (patches are
        square): one model call with 8x the rows, bigger GEMMs.

    Returns
    -------
    callable
        ``f(*xs)`` with one uint8 tensor ``(batch_size, P, P, 3)`` per scale ->
        float32 probabilities ``(batch_size,)``. Scaling to [-1, 1] runs in the graph.
    """
    import tensorflow as tf

    from .patches import preprocess

    def predict(*xs):
        xs = [preprocess(x) for x in xs]
        if tta:
            xs = [tf.concat([v[i] for v in _orientations(xs)], axis=0) for i in range(scales)]
        logits = model(xs[0] if scales == 1 else tuple(xs), training=False)["tumor"][:, 0]
        probs = tf.sigmoid(logits)
        return tf.reduce_mean(tf.reshape(probs, (8, -1)), axis=0) if tta else probs

    spec = [tf.TensorSpec((batch_size, patch_size, patch_size, 3), tf.uint8)] * scales
    return tf.function(predict, input_signature=spec).get_concrete_function()
