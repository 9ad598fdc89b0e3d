"""The Inception family shared by the image apps (retinopathy, pathology, variants).

* :func:`inception_v3` — the full Inception-v3 (Szegedy et al. 2016) for any
  input of at least 75 × 75 pixels and any number of channels (e.g. 100 × 221
  × 7 pileups). ImageNet weights are used only when the user gives a local
  weights file; nothing is downloaded.
* :func:`small_inception` — the same mixed-block structure (35×35-style,
  17×17-style factorised 7×1/1×7, 8×8-style expanded blocks, each stage
  followed by a grid reduction) with fewer blocks and filters: it trains in
  minutes on a CPU.
* :func:`classifier` and :func:`multi_tower` put heads on either backbone; the
  heads return logits.

All models are plain functional Keras graphs of built-in layers, so they
serialise without custom objects and load with ``safe_mode=True``.
"""
from __future__ import annotations

import os
import warnings

import keras
from keras import layers

from ..errors import ConfigError, InputError

__all__ = ["inception_v3", "small_inception", "backbone", "classifier", "multi_tower"]

_MIN_V3 = 75


def _check_shape(input_shape, minimum: int, name: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"Expected input_shape (H, W, C). Received: input_shape={input_shape}")
    h, w, c = input_shape
    if min(h, w) < minimum or c < 1:
        raise ValueError(
            f"Expected {name} inputs of at least {minimum}x{minimum} pixels and >= 1 channel. "
            f"Received: input_shape={tuple(input_shape)}")
    return int(h), int(w), int(c)


def _v3_from_file(model: keras.Model, weights: str, channels: int) -> None:
    """Load ImageNet weights saved for 3 channels into a model with ``channels``."""
    if channels == 3:
        model.load_weights(weights, skip_mismatch=False)
        return
    ref = keras.applications.InceptionV3(include_top=False, weights=None, pooling="avg",
                                         input_shape=(299, 299, 3))
    ref.load_weights(weights)
    for src, dst in zip(ref.layers, model.layers, strict=True):
        values = src.get_weights()
        if values and values[0].ndim == 4 and values[0].shape[2] == 3 and dst is model.layers[1]:
            # First convolution: spread the RGB filters over the new channels
            # (mean over colour, scaled so activations keep their magnitude).
            kernel = values[0].mean(axis=2, keepdims=True).repeat(channels, axis=2) * (3 / channels)
            values = [kernel, *values[1:]]
        dst.set_weights(values)


def inception_v3(
    input_shape: tuple[int, int, int] = (299, 299, 3),
    *,
    weights: str | os.PathLike | None = None,
    name: str = "inception_v3",
) -> keras.Model:
    """Full Inception-v3 backbone: ``(N, H, W, C) -> (N, 2048)`` pooled features.

    Parameters
    ----------
    input_shape : (H, W, C)
        Any ``H, W >= 75`` and any ``C``.
    weights : path, optional
        A local Keras weights file of Inception-v3 without top (e.g. the
        ``*_notop.h5`` ImageNet file). For ``C != 3`` the first convolution's
        RGB filters are averaged and spread over the channels.
    name : str
        Model name; give each tower its own.
    """
    h, w, c = _check_shape(input_shape, _MIN_V3, "Inception-v3")
    if weights is not None and not os.path.exists(weights):
        raise InputError("expected a local Inception-v3 weights file, found no file", weights)
    with warnings.catch_warnings():
        # Keras warns about channel counts other than 1 or 3; any count is intended here.
        warnings.simplefilter("ignore", UserWarning)
        model = keras.applications.InceptionV3(include_top=False, weights=None, pooling="avg",
                                               input_shape=(h, w, c), name=name)
    if weights is not None:
        _v3_from_file(model, os.fspath(weights), c)
    return model


def _conv(x, filters: int, kernel, strides=1, padding="same", name=None):
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False,
                      name=None if name is None else name + "_conv")(x)
    x = layers.BatchNormalization(scale=False, name=None if name is None else name + "_bn")(x)
    return layers.Activation("relu", name=None if name is None else name + "_relu")(x)


