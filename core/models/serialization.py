"""Saving and loading trained models: a ``.keras`` file plus its model card.

The card (:class:`~deepsci.core.models.card.ModelCard`) holds everything
prediction needs besides the weights (app, task, input spec, preprocessing,
outputs with units, recipe, data, held-out metrics), so a user passes only the
model path, and a loader that names its app refuses another app's model.
Models load with Keras ``safe_mode=True``: no lambda layers, every custom
layer registered.
"""
from __future__ import annotations

import importlib
import os
import zipfile
from pathlib import Path

import keras

from ..errors import InputError
from ..io import atomic_path, write_json
from .card import ModelCard, card_path, read_card

__all__ = ["register", "save_model", "load_model", "ModelCard", "card_path", "read_card"]

register = keras.saving.register_keras_serializable(package="deepsci")

# Core modules that define custom layers; imported before loading so that
# their classes are registered whatever the caller imported.
_LAYER_MODULES = ("deepsci.core.models.mpnn", "deepsci.core.models.ffn")


def save_model(model: keras.Model, path: str | os.PathLike, *, card: ModelCard) -> Path:
    """Write ``model`` to ``path`` (``.keras``) and its card, both atomically.

    Parameters
    ----------
    model : keras.Model
    path : path ending in ``.keras``
    card : ModelCard
        The model's card; version, commit and creation time are filled in.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise InputError(f"expected a model path ending in .keras, found {path.suffix or 'none'}", path)
    if not isinstance(card, ModelCard):
        raise ValueError(f"Expected a ModelCard. Received: {type(card).__name__}")
    with atomic_path(path) as tmp:
        model.save(tmp)
    write_json(card_path(path), card.stamped().to_dict())
    return path


def _register_layers() -> None:
    for name in _LAYER_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise


def load_keras(path: str | os.PathLike) -> keras.Model:
    """Load a ``.keras`` file with ``safe_mode=True``; a damaged file is one InputError."""
    _register_layers()
    path = Path(path)
    if path.is_dir():
        raise InputError("expected a Keras model file (.keras), found a folder", path)
    if not path.exists():
        raise InputError("expected a Keras model file (.keras), found no file", path)
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        # Keras itself calls such a file "File not found", which sends users looking
        # for a file that is right there.
        raise InputError("expected a Keras model file (a .keras zip archive), found one that "
                         "does not load: not a zip archive (damaged or truncated?)", path)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # zip, h5 and deserialisation errors all mean a damaged file
        text = str(e).strip()
        first = text.splitlines()[0][:200] if text else type(e).__name__
        raise InputError(f"expected a Keras model file, found one that does not load: {first}",
                         path) from None


def load_model(path: str | os.PathLike, *, expect: str | None = None,
               task: str | None = None) -> tuple[keras.Model, ModelCard]:
    """Load a model saved by :func:`save_model` with ``safe_mode=True``, checking its card.

    Parameters
    ----------
    path : path of a ``.keras`` file
    expect : str, optional
        The app that is loading it: another app's model is refused in one line.
    task : str, optional
        The task within the app the model must serve.

    Returns
    -------
    (keras.Model, ModelCard)
        The model and its card.
    """
    path = Path(path)
    meta = read_card(path, expect=expect, task=task)
    if path.suffix != ".keras":
        raise InputError(f"expected a Keras model file (.keras), found {path.suffix or 'no suffix'}", path)
    return load_keras(path), meta
