"""The genotype classifier and its input pipeline.

The network is the core Inception classifier (:func:`deepsci.core.models.inception.classifier`)
with one 3-way head, ``genotype``: the number of copies (0, 1, 2) of the shown alt alleles,
i.e. hom-ref, het, hom-alt. Pixels are mapped from [0, 254] to [-1, 1] inside the model,
as DeepVariant does, so a saved model takes the raw uint8 pileups.
"""
from __future__ import annotations

import os
from pathlib import Path

from .augment import augment_example
from .pileup import CHANNEL_NAMES, CHANNELS, HEIGHT, WIDTH

__all__ = ["build_model", "example_dataset", "load_genotype_model", "genotype_card",
           "INPUT_SHAPE", "HEAD", "CLASSES", "APP", "TASK"]

INPUT_SHAPE = (HEIGHT, WIDTH, CHANNELS)
HEAD = "genotype"
CLASSES = ("hom_ref", "het", "hom_alt")
APP, TASK = "variants", "genotype"


def build_model(variant: str = "small", *, input_shape=INPUT_SHAPE, bn_momentum: float = 0.9,
                **kw):
    """Pileup (N, 100, 221, 7) -> ``{"genotype": logits (N, 3)}``.

    Parameters
    ----------
    variant : {"small", "v3"}
        ``"v3"`` is the full Inception-v3 backbone (DeepVariant's); ``"small"`` trains in
        minutes on a CPU.
    """
    import keras

    from deepsci.core.models.inception import classifier

    if variant not in ("small", "v3"):
        from deepsci.core.errors import ConfigError
        raise ConfigError(f"expected model variant 'small' or 'v3', found {variant!r}")
    inp = keras.Input(input_shape, name="pileup")
    x = keras.layers.Rescaling(1.0 / 127.0, offset=-1.0, name="scale")(inp)
    net = classifier(input_shape, {HEAD: 3}, variant=variant, **kw)
    # Variant-calling training sets are small (hundreds of steps): BN moving statistics
    # with Keras' default momentum 0.99 would still be mostly their initial values.
    for layer in _all_layers(net):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = bn_momentum
    out = net(x)
    return keras.Model(inp, out, name=f"deepvariant_{variant}")


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _parse(serialized, with_meta: bool):
    """``(image uint8 (100, 221, 7), label)``; with ``with_meta`` also ``is_snp`` (bool):
    every alt allele the image shows is a single-base substitution."""
    import tensorflow as tf

    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }
    if with_meta:
        spec["variant/ref"] = tf.io.FixedLenFeature([], tf.string)
        spec["variant/alts"] = tf.io.VarLenFeature(tf.string)
        spec["variant/alt_idx"] = tf.io.VarLenFeature(tf.int64)
    f = tf.io.parse_single_example(serialized, spec)
    img = tf.reshape(tf.io.decode_raw(f["image/encoded"], tf.uint8), INPUT_SHAPE)
    if not with_meta:
        return img, f["label"]
    shown = tf.gather(tf.sparse.to_dense(f["variant/alts"]),
                      tf.sparse.to_dense(f["variant/alt_idx"]))
    is_snp = tf.logical_and(tf.equal(tf.strings.length(f["variant/ref"]), 1),
                            tf.reduce_all(tf.equal(tf.strings.length(shown), 1)))
    return img, f["label"], is_snp


def _augmented(ds, augment, seed: int, epoch: int):
    """Map :func:`augment_example` over ``(image, label, is_snp)`` elements.

    Each element's generator is seeded by (seed, epoch, position in the epoch), so an epoch
    is the same whether the run is fresh or resumed.
    """
    import numpy as np
    import tensorflow as tf

    def apply(i, img, label, is_snp):
        rng = np.random.default_rng([seed, epoch, int(i)])
        return augment_example(img, int(label), bool(is_snp), augment, rng)

    def fn(i, elem):
        img, label, is_snp = elem
        out = tf.numpy_function(apply, [i, img, label, is_snp], tf.uint8, stateful=False)
        return tf.ensure_shape(out, INPUT_SHAPE), label

    return ds.enumerate().map(fn, num_parallel_calls=2, deterministic=True)


def example_dataset(files: list[str | os.PathLike], *, batch_size: int, training: bool,
                    seed: int = 0, shuffle_buffer: int = 10_000, labelled_only: bool = False,
                    class_weights: tuple[float, float, float] | None = None,
                    augment=None, epoch: int | None = None):
    """Batched ``(image float32 (B, 100, 221, 7), label int64 (B,))`` from example shards.

    In training mode unlabelled examples (label < 0) are dropped and the order is shuffled
    with a fixed seed (reshuffled each epoch, deterministically). With ``class_weights``
    (one per label 0, 1, 2) the elements are ``(image, label, weight float32 (B,))``.
    With ``augment`` (an :class:`~deepsci.apps.variants.augment.AlleleFractionAugment`
    with a non-zero probability) and ``epoch``, het training images are thinned of alt
    reads; the dataset is then one epoch's, shuffled by ``seed + epoch``.
    """
    import tensorflow as tf

    augmenting = training and augment is not None and augment.probability > 0
    ds = tf.data.TFRecordDataset([str(f) for f in files], compression_type="GZIP")
    ds = ds.map(lambda s: _parse(s, augmenting), num_parallel_calls=2, deterministic=True)
    if training or labelled_only:
        ds = ds.filter(lambda x, y, *_: y >= 0)
    if training:
        ds = ds.cache()
        if augmenting:
            ds = ds.shuffle(shuffle_buffer, seed=seed + (epoch or 0),
                            reshuffle_each_iteration=False)
            ds = _augmented(ds, augment, seed, epoch or 0)
        else:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
    if class_weights is not None:
        w = tf.constant(class_weights, tf.float32)
        ds = ds.map(lambda x, y: (x, y, tf.gather(w, y)))
    # The last batch may be partial: train() takes this as a per-replica source, and the
    # core loop pads a ragged epoch with zero-weight batches so every replica gets one.
    ds = ds.batch(batch_size)
    return ds.prefetch(2)


def genotype_card(*, training: dict, data: dict, metrics: dict, extra: dict):
    """The :class:`~deepsci.core.models.card.ModelCard` of a genotype model."""
    from deepsci.core.models.card import ModelCard

    return ModelCard(
        app=APP, task=TASK,
        input_spec={"shape": list(INPUT_SHAPE), "dtype": "uint8", "channels": list(CHANNEL_NAMES),
                    "layout": "(N, 100 rows: reference rows then reads, 221 bp, 7 channels)"},
        outputs={HEAD: {"classes": list(CLASSES), "kind": "logits"}},
        preprocessing={"scaling": "x / 127 - 1, inside the model"},
        training=training, data=data, metrics=metrics, extra=extra,
        name="deepsci variants genotype classifier",
        description="Copies (0, 1, 2) of the shown alt alleles at a candidate site, from a "
                    "DeepVariant-style pileup image.",
        intended_use="Germline SNP and small indel calling from Illumina short reads "
                     "(deepsci variants call-variants / run).",
        limitations="Trained on the data named in `data`; other sequencers, depths or "
                    "species need their own training set.")


def load_genotype_model(path: str | os.PathLike):
    """Load a saved variants model (``safe_mode=True``); returns ``(model, card)``.

    ``path`` is a ``model.keras`` or its training folder; another app's model, or one
    without a card, is refused in one line.
    """
    from deepsci.core.models.serialization import load_model

    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    return load_model(path, expect=APP, task=TASK)
