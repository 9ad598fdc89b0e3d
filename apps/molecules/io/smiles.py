"""SMILES lists: ``.smi``/``.txt``, one SMILES per line, optionally followed by a name."""
from __future__ import annotations

from pathlib import Path

from deepsci.core.errors import InputError

from ..featurize import embed_smiles
from .base import Collector, MoleculeSet

__all__ = ["read_smiles_list"]


def read_smiles_list(path, *, skip_invalid: bool = False, seed: int = 0) -> MoleculeSet:
    """Read a ``.smi``/``.txt`` file: one SMILES per line, optionally followed by a name."""
    path = Path(path)
    if not path.exists():
        raise InputError("expected an existing SMILES file, found none", path)
    col = Collector(path, skip_invalid)
    for i, line in enumerate(path.read_text(errors="replace").splitlines()):
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        try:
            mol = embed_smiles(f[0], seed=seed)
        except ValueError as exc:
            col.bad(f"line {i + 1}", str(exc))
            continue
        col.add(f[1] if len(f) > 1 else f"{path.name}:{i + 1}", mol, {})
    return col.result({}, columns=[])
