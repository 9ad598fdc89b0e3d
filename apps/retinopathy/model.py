"""The DR grading network: the core Inception classifier with ICDR, referable-DR and DME heads.

Outputs are logits in a dict: ``grade`` (N, 5), ``referable`` (N, 1) and,
when DME labels exist, ``dme`` (N, 1).  Inputs are preprocessed fundus
images (N, S, S, 3), float32 in [-1, 1] (:func:`.preprocess.to_input`).
"""
from __future__ import annotations

import numpy as np

from deepsci.core.models.card import ModelCard

from .preprocess import load_cached, to_input

#: The app and task every retinopathy model card names.
APP, TASK = "retinopathy", "dr-grade"
#: ICDR grades 0-4.
GRADES = 5
GRADE_NAMES = ["no DR", "mild NPDR", "moderate NPDR", "severe NPDR", "PDR"]
VARIANTS = ("small", "v3")
DME_HEADS = ("auto", "yes", "no")


def build_model(size: int, heads: dict[str, int], *, variant: str = "small", width: int = 32):
    """The core Inception classifier with DR heads.

    Parameters
    ----------
    size : int
        Input side S; inputs have shape (N, S, S, 3).
    heads : dict of str to int
        Head name -> units, e.g. :func:`heads_for`'s result.
    variant : {"small", "v3"}
    width : int
        Base filter count of the small Inception (ignored for v3).

    Returns
    -------
    keras.Model
        Outputs a dict head -> logits (N, units).
    """
    from deepsci.core.models import inception

    kw = {"width": width} if variant == "small" else {}
    return inception.classifier((size, size, 3), heads, variant=variant, **kw)


def heads_for(dme_head: str, dme_labels: np.ndarray) -> dict[str, int]:
    """The heads to train: grade and referable always, DME when asked or labelled.

    Parameters
    ----------
    dme_head : {"auto", "yes", "no"}
    dme_labels : array of int, shape (N,)
        -1 where unknown.
    """
    heads = {"grade": GRADES, "referable": 1}
    if dme_head == "yes" or (dme_head == "auto" and (np.asarray(dme_labels) >= 0).any()):
        heads["dme"] = 1
    return heads


def model_card(*, size: int, heads: dict[str, int], variant: str, width: int,
               preprocessing: dict, training: dict | None = None, data: dict | None = None,
               metrics: dict | None = None, extra: dict | None = None) -> ModelCard:
    """The card saved with every DR network (app ``retinopathy``, task ``dr-grade``).

    Parameters
    ----------
    size : int
        Input side S; the model takes (N, S, S, 3) float32 in [-1, 1].
    heads : dict of str to int
    preprocessing : dict
        The :class:`.preprocess.PreprocessConfig` prediction must apply.
    training, data, metrics, extra : dict, optional
        Recipe, provenance, held-out scores and further details.
    """
    outputs = {"grade": {"classes": GRADE_NAMES, "activation": "softmax"},
               "referable": {"classes": ["non-referable", "referable"], "activation": "sigmoid"}}
    if "dme" in heads:
        outputs["dme"] = {"classes": ["no referable DME", "referable DME"],
                          "activation": "sigmoid"}
    return ModelCard(
        app=APP, task=TASK,
        input_spec={"shape": [size, size, 3], "dtype": "float32", "range": [-1, 1],
                    "layout": "NHWC", "colour": "RGB"},
        outputs=outputs, preprocessing=dict(preprocessing), training=dict(training or {}),
        data=dict(data or {}), metrics=dict(metrics or {}),
        extra={"heads": dict(heads), "variant": variant, "width": width, **(extra or {})},
        name=f"DR grading, Inception {variant}",
        description="ICDR grade (5 classes), referable DR and referable DME of a fundus photograph.",
        intended_use="Research on DR screening; referable-DR decisions at validation-chosen "
                     "operating points.",
        limitations="Not a medical device. Trained on the data recorded here only; synthetic "
                    "lesions do not stand for real photographs.")


def to_probabilities(outputs: dict) -> dict:
    """Logits -> probabilities inside the inference graph, so members average as probabilities.

    Parameters
    ----------
    outputs : dict of tf.Tensor
        ``grade`` (N, 5), ``referable`` (N, 1) and optionally ``dme`` (N, 1) logits.

    Returns
    -------
    dict of tf.Tensor
        ``grade`` (N, 5) softmax, ``referable`` (N,) and ``dme`` (N,) sigmoid.
    """
    import tensorflow as tf

    probs = {"grade": tf.nn.softmax(outputs["grade"]),
             "referable": tf.sigmoid(outputs["referable"])[:, 0]}
    if "dme" in outputs:
        probs["dme"] = tf.sigmoid(outputs["dme"])[:, 0]
    return probs


def recalibrate_batchnorm(model, cache_paths: list[str], *, batch_size: int = 32,
                          max_batches: int = 40) -> int:
    """Replace batch-norm moving statistics by their average over training batches.

    Short CPU runs take a few hundred steps, and with momentum 0.99 the moving
    mean/variance still carry their initial values (0.99^200 = 13 %), so the
    network behaves differently at inference than in training (scores
    collapse to one class).  As SWA's ``update_bn`` does, we run the final
    weights over un-augmented training images in training mode with momentum
    ``i / (i + 1)`` for the ``i``-th batch, i.e. an exact running average.

    Parameters
    ----------
    model : keras.Model
    cache_paths : list of str
        Preprocessed training images (cached PNGs).

    Returns
    -------
    int
        Batches used.
    """
    from deepsci.core.models.batchnorm import precise_batchnorm

    if len(cache_paths) == 0:
        return 0
    rng = np.random.default_rng(0)
    order = rng.permutation(len(cache_paths))[: batch_size * max_batches]
    paths = np.asarray(cache_paths, dtype=str)[order]

    def batches():
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            if len(chunk) < max(2, batch_size // 4) and start:
                return  # a tiny last batch would add a noisy estimate
            yield to_input(load_cached(list(chunk)))

    return precise_batchnorm(model, batches())
