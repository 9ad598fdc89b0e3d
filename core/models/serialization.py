"""Saving and loading trained models: a ``.keras`` file plus a JSON sidecar.

The sidecar holds everything prediction needs besides the weights (app,
version, input spec, preprocessing parameters, training config, final
metrics), so a user passes only the model path. Models load with Keras
``safe_mode=True``: no lambda layers, every custom layer registered.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import os
from pathlib import Path

import keras

from ..errors import InputError
from ..io import atomic_path, write_json
from .sidecar import read_sidecar, sidecar_path

__all__ = ["register", "save_model", "load_model", "sidecar_path", "read_sidecar"]

register = keras.saving.register_keras_serializable(package="deepsci")

# Core modules that define custom layers; imported before loading so that
# their classes are registered whatever the caller imported.
_LAYER_MODULES = ("deepsci.core.models.mpnn", "deepsci.core.models.ffn")


def save_model(model: keras.Model, path: str | os.PathLike, *, sidecar: dict) -> Path:
    """Write ``model`` to ``path`` (``.keras``) and its sidecar, both atomically.

    Parameters
    ----------
    model : keras.Model
    path : path ending in ``.keras``
    sidecar : dict
        At least ``app``; ``deepsci_version`` and ``created`` are added.
    """
    from .. import __version__

    path = Path(path)
    if path.suffix != ".keras":
        raise InputError(f"expected a model path ending in .keras, found {path.suffix or 'none'}", path)
    if "app" not in sidecar:
        raise ValueError(f"Expected the sidecar to name its app. Received keys: {sorted(sidecar)}")
    meta = {
        "deepsci_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **sidecar,
    }
    with atomic_path(path) as tmp:
        model.save(tmp)
    write_json(sidecar_path(path), meta)
    return path


def load_model(path: str | os.PathLike) -> tuple[keras.Model, dict]:
    """Load a model saved by :func:`save_model` with ``safe_mode=True``.

    Returns
    -------
    (keras.Model, dict)
        The model and its sidecar.
    """
    path = Path(path)
    meta = read_sidecar(path)
    for name in _LAYER_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except (ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"expected a Keras model file, found one that does not load: {first}", path) from None
    return model, meta
