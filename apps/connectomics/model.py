"""The connectomics model: a flood-filling network (core ``ffn_model``), fresh or warm-started.

The network itself lives in :mod:`deepsci.core.models.ffn`; this module builds
the app's model from its config and checks a warm start's card and shape.
"""
from __future__ import annotations

from pathlib import Path

from deepsci.core.errors import InputError
from deepsci.core.models.ffn import FFNConfig

from .predict import APP, TASK

__all__ = ["build_model"]


def build_model(mc: FFNConfig, init_model: str | None):
    """A fresh FFN, or one holding the weights of ``init_model`` (same FOV, depth, features)."""
    from deepsci.core.models.ffn import ffn_model
    from deepsci.core.models.serialization import load_model

    model = ffn_model(mc)
    if init_model:
        if not Path(init_model).exists():
            raise InputError("expected a trained model file (model.keras) to start from, found nothing", init_model)
        source, card = load_model(init_model, expect=APP, task=TASK)
        if FFNConfig(**card.extra["ffn"]) != mc:
            raise InputError(f"expected a model of shape {mc.to_dict()} to start from, found {card.extra['ffn']}",
                             init_model)
        model.set_weights(source.get_weights())
    return model
