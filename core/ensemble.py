"""Ensembles in one place: members and their seeds, where they live, loading, averaging.

A deep ensemble (Lakshminarayanan et al. 2017) is several models of one
recipe trained from different seeds; its prediction is the members' mean and
their spread a measure of uncertainty. Every app names its members the same
ways — a folder, a comma-separated list, ``ensemble.json`` — and averages
them here, after each member's ``postprocess`` has put its outputs in the
space the app averages in (probabilities, physical units).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import read_json, write_json
from .models.card import ModelCard, read_card

__all__ = ["member_seeds", "model_paths", "write_ensemble", "combine", "Ensemble", "load_ensemble",
           "ENSEMBLE_FILE"]

ENSEMBLE_FILE = "ensemble.json"
_AGREE = ("app", "task", "input_spec", "outputs")


def member_seeds(seed: int, n: int) -> list[int]:
    """Seeds of an ensemble of ``n`` members starting at ``seed``.

    Examples
    --------
    >>> member_seeds(3, 2)
    [3, 4]
    """
    if n < 1:
        raise ValueError(f"Expected n >= 1. Received: {n}")
    return [int(seed) + i for i in range(n)]


def _folder_members(folder: Path, default_name: str) -> list[Path]:
    if (folder / ENSEMBLE_FILE).is_file():
        info = read_json(folder / ENSEMBLE_FILE)
        members = info.get("members") if isinstance(info, dict) else None
        if not members:
            raise InputError("expected members in ensemble.json, found none", folder / ENSEMBLE_FILE)
        if not isinstance(members, list) or not all(isinstance(m, str) and m for m in members):
            raise InputError("expected ensemble.json members as a list of paths, found "
                             f"{type(members).__name__} {str(members)[:40]!r}", folder / ENSEMBLE_FILE)
        return [(folder / m) if not Path(m).is_absolute() else Path(m) for m in members]
    found = sorted(folder.glob(f"member_*/{default_name}"),
                   key=lambda p: int(p.parent.name.split("_")[-1]) if p.parent.name.split("_")[-1]
                   .isdigit() else 0)
    if found:
        return found
    if (folder / default_name).is_file():
        return [folder / default_name]
    raise InputError(f"expected a trained model ({default_name}, member_*/ or ensemble.json), "
                     "found none", folder)


def model_paths(spec: str | os.PathLike | Sequence, *, default_name: str = "model.keras") -> list[Path]:
    """The member paths that ``spec`` names.

    Parameters
    ----------
    spec : path, ``"a.keras,b.keras"`` or a sequence of them
        A model file, a comma-separated list, or a folder holding
        ``ensemble.json``, ``member_*/model.keras`` or ``model.keras``.
    """
    if isinstance(spec, (list, tuple)):
        items = [Path(s) for s in spec]
    else:
        items = [Path(s.strip()) for s in str(spec).split(",") if s.strip()]
    if not items:
        raise InputError("expected at least one model, found an empty list")
    paths: list[Path] = []
    for item in items:
        if item.is_dir():
            paths.extend(_folder_members(item, default_name))
        elif item.exists():
            paths.append(item)
        else:
            raise InputError("expected a trained model, found no file", item)
    return paths


def write_ensemble(out_dir: str | os.PathLike, members: Sequence[str | os.PathLike], *,
                   info: dict | None = None) -> Path:
    """Write ``ensemble.json`` listing ``members`` (relative to ``out_dir`` where possible)."""
    out_dir = Path(out_dir)
    rel = []
    for m in members:
        m = Path(m)
        try:
            rel.append(str(m.resolve().relative_to(out_dir.resolve())))
        except ValueError:
            rel.append(str(m))
    return write_json(out_dir / ENSEMBLE_FILE, {**(info or {}), "members": rel})


def combine(outputs: list, *, how: str = "mean"):
    """Mean and standard deviation over members (axis 0 of the stacked outputs).

    ``outputs`` is one output per member: arrays, or dicts of arrays.
    ``how="geometric"`` averages probabilities in log space (renormalised on the last axis).
    """
    if not outputs:
        raise ValueError("Expected at least one member output. Received: none")
    if isinstance(outputs[0], dict):
        pairs = {k: combine([o[k] for o in outputs], how=how) for k in outputs[0]}
        return {k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()}
    stack = np.stack([np.asarray(o) for o in outputs]).astype(np.float64)
    if how == "mean":
        mean = stack.mean(axis=0)
    elif how == "geometric":
        logm = np.log(np.clip(stack, 1e-12, None)).mean(axis=0)
        mean = np.exp(logm)
        mean /= mean.sum(axis=-1, keepdims=True)
    else:
        raise ValueError(f"Expected how 'mean' or 'geometric'. Received: {how!r}")
    std = stack.std(axis=0, ddof=1) if len(outputs) > 1 else np.zeros_like(mean)
    return mean, std


def _check_agree(cards: list[ModelCard], paths: list[Path]) -> None:
    first = cards[0]
    for card, path in zip(cards[1:], paths[1:], strict=True):
        for key in _AGREE:
            if getattr(card, key) != getattr(first, key):
                raise InputError(f"expected ensemble members that agree on {key}, found one that "
                                 f"differs from {paths[0].name}", path)


@dataclass
class Ensemble:
    """Loaded members of an ensemble and their predictors."""

    paths: list[Path]
    cards: list[ModelCard]
    predictors: list = field(default_factory=list)

    @property
    def card(self) -> ModelCard:
        """The first member's card (all members agree on app, task, inputs and outputs)."""
        return self.cards[0]

    @property
    def models(self) -> list:
        """The members' Keras models."""
        return [p.model for p in self.predictors]

    def __len__(self) -> int:
        return len(self.paths)

    def member_outputs(self, x) -> list:
        """Every member's (post-processed) outputs for ``x``."""
        return [p(x) for p in self.predictors]

    def predict_with_std(self, x, *, how: str = "mean"):
        """Members' mean and standard deviation for ``x``."""
        return combine(self.member_outputs(x), how=how)

    def predict(self, x, *, how: str = "mean"):
        """Members' mean for ``x``."""
        return self.predict_with_std(x, how=how)[0]


def load_ensemble(spec, *, expect: str, task: str | None = None, default_name: str = "model.keras",
                  batch_size: int | None = None, xla: bool | None = None, threads: int | None = None,
                  postprocess: Callable | None = None) -> Ensemble:
    """Load every member ``spec`` names (see :func:`model_paths`), checked against each other.

    Cards are read (and another app's model refused) before any model is loaded.
    """
    from .predict import load_predictor

    paths = model_paths(spec, default_name=default_name)
    cards = [read_card(p, expect=expect, task=task) for p in paths]
    _check_agree(cards, paths)
    predictors = [load_predictor(p, expect=expect, task=task, batch_size=batch_size, xla=xla,
                                 threads=threads, postprocess=postprocess)[0] for p in paths]
    return Ensemble(paths=paths, cards=cards, predictors=predictors)
