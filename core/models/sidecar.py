"""A saved model's JSON sidecar, readable without importing Keras or TensorFlow.

A process that only hands a model path to Dask workers (which load the model
themselves) still needs the sidecar's input spec; importing TensorFlow for
that costs seconds.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from ..io import read_json

__all__ = ["sidecar_path", "read_sidecar"]


def sidecar_path(path: str | os.PathLike) -> Path:
    """``model.keras`` -> ``model.json``."""
    return Path(path).with_suffix(".json")


def read_sidecar(path: str | os.PathLike) -> dict:
    """The sidecar of the model saved at ``path`` (a ``.keras`` file).

    Raises
    ------
    InputError
        When the model file or its sidecar is missing.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("expected a trained model (.keras), found no file", path)
    meta = sidecar_path(path)
    if not meta.exists():
        raise InputError(f"expected the model's sidecar {meta.name} beside it, found none", path)
    return read_json(meta)