def _block_a(x, f: int, name: str):
    b1 = _conv(x, f, 1, name=f"{name}_1x1")
    b5 = _conv(_conv(x, f * 3 // 4, 1, name=f"{name}_5a"), f, 3, name=f"{name}_5b")
    b3 = _conv(x, f, 1, name=f"{name}_3a")
    b3 = _conv(_conv(b3, f * 3 // 2, 3, name=f"{name}_3b"), f * 3 // 2, 3, name=f"{name}_3c")
    bp = _conv(layers.AveragePooling2D(3, 1, "same", name=f"{name}_pool")(x), f // 2, 1,
               name=f"{name}_pp")
    return layers.Concatenate(name=name)([b1, b5, b3, bp])


def _block_b(x, f: int, name: str):
    m = f * 2 // 3
    b1 = _conv(x, f, 1, name=f"{name}_1x1")
    b7 = _conv(x, m, 1, name=f"{name}_7a")
    b7 = _conv(_conv(b7, m, (1, 7), name=f"{name}_7b"), f, (7, 1), name=f"{name}_7c")
    bd = _conv(x, m, 1, name=f"{name}_d7a")
    for i, k in enumerate([(7, 1), (1, 7), (7, 1)]):
        bd = _conv(bd, m if i < 2 else f, k, name=f"{name}_d7{'bcd'[i]}")
    bp = _conv(layers.AveragePooling2D(3, 1, "same", name=f"{name}_pool")(x), f, 1,
               name=f"{name}_pp")
    return layers.Concatenate(name=name)([b1, b7, bd, bp])


def _block_c(x, f: int, name: str):
    b1 = _conv(x, f, 1, name=f"{name}_1x1")
    b3 = _conv(x, f, 1, name=f"{name}_3a")
    b3 = layers.Concatenate(name=f"{name}_3cat")(
        [_conv(b3, f, (1, 3), name=f"{name}_3b1"), _conv(b3, f, (3, 1), name=f"{name}_3b2")])
    bd = _conv(_conv(x, f, 1, name=f"{name}_d3a"), f, 3, name=f"{name}_d3b")
    bd = layers.Concatenate(name=f"{name}_dcat")(
        [_conv(bd, f, (1, 3), name=f"{name}_d3c1"), _conv(bd, f, (3, 1), name=f"{name}_d3c2")])
    bp = _conv(layers.AveragePooling2D(3, 1, "same", name=f"{name}_pool")(x), f, 1,
               name=f"{name}_pp")
    return layers.Concatenate(name=name)([b1, b3, bd, bp])


def _reduce(x, f: int, name: str):
    b3 = _conv(x, f, 3, strides=2, name=f"{name}_3")
    bd = _conv(_conv(x, f // 2, 1, name=f"{name}_d1"), f // 2, 3, name=f"{name}_d2")
    bd = _conv(bd, f // 2, 3, strides=2, name=f"{name}_d3")
    bp = layers.MaxPooling2D(3, 2, "same", name=f"{name}_pool")(x)
    return layers.Concatenate(name=name)([b3, bd, bp])


def small_inception(
    input_shape: tuple[int, int, int],
    *,
    blocks: tuple[int, int, int] = (1, 1, 1),
    width: int = 32,
    name: str = "small_inception",
) -> keras.Model:
    """Small Inception backbone: ``(N, H, W, C) -> (N, F)`` pooled features.

    The stem halves the resolution once, then ``blocks[i]`` mixed blocks of
    kind A (3×3 and double-3×3 branches), B (factorised 1×7/7×1) and C
    (expanded 1×3/3×1) run with a grid reduction between stages, as in
    Inception-v3, with ``width`` filters per branch in the first stage.

    Parameters
    ----------
    input_shape : (H, W, C)
        Any ``H, W >= 16``.
    blocks : (int, int, int)
        Mixed blocks per stage (Inception-v3 has 3, 4 and 2).
    width : int
        Filters per branch in stage A; stages B and C use 1.5× and 2×.

    Examples
    --------
    >>> m = small_inception((64, 64, 3), width=8)
    >>> m.output_shape[0] is None and m.output_shape[1] > 0
    True
    """
    _check_shape(input_shape, 16, "small Inception")
    if len(blocks) != 3 or min(blocks) < 0:
        raise ValueError(f"Expected blocks as three counts >= 0. Received: blocks={blocks}")
    if width < 4:
        raise ValueError(f"Expected width >= 4. Received: width={width}")
    inputs = keras.Input(tuple(input_shape), name=f"{name}_input")
    x = _conv(inputs, width, 3, strides=2, name=f"{name}_stem1")
    x = _conv(x, width, 3, name=f"{name}_stem2")
    stages = [(_block_a, width), (_block_b, width * 3 // 2), (_block_c, width * 2)]
    for s, ((block, f), n) in enumerate(zip(stages, blocks, strict=True)):
        for i in range(n):
            x = block(x, f, name=f"{name}_mixed{s}_{i}")
        if s < 2:
            x = _reduce(x, f, name=f"{name}_reduce{s}")
    x = layers.GlobalAveragePooling2D(name=f"{name}_gap")(x)
    return keras.Model(inputs, x, name=name)


def backbone(variant: str, input_shape, **kw) -> keras.Model:
    """``inception_v3`` for ``variant="v3"``, ``small_inception`` for ``"small"``."""
    if variant == "v3":
        return inception_v3(input_shape, **kw)
    if variant == "small":
        kw.pop("weights", None)
        return small_inception(input_shape, **kw)
    raise ConfigError(f"expected an Inception variant 'v3' or 'small', found {variant!r}")


def _heads(features, heads: dict[str, int], dropout: float):
    if not heads:
        raise ValueError(f"Expected at least one head. Received: heads={heads}")
    if dropout:
        features = layers.Dropout(dropout, name="head_dropout")(features)
    outputs = {}
    for head, units in heads.items():
        if int(units) < 1:
            raise ValueError(f"Expected units >= 1 for head {head!r}. Received: {units}")
        # float32 heads keep logits and losses stable under mixed precision.
        outputs[head] = layers.Dense(int(units), dtype="float32", name=head)(features)
    return outputs


def classifier(
    input_shape: tuple[int, int, int],
    heads: dict[str, int],
    *,
    variant: str = "small",
    dropout: float = 0.2,
    weights: str | None = None,
    name: str = "inception_classifier",
    **kw,
) -> keras.Model:
    """An Inception backbone with one dense head per task, returning logits.

    Parameters
    ----------
    input_shape : (H, W, C)
    heads : dict
        Head name -> units, e.g. ``{"grade": 5, "referable": 1}``.
    variant : {"small", "v3"}
    dropout : float
        Dropout before the heads.
    weights : path, optional
        Local Inception-v3 weights (``variant="v3"`` only).
    **kw
        Passed to the backbone (``blocks``, ``width`` for the small one).

    Returns
    -------
    keras.Model
        ``(N, H, W, C) -> {head: (N, units)}`` logits.
    """
    inputs = keras.Input(tuple(input_shape), name="image")
    net = backbone(variant, input_shape, weights=weights, name=f"{name}_backbone", **kw)
    return keras.Model(inputs, _heads(net(inputs), heads, dropout), name=name)


def multi_tower(
    input_shapes: list[tuple[int, int, int]],
    heads: dict[str, int],
    *,
    variant: str = "small",
    dropout: float = 0.2,
    weights: str | None = None,
    name: str = "multi_tower",
    **kw,
) -> keras.Model:
    """Several Inception towers, one per input scale, features concatenated.

    Used for multi-magnification patches (e.g. 40×, 20×, 10× sharing a centre).

    Parameters
    ----------
    input_shapes : list of (H, W, C)
        One per tower, in the order the inputs are given.
    heads, variant, dropout, weights, **kw
        As :func:`classifier`.

    Returns
    -------
    keras.Model
        ``[(N, H_i, W_i, C_i), ...] -> {head: (N, units)}`` logits.
    """
    if len(input_shapes) < 1:
        raise ValueError(f"Expected at least one tower. Received: input_shapes={input_shapes}")
    inputs, feats = [], []
    for i, shape in enumerate(input_shapes):
        x = keras.Input(tuple(shape), name=f"scale{i}")
        tower = backbone(variant, shape, weights=weights, name=f"{name}_tower{i}", **kw)
        inputs.append(x)
        feats.append(tower(x))
    features = feats[0] if len(feats) == 1 else layers.Concatenate(name="towers")(feats)
    return keras.Model(inputs, _heads(features, heads, dropout), name=name)
