"""The patch classifier: the core Inception, single scale or one tower per magnification.

``classifier`` for one magnification, ``multi_tower`` for several (patches
sharing a centre, features concatenated); either way the output is the logit
``{"tumor": (N, 1)}`` of "tumour in the patch's centre region".
"""
from __future__ import annotations

from typing import Protocol

from deepsci.core.models.card import ModelCard

from .io import mpp_for_magnification
from .patches import PatchConfig

__all__ = ["APP", "TASK", "ModelSpec", "build_model", "model_card"]

#: What the model card names: loaders refuse a model of another app or task.
APP, TASK = "pathology", "patch-tumour"


class ModelSpec(Protocol):
    """What :func:`build_model` reads (``PathologyTrainConfig`` is one).

    Attributes
    ----------
    patch : PatchConfig
        Patch size and magnifications (one model input per magnification).
    variant : {"small", "v3"}
    width : int
        Filters per branch of the small Inception.
    blocks : tuple of int
        Mixed blocks per stage of the small Inception.
    dropout : float
    """

    patch: PatchConfig
    variant: str
    width: int
    blocks: tuple[int, int, int]
    dropout: float


def build_model(cfg: ModelSpec):
    """The core Inception for ``cfg``.

    Returns
    -------
    keras.Model
        ``(N, P, P, 3)`` float in [-1, 1] per magnification (a list when there
        are several) -> ``{"tumor": (N, 1)}`` logits.
    """
    from deepsci.core.models import inception

    p = cfg.patch.patch_size
    kw = {"width": cfg.width, "blocks": tuple(cfg.blocks)} if cfg.variant == "small" else {}
    if len(cfg.patch.magnifications) == 1:
        return inception.classifier((p, p, 3), {"tumor": 1}, variant=cfg.variant, dropout=cfg.dropout,
                                    name="pathology_classifier", **kw)
    shapes = [(p, p, 3)] * len(cfg.patch.magnifications)
    return inception.multi_tower(shapes, {"tumor": 1}, variant=cfg.variant, dropout=cfg.dropout,
                                 name="pathology_towers", **kw)


def model_card(spec: ModelSpec, *, training: dict | None = None, data: dict | None = None,
               metrics: dict | None = None, extra: dict | None = None) -> ModelCard:
    """The card of a patch classifier built from ``spec``: what heatmap and evaluation read.

    Parameters
    ----------
    spec : ModelSpec
        Patch geometry and architecture (e.g. the ``PathologyTrainConfig``).
    training, data, metrics, extra : dict, optional
        Recipe, provenance, held-out metrics and further details, as
        :class:`~deepsci.core.models.card.ModelCard` describes them.
    """
    p = spec.patch
    return ModelCard(
        app=APP, task=TASK,
        input_spec={"patch_size": int(p.patch_size), "magnifications": [float(m) for m in p.magnifications],
                    "center_size": int(p.center_size), "channels": "RGB", "dtype": "uint8",
                    "layout": "(N, P, P, 3) per magnification, finest first"},
        outputs={"tumor": {"classes": ["normal", "tumour"], "activation": "logit",
                           "meaning": "tumour in the patch's centre region"}},
        preprocessing={"scale": "x / 127.5 - 1 (Inception range)",
                       "magnification": f"objective power m read at {mpp_for_magnification(1.0):g} / m microns per pixel"},
        training=training or {}, data=data or {}, metrics=metrics or {},
        extra={"variant": spec.variant, "width": int(spec.width), "blocks": [int(b) for b in spec.blocks],
               "dropout": float(spec.dropout), **(extra or {})},
        name="pathology patch classifier",
        description="Inception patch classifier of lymph-node H&E whole-slide images (Liu et al. 2017).",
        intended_use="Research: tumour-probability heatmaps and Camelyon16-style lesion detection.",
        limitations="Not a medical device. Trained on the slides named in data; stain, scanner "
                    "and magnification outside them are untested.")
