"""Flood-filling network (FFN) convstack for 3-D neuron segmentation.

The network of Januszewski et al. (Nature Methods 2018, arXiv 1611.00421):
its input is an image patch (the field of view, FOV) concatenated with the
current object-mask logits over the same patch; two 3x3x3 convolutions are
followed by ``depth - 1`` residual modules of two convolutions each, a 1x1x1
convolution reduces to one channel, and that output is *added* to the input
logits, so the network learns an update of its own previous estimate.

Axis order is ``(N, Z, Y, X, C)`` throughout; channel 0 is the normalised
image, channel 1 the logits.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import keras

try:
    from .serialization import register
except ImportError:  # the serialization module is written concurrently by the core
    register = keras.saving.register_keras_serializable(package="deepsci")

__all__ = [
    "FFNConfig",
    "PRESETS",
    "FFNResidualModule",
    "FFNConvStack",
    "ffn_model",
    "ffn_flops_per_fov",
]


@dataclass
class FFNConfig:
    """Shape of an FFN.

    Attributes
    ----------
    fov_size : tuple of int
        Field of view ``(Z, Y, X)``; odd sizes keep a centre voxel.
    deltas : tuple of int
        Movement step ``(Z, Y, X)`` of the FOV during flood filling.
    depth : int
        Number of convolution pairs (the first pair plus ``depth - 1`` residual modules).
    features : int
        Channels of every 3x3x3 convolution.
    """

    fov_size: tuple[int, int, int] = (17, 17, 17)
    deltas: tuple[int, int, int] = (4, 4, 4)
    depth: int = 4
    features: int = 16

    def __post_init__(self):
        self.fov_size = tuple(int(v) for v in self.fov_size)
        self.deltas = tuple(int(v) for v in self.deltas)
        if len(self.fov_size) != 3 or any(v < 3 or v % 2 == 0 for v in self.fov_size):
            raise ValueError(f"Expected fov_size as three odd sizes >= 3. Received: {self.fov_size}")
        if len(self.deltas) != 3 or any(d < 1 or 2 * d >= f for d, f in zip(self.deltas, self.fov_size, strict=True)):
            raise ValueError(
                "Expected deltas as three steps with 1 <= delta < fov_size / 2. "
                f"Received: deltas={self.deltas}, fov_size={self.fov_size}"
            )
        if int(self.depth) < 1 or int(self.features) < 1:
            raise ValueError(f"Expected depth >= 1 and features >= 1. Received: depth={self.depth}, features={self.features}")

    def to_dict(self) -> dict:
        return asdict(self)


#: ``cpu`` trains in minutes on a laptop; ``google`` is the published google/ffn size (for GPUs).
PRESETS: dict[str, FFNConfig] = {
    "tiny": FFNConfig(fov_size=(9, 9, 9), deltas=(2, 2, 2), depth=2, features=8),
    "cpu": FFNConfig(fov_size=(17, 17, 17), deltas=(4, 4, 4), depth=4, features=16),
    "google": FFNConfig(fov_size=(33, 33, 33), deltas=(8, 8, 8), depth=9, features=32),
}


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected `{name}` to be a positive integer. Received: {name}={value!r}")
    return value


def _conv(features: int, kernel: int, name: str, activation=None) -> keras.layers.Conv3D:
    return keras.layers.Conv3D(
        features, kernel, padding="same", activation=activation, name=name,
        kernel_initializer="he_normal" if activation else "glorot_uniform",
    )


@register
class FFNResidualModule(keras.layers.Layer):
    """Pre-activation residual module: ``x + conv(relu(conv(relu(x))))``.

    Parameters
    ----------
    features : int
        Channels of both 3x3x3 convolutions (must equal the input channels).

    Input and output shape ``(N, Z, Y, X, features)``.
    """

    def __init__(self, features: int, **kwargs):
        super().__init__(**kwargs)
        self.features = _check_positive_int("features", features)
        self.conv_a = _conv(features, 3, "conv_a", activation="relu")
        self.conv_b = _conv(features, 3, "conv_b")

    def build(self, input_shape):
        if input_shape[-1] != self.features:
            raise ValueError(
                f"Expected input with {self.features} channels. Received: input_shape={tuple(input_shape)}"
            )
        self.conv_a.build(input_shape)
        self.conv_b.build(tuple(input_shape[:-1]) + (self.features,))
        self.built = True

    def call(self, x, training=None):
        y = self.conv_a(keras.ops.relu(x))
        return x + self.conv_b(y)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "features": self.features}


@register
class FFNConvStack(keras.layers.Layer):
    """The FFN: image ⊕ logits -> updated logits (additive update).

    Parameters
    ----------
    depth : int
        Convolution pairs; ``depth - 1`` of them are residual modules.
    features : int
        Channels of the 3x3x3 convolutions.

    Input shape ``(N, Z, Y, X, 2)`` (channel 0 image, channel 1 logits); output
    shape ``(N, Z, Y, X, 1)``: ``input[..., 1:] + f(input)``.
    """

    def __init__(self, depth: int = 4, features: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.depth = _check_positive_int("depth", depth)
        self.features = _check_positive_int("features", features)
        self.conv0_a = _conv(features, 3, "conv0_a", activation="relu")
        self.conv0_b = _conv(features, 3, "conv0_b")
        self.residuals = [FFNResidualModule(features, name=f"residual{i}") for i in range(1, depth)]
        # Also as attributes: TensorFlow's object graph (tf.train.Checkpoint(model=...), used for
        # the best weights of a run) does not look inside a Keras 3 layer's list attributes.
        for i, module in enumerate(self.residuals, start=1):
            setattr(self, f"residual{i}", module)
        self.conv_out = _conv(1, 1, "conv_lom")

    def build(self, input_shape):
        if len(input_shape) != 5 or input_shape[-1] != 2:
            raise ValueError(
                "Expected input of shape (N, Z, Y, X, 2) = image and logits. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.conv0_a.build(input_shape)
        hidden = tuple(input_shape[:-1]) + (self.features,)
        self.conv0_b.build(hidden)
        for module in self.residuals:
            module.build(hidden)
        self.conv_out.build(hidden)
        self.built = True

    def call(self, x, training=None):
        net = self.conv0_b(self.conv0_a(x))
        for module in self.residuals:
            net = module(net, training=training)
        update = self.conv_out(keras.ops.relu(net))
        # Additive update: the network refines its own previous estimate.
        return x[..., 1:2] + keras.ops.cast(update, x.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (1,)

    def get_config(self):
        return {**super().get_config(), "depth": self.depth, "features": self.features}


def ffn_model(config: FFNConfig | None = None, *, name: str = "ffn", **overrides) -> keras.Model:
    """Build the FFN as a Keras model with a fixed FOV.

    Parameters
    ----------
    config : FFNConfig, optional
        Model shape (default: the ``cpu`` preset); keyword overrides replace fields.

    Returns
    -------
    keras.Model
        ``(N, Z, Y, X, 2) -> (N, Z, Y, X, 1)`` logits, ``(Z, Y, X) = config.fov_size``.
    """
    cfg = config or PRESETS["cpu"]
    if overrides:
        cfg = FFNConfig(**{**cfg.to_dict(), **overrides})
    inputs = keras.Input(shape=(*cfg.fov_size, 2), name="image_logits")
    outputs = FFNConvStack(cfg.depth, cfg.features, name="convstack")(inputs)
    return keras.Model(inputs, outputs, name=name)


def ffn_flops_per_fov(config: FFNConfig) -> float:
    """Floating-point operations (multiply + add = 2) of one FOV evaluation."""
    z, y, x = config.fov_size
    vox = z * y * x
    f = config.features
    per_voxel = 2 * 27 * 2 * f + (2 * config.depth - 1) * 2 * 27 * f * f + 2 * f
    return float(vox * per_voxel)
