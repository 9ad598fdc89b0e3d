"""Models that ship inside the package, found by name; no TensorFlow import.

A shipped model is a folder ``deepsci/data/models/<name>/`` holding one model
file and its card (``model.keras`` + ``model.card.json``, or e.g.
``pair_classifier.json`` + ``pair_classifier.card.json``), or an ensemble
(``ensemble.json`` and ``member_*/model.keras`` with their cards). The card
says which app and task it serves and whether it is that task's default
(``card.extra["shipped"]["default"]``), so every verb that takes ``--model``
can run without one::

    deepsci variants call --bam reads.bam --ref ref.fa --out calls.vcf
    model: variants-illumina (shipped default; `deepsci models info variants-illumina`)

A model trained on synthetic data only says so in ``card.data["synthetic_only"]``;
:func:`resolve_model` then prints a warning that it is a demo model.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import InputError
from ..io import read_json
from .card import ModelCard

__all__ = ["ShippedModel", "shipped_root", "shipped_models", "shipped", "default_model",
           "resolve_model", "demo_warning"]

_CARD_SUFFIX = ".card.json"


def shipped_root() -> Path:
    """The package's ``data/models`` folder (``DEEPSCI_MODELS`` overrides it, for tests)."""
    env = os.environ.get("DEEPSCI_MODELS")
    if env:
        return Path(env)
    return Path(str(resources.files("deepsci.data"))) / "models"


@dataclass(frozen=True)
class ShippedModel:
    """One model in the package.

    Attributes
    ----------
    name : str
        Its folder's name, which is how users call it (``--model NAME``).
    folder : Path
        ``data/models/<name>``.
    path : Path
        What loaders take: the model file, or the folder of an ensemble.
    card : ModelCard
        The card of the model (of its first member for an ensemble).
    members : int
        1, or the ensemble's size.
    """

    name: str
    folder: Path
    path: Path
    card: ModelCard
    members: int = 1

    @property
    def default(self) -> bool:
        """Whether this is the default model of its app and task."""
        return bool(self.card.extra.get("shipped", {}).get("default", False))

    @property
    def synthetic_only(self) -> bool:
        """Whether it was trained on synthetic data only (a demo model)."""
        return bool(self.card.data.get("synthetic_only", False))

    @property
    def size_bytes(self) -> int:
        """Bytes of every file in the folder."""
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())


def _model_file(card_file: Path) -> Path:
    stem = card_file.name[: -len(_CARD_SUFFIX)]
    found = [p for p in card_file.parent.iterdir()
             if p.is_file() and p != card_file and p.name.startswith(stem + ".")
             and p.suffix in (".keras", ".tflite", ".json") and not p.name.endswith(_CARD_SUFFIX)]
    if len(found) != 1:
        raise InputError(f"expected one model file beside its card, found {len(found)}", card_file)
    return found[0]


def _load_entry(folder: Path) -> ShippedModel:
    if (folder / "ensemble.json").is_file():
        cards = sorted(folder.glob(f"member_*/*{_CARD_SUFFIX}"))
        if not cards:
            raise InputError("expected member cards in a shipped ensemble, found none", folder)
        card = ModelCard.from_dict(read_json(cards[0]), cards[0])
        return ShippedModel(folder.name, folder, folder, card, members=len(cards))
    cards = sorted(folder.glob(f"*{_CARD_SUFFIX}"))
    if len(cards) != 1:
        raise InputError(f"expected one model card in a shipped model's folder, found {len(cards)}", folder)
    card = ModelCard.from_dict(read_json(cards[0]), cards[0])
    return ShippedModel(folder.name, folder, _model_file(cards[0]), card)


def shipped_models(root: str | os.PathLike | None = None) -> list[ShippedModel]:
    """Every shipped model, sorted by app then name."""
    root = Path(root) if root is not None else shipped_root()
    if not root.is_dir():
        return []
    entries = [_load_entry(p) for p in sorted(root.iterdir())
               if p.is_dir() and not p.name.startswith((".", "_"))]
    return sorted(entries, key=lambda m: (m.card.app, m.name))


def shipped(name: str, *, root: str | os.PathLike | None = None) -> ShippedModel:
    """The shipped model called ``name``.

    Raises
    ------
    InputError
        No shipped model has that name (the message lists the names).
    """
    models = shipped_models(root)
    for m in models:
        if m.name == name:
            return m
    names = ", ".join(m.name for m in models) or "none"
    raise InputError(f"expected a shipped model name ({names}) or a model path, found {name!r}")


def default_model(app: str, task: str | None = None, *,
                  root: str | os.PathLike | None = None) -> ShippedModel | None:
    """The default shipped model of ``app`` (and ``task``), or ``None``."""
    for m in shipped_models(root):
        if m.card.app == app and (task is None or m.card.task == task) and m.default:
            return m
    return None


def demo_warning(model: ShippedModel | ModelCard) -> str | None:
    """The warning to print when a synthetic-only model is used, else ``None``."""
    card = model.card if isinstance(model, ShippedModel) else model
    if not card.data.get("synthetic_only"):
        return None
    label = card.name or card.task
    return (f"warning: {label} is a demo model trained on synthetic data only; "
            f"its outputs on real {card.data.get('real_input', 'data')} mean nothing")


def _say_stderr(line: str) -> None:
    from ..logs import note

    note(line)


def resolve_model(spec: str | os.PathLike | None, *, app: str, task: str | None = None,
                  say: Callable[[str], None] | None = _say_stderr,
                  root: str | os.PathLike | None = None) -> str:
    """Turn ``--model`` into loadable path(s): a path, a shipped name, a list, or nothing.

    Parameters
    ----------
    spec : str, path or None
        ``None``/``""`` for the app's default model; otherwise a path, a
        shipped name, or a comma-separated list of either.
    app, task : str
        Which default to take, and which shipped names are allowed.
    say : callable or None
        Receives the one line naming a shipped model used (stderr by default)
        and a demo model's warning.

    Returns
    -------
    str
        The path, or comma-separated paths, that the app's loader takes.

    Raises
    ------
    InputError
        No model given and no default shipped, or a shipped name of another app.

    Examples
    --------
    >>> resolve_model("runs/a/model.keras", app="variants", say=None)
    'runs/a/model.keras'
    """
    say = say or (lambda line: None)
    if spec is None or str(spec).strip() == "":
        m = default_model(app, task, root=root)
        if m is None:
            raise InputError(f"expected --model (no default {app} model ships with this "
                             "installation; `deepsci models list` shows what does)")
        say(f"model: {m.name} (shipped default; `deepsci models info {m.name}`)")
        if (w := demo_warning(m)) is not None:
            say(w)
        return str(m.path)
    out = []
    for item in (s.strip() for s in str(spec).split(",")):
        if not item:
            continue
        if Path(item).exists() or os.sep in item or item.endswith((".keras", ".tflite", ".json")):
            out.append(item)
            continue
        m = shipped(item, root=root)
        m.card.check(expect=app, task=task, path=m.path)
        say(f"model: {m.name} (shipped)")
        if (w := demo_warning(m)) is not None:
            say(w)
        out.append(str(m.path))
    return ",".join(out)
