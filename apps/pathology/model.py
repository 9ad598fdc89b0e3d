"""The patch classifier: the core Inception, single scale or one tower per magnification.

``classifier`` for one magnification, ``multi_tower`` for several (patches
sharing a centre, features concatenated); either way the output is the logit
``{"tumor": (N, 1)}`` of "tumour in the patch's centre region".
"""
from __future__ import annotations

from typing import Protocol

from .patches import PatchConfig

__all__ = ["ModelSpec", "build_model"]


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
