"""The connectomics model: a flood-filling network (core ``ffn_model``), fresh or warm-started.

The network itself lives in :mod:`deepsci.core.models.ffn`; this module builds
the app's model from its config and checks a warm start's card and shape.
"""
from __future__ import annotations

from pathlib import Path

from deepsci.core.errors import InputError
from deepsci.core.models.ffn import FFNConfig

from .predict import APP, TASK, model_card

__all__ = ["build_model", "check_init_model"]


def check_init_model(mc: FFNConfig, init_model: str) -> None:
    """Refuse a ``--init-model`` that is missing, damaged, another app's or of another shape (no TensorFlow).

    Called before the run's folder is made, so a wrong file leaves nothing behind.
    """
    if not Path(init_model).exists():
        raise InputError("expected a trained model file (model.keras) to start from, found nothing", init_model)
    if Path(init_model).suffix != ".keras":
        raise InputError(f"expected a Keras model file (.keras) to start from, found {Path(init_model).suffix or 'no suffix'}",
                         init_model)
    card = model_card(init_model, preprocessing=False)
    try:
        same = FFNConfig(**card.extra["ffn"]) == mc
    except (TypeError, ValueError):
        same = False
    if not same:
        raise InputError(f"expected a model of shape {mc.to_dict()} to start from, found {card.extra['ffn']}",
                         init_model)


def build_model(mc: FFNConfig, init_model: str | None):
    """A fresh FFN, or one holding the weights of ``init_model`` (same FOV, depth, features)."""
    from deepsci.core.models.ffn import ffn_model
    from deepsci.core.models.serialization import load_model

    model = ffn_model(mc)
    if init_model:
        check_init_model(mc, init_model)
        source, _ = load_model(init_model, expect=APP, task=TASK)
        model.set_weights(source.get_weights())
    return model
