"""Model cards: what a trained model is, read without importing TensorFlow.

Every saved model has a card beside it (``model.keras`` -> ``model.card.json``)
saying which app and task it serves, what it takes and returns (classes, or
targets with units), how it was trained and on what data, and how it scored
on held-out data. Loading checks the card, so a molecules model handed to the
variant caller fails in one line instead of deep inside TensorFlow.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io import read_json

__all__ = ["ModelCard", "CARD_SCHEMA", "card_path", "read_card", "git_commit"]

CARD_SCHEMA = "deepsci.card/1"
_DICT_FIELDS = ("input_spec", "outputs", "preprocessing", "training", "data", "metrics", "extra")


@dataclass
class ModelCard:
    """The typed card of one trained model.

    Attributes
    ----------
    app : str
        The deepsci app the model serves, e.g. ``"variants"``.
    task : str
        What it predicts within the app, e.g. ``"genotype"`` or ``"ffn"``.
    input_spec : dict
        Shapes, dtypes, channels and voxel or pixel sizes of its input.
    outputs : dict
        Head or target name -> ``{"classes": [...]}`` or ``{"unit": "eV"}``.
    preprocessing : dict
        Everything prediction must apply to raw input (scaling, means, mpp).
    training : dict
        The recipe: resolved training config and the command that ran it.
    data : dict
        Provenance: ``name``, ``files``, ``licence``, ``synthetic``, ``seeds``.
    metrics : dict
        Held-out scores, ``{"validation": {...}, "test": {...}}``.
    extra : dict
        App-specific model details (an FFN's config, class weights, ensemble member index).
    name, description, intended_use, limitations : str
        Human-readable parts of the card.
    deepsci_version, commit, created : str
        Filled by :func:`~deepsci.core.models.serialization.save_model`.

    Examples
    --------
    >>> card = ModelCard(app="molecules", task="qm9-properties",
    ...                  input_spec={"graph": "bond"}, outputs={"gap": {"unit": "eV"}})
    >>> ModelCard.from_dict(card.to_dict()) == card
    True
    >>> card.check(expect="variants", path="m.keras")
    Traceback (most recent call last):
    ...
    deepsci.core.errors.InputError: expected a variants model, found a molecules model (m.keras)
    """

    app: str
    task: str
    input_spec: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    preprocessing: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    name: str = ""
    description: str = ""
    intended_use: str = ""
    limitations: str = ""
    deepsci_version: str = ""
    commit: str = ""
    created: str = ""
    schema: str = CARD_SCHEMA

    def to_dict(self) -> dict:
        """The card as plain JSON-ready data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: object, path: str | os.PathLike | None = None) -> ModelCard:
        """Rebuild and validate a card; any mismatch is one :class:`InputError`."""
        if not isinstance(data, dict):
            raise InputError(f"expected a model card (JSON object), found {type(data).__name__}", path)
        if data.get("schema") != CARD_SCHEMA:
            raise InputError(f"expected a model card of schema {CARD_SCHEMA}, "
                             f"found {data.get('schema')!r}", path)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"expected model card fields, found unknown {unknown}", path)
        for key in ("app", "task"):
            if not isinstance(data.get(key), str) or not data.get(key):
                raise InputError(f"expected the model card to name its {key}, found "
                                 f"{data.get(key)!r}", path)
        for key in _DICT_FIELDS:
            if key in data and not isinstance(data[key], dict):
                raise InputError(f"expected the card's {key} as an object, found "
                                 f"{type(data[key]).__name__}", path)
        return cls(**data)

    def check(self, *, expect: str | None = None, task: str | None = None,
              path: str | os.PathLike | None = None) -> ModelCard:
        """Refuse a model of another app or task; return ``self``."""
        if expect is not None and self.app != expect:
            raise InputError(f"expected a {expect} model, found a {self.app} model", path)
        if task is not None and self.task != task:
            raise InputError(f"expected a {self.app} model for {task}, found one for {self.task}", path)
        return self

    def stamped(self) -> ModelCard:
        """A copy with version, commit and creation time filled in."""
        from .. import __version__

        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        return dataclasses.replace(self, deepsci_version=__version__,
                                   commit=self.commit or git_commit(), created=now)


def card_path(model_path: str | os.PathLike) -> Path:
    """``model.keras`` (or ``model.tflite``) -> ``model.card.json``."""
    return Path(model_path).with_suffix(".card.json")


def read_card(model_path: str | os.PathLike, *, expect: str | None = None,
              task: str | None = None) -> ModelCard:
    """The checked card of the model saved at ``model_path``; no TensorFlow import.

    Raises
    ------
    InputError
        The model file or its card is missing or malformed, or it is a model
        of another app (``expect``) or task.
    """
    path = Path(model_path)
    if path.is_dir():
        raise InputError("expected a model file (.keras), found a folder", path)
    if not path.exists():
        raise InputError("expected a trained model file, found no file", path)
    meta = card_path(path)
    if not meta.exists():
        raise InputError(f"expected the model card {meta.name} beside the model, found none", path)
    return ModelCard.from_dict(read_json(meta), meta).check(expect=expect, task=task, path=path)


def git_commit() -> str:
    """The source tree's commit (with ``+dirty`` when modified), or ``""`` outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if dirty else "")
