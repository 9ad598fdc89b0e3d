"""Inference of the patch classifier: what the heatmap runs on every tile batch.

* :func:`fold_batchnorm` - an inference-only copy of a trained classifier with
  BatchNorm folded into the convolutions. Every ``Conv2D(use_bias=False) ->
  BatchNormalization -> ReLU`` triple of the core Inceptions computes, at
  inference, ``relu(conv(x, k) * g + b)`` with the per-channel ``g = gamma /
  sqrt(var + eps)`` and ``b = beta - mean * g``; the copy holds one
  ``Conv2D(kernel=k * g, bias=b, activation="relu")`` per triple instead.
  TensorFlow's grappler remapper then runs it as one fused Conv2D+BiasAdd+Relu
  kernel, so the narrow (16-64 channel) layers of the small Inception no
  longer pass over their activations three times. The copy computes the same
  probabilities (to float32 rounding) and is never saved or trained.
* :func:`tile_predictor` - uint8 tiles in, tumour probabilities out (optionally
  8-orientation TTA in the graph): a core :class:`~deepsci.core.predict.Predictor`,
  traced once for one fixed batch shape.
* :class:`LiteRTTiles` - the same step for a ``.tflite`` export (``pathology export``):
  scaling and TTA in NumPy around the LiteRT interpreter, which takes the
  model's own float inputs.
* :func:`engine` - this process's ready model (card checked, loaded, folded or
  interpreted, traced, run once), kept so that a Dask worker serves the next
  run on the same cluster at once. A ``.tflite`` file is loaded by path in the
  worker itself: LiteRT interpreters cannot be pickled.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.models.card import ModelCard, read_card
from deepsci.core.parallel import limit_tf_threads

from .model import APP, TASK
from .patches import preprocess

__all__ = ["fold_batchnorm", "foldable_pairs", "TileModel", "tumour_probability", "orientation_mean",
           "tile_predictor", "LiteRTTiles", "scale_tiles", "Engine", "engine", "drop_cached_models",
           "warm_worker"]


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


class TileModel:
    """uint8 tiles of every magnification -> tumour logits: what :func:`tile_predictor` traces.

    Scaling to [-1, 1] and, with ``tta``, the 8 orientations (stacked along
    the batch, so one model call with 8x the rows and bigger GEMMs; patches
    are square) run inside the traced graph.

    Parameters
    ----------
    model : keras.Model
        Pathology classifier (folded or not): ``(N, P, P, 3)`` float per
        magnification -> ``{"tumor": (N, 1)}`` logits.
    scales : int
        Number of magnifications (model inputs).
    tta : bool
        Return the logits of all 8 orientations, ``(8 N,)``, orientation-major.
    """

    def __init__(self, model, *, scales: int, tta: bool = False):
        if scales < 1:
            raise ValueError(f"Expected scales >= 1. Received: {scales}")
        self.model, self.scales, self.tta = model, int(scales), bool(tta)

    def __call__(self, xs, training: bool = False):
        """``xs``: one uint8 ``(N, P, P, 3)`` per magnification (or one array) -> logits ``(N,)`` / ``(8 N,)``."""
        import tensorflow as tf

        xs = [preprocess(x) for x in (xs if isinstance(xs, (list, tuple)) else [xs])]
        if len(xs) != self.scales:
            raise ValueError(f"Expected {self.scales} inputs (one per magnification). Received: {len(xs)}")
        if self.tta:
            xs = [tf.concat([v[i] for v in _orientations(xs)], axis=0) for i in range(self.scales)]
        return self.model(xs[0] if self.scales == 1 else tuple(xs), training=training)["tumor"][:, 0]


def tumour_probability(logits):
    """Tumour logits ``(N,)`` -> probabilities ``(N,)`` (the predictor's postprocess)."""
    import tensorflow as tf

    return tf.sigmoid(logits)


def orientation_mean(logits):
    """Logits of the 8 orientations ``(8 N,)`` -> mean tumour probability ``(N,)``."""
    import tensorflow as tf

    return tf.reduce_mean(tf.reshape(tf.sigmoid(logits), (8, -1)), axis=0)


def tile_predictor(model, *, scales: int, batch_size: int, tta: bool = False, xla: bool = False):
    """The heatmap's inference step: a core :class:`~deepsci.core.predict.Predictor` over tiles.

    Parameters
    ----------
    model : keras.Model
        Pathology classifier (folded or not), see :class:`TileModel`.
    scales : int
        Number of magnifications.
    batch_size : int
        Rows per traced call; the last batch of a slide is padded, so a
        slide never triggers a second trace.
    tta : bool
        Average the probabilities of the 8 orientations.
    xla : bool
        Compile the step with XLA.

    Returns
    -------
    deepsci.core.predict.Predictor
        ``p(xs)``: one uint8 array ``(N, P, P, 3)`` per magnification (any
        ``N``) -> float32 tumour probabilities ``(N,)``.
    """
    from deepsci.core.predict import Predictor

    # Not the core's per-model cache: its entries keep their model alive, and a
    # long-lived worker must free a replaced model (see :func:`engine`).
    return Predictor(TileModel(model, scales=scales, tta=tta), batch_size=batch_size, xla=xla,
                     postprocess=orientation_mean if tta else tumour_probability)


def scale_tiles(x: np.ndarray) -> np.ndarray:
    """uint8 tiles ``(N, P, P, 3)`` -> float32 in [-1, 1], the same float32 arithmetic as
    :func:`.patches.preprocess`, in NumPy (no TensorFlow in a LiteRT worker's step)."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    return (x.astype(np.float32) * np.float32(2.0) - np.float32(1.0)).astype(np.float32)


def _np_orientations(x: np.ndarray) -> list[np.ndarray]:
    # The same 8 views as _orientations (the dihedral group of the square); their mean
    # does not depend on the order.
    views = []
    for k in range(4):
        r = np.rot90(x, k, axes=(1, 2))
        views += [r, r[:, :, ::-1]]
    return views


class LiteRTTiles:
    """uint8 tiles of every magnification -> tumour probabilities, run by a LiteRT export.

    Parameters
    ----------
    predictor : deepsci.core.litert.LiteRTPredictor
        The exported classifier: ``(N, P, P, 3)`` float in [-1, 1] per
        magnification -> ``{"tumor": (N, 1)}`` logits (any ``N``; it pads to
        the file's batch).
    scales : int
        Number of magnifications.
    tta : bool
        Average the probabilities of the 8 orientations.
    """

    def __init__(self, predictor, *, scales: int, tta: bool = False):
        if scales < 1:
            raise ValueError(f"Expected scales >= 1. Received: {scales}")
        self.predictor, self.scales, self.tta = predictor, int(scales), bool(tta)

    def __call__(self, xs) -> np.ndarray:
        """``xs``: one uint8 ``(N, P, P, 3)`` per magnification -> float32 ``(N,)``."""
        xs = [scale_tiles(x) for x in (xs if isinstance(xs, (list, tuple)) else [xs])]
        if len(xs) != self.scales:
            raise ValueError(f"Expected {self.scales} inputs (one per magnification). Received: {len(xs)}")
        if self.tta:
            xs = [np.ascontiguousarray(np.concatenate(_np_orientations(x), axis=0)) for x in xs]
        out = self.predictor(xs[0] if self.scales == 1 else list(xs))
        logits = np.asarray(out["tumor"] if isinstance(out, dict) else out, np.float32)[:, 0]
        p = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
        return p.reshape(8, -1).mean(axis=0) if self.tta else p


@dataclass
class Engine:
    """A worker process's ready model: loaded, BatchNorm-folded, traced and run once.

    Attributes
    ----------
    card : ModelCard
        The model's card (``input_spec``: patch size, magnifications, centre size).
    predict : deepsci.core.predict.Predictor
        ``predict(xs)``: one uint8 array ``(N, P, P, 3)`` per magnification
        -> tumour probabilities ``(N,)``.
    threads : int
        TensorFlow intra-op threads in force in this process.
    built_at : float
        When building started (seconds since the epoch).
    build_seconds : float
        What building cost (TensorFlow import included on a process's first).
    """

    card: ModelCard
    predict: Callable
    threads: int
    built_at: float
    build_seconds: float


@dataclass
class _Loaded:
    folded: object  # the BatchNorm-folded keras.Model (None for a .tflite export)
    card: ModelCard


# Per process. A Dask worker outlives a run, so the next run on the same
# cluster finds its model here and starts at once.
_MODEL: dict[tuple, _Loaded] = {}   # (path, mtime_ns, size) -> loaded, folded model
_ENGINES: dict[tuple, Engine] = {}  # that key + (batch size, tta, TF threads, xla) -> Engine


def _model_key(model_path: str) -> tuple[str, int, int]:
    st = Path(model_path).stat()  # a model retrained or replaced in place gets a new key
    return (str(Path(model_path).resolve()), st.st_mtime_ns, st.st_size)


def engine(model_path: str, batch_size: int, tta: bool, threads: int | None, *,
           xla: bool = False) -> tuple[Engine, bool]:
    """This process's engine for the model file and settings, and whether it was cached.

    Cached by (model path, modification time, size, batch size, TTA, TF
    threads, XLA): a second call with the same file and settings returns at
    once; a changed file is loaded again (and the old one dropped). ``threads``
    is applied only if TensorFlow has not started in this process yet; the
    key holds the count in force.
    """
    t0, started = time.perf_counter(), time.time()
    used = limit_tf_threads(threads)
    mkey = _model_key(model_path)
    key = (*mkey, int(batch_size), bool(tta), used, bool(xla))
    if key in _ENGINES:
        return _ENGINES[key], True
    if mkey not in _MODEL:
        _MODEL.clear()
        _ENGINES.clear()
        _MODEL[mkey] = _load_folded(model_path)
    loaded = _MODEL[mkey]
    spec = loaded.card.input_spec
    size, scales = int(spec["patch_size"]), len(spec["magnifications"])
    if loaded.folded is None:
        predict = _litert_tiles(model_path, scales=scales, tta=tta, threads=used)
    else:
        predict = tile_predictor(loaded.folded, scales=scales, batch_size=batch_size, tta=tta, xla=xla)
    # The first call also builds the oneDNN kernels: done here, not on a slide's clock.
    predict([np.zeros((batch_size, size, size, 3), np.uint8)] * scales)
    _ENGINES[key] = Engine(loaded.card, predict, used, started, time.perf_counter() - t0)
    return _ENGINES[key], False


def drop_cached_models() -> None:
    """Forget this process's models (the next run starts cold)."""
    _MODEL.clear()
    _ENGINES.clear()


def _litert_tiles(model_path: str, *, scales: int, tta: bool, threads: int) -> LiteRTTiles:
    from deepsci.core.litert import LiteRTModel

    # Interpreter threads are fixed at load: the same count TensorFlow would use here.
    model, _ = LiteRTModel.load(model_path, expect=APP, task=TASK, threads=threads)
    return LiteRTTiles(model.predictor(), scales=scales, tta=tta)


def _load_folded(model_path: str) -> _Loaded:
    from deepsci.core.models.serialization import load_model

    card = read_card(model_path, expect=APP, task=TASK)  # a model without a card is refused too
    if Path(model_path).suffix == ".tflite":
        return _Loaded(None, card)  # interpreted per engine (its threads are set at load)
    model, _ = load_model(model_path, expect=APP, task=TASK)
    # Inference-only copy, same probabilities: Conv+BN+ReLU become one fused
    # kernel, ~1.3x the tiles/s of the narrow small Inception.
    return _Loaded(fold_batchnorm(model), card)


def warm_worker(model_path: str, batch_size: int, tta: bool, xla: bool, threads: int | None) -> dict:
    """Build this worker's engine ahead of its first slide (a Dask task run at cluster start:
    :func:`.cluster.warm_up` appends the worker's ``threads``)."""
    eng, cached = engine(model_path, batch_size, tta, threads, xla=xla)
    return {"worker_pid": os.getpid(), "cached": cached, "build_seconds": eng.build_seconds}
