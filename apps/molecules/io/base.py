"""What every molecule reader shares: the :class:`MoleculeSet` it returns, the
row collector that turns a bad row into an error or a counted skip, and the
unit and column helpers of the app's target columns.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from deepsci.core.errors import InputError

from ..targets import GILMER_TARGETS, TARGETS, parse_column

__all__ = ["MoleculeSet", "Collector", "HARTREE_TARGETS", "parse_float", "canonical_unit",
           "target_columns", "select_targets", "available_cpus"]

#: Targets QM9's own files (xyz, qm9pack, MoleculeNet) store in Hartree.
HARTREE_TARGETS = frozenset(("homo", "lumo", "gap", "zpve", "u0", "u", "h", "g"))


@dataclass
class MoleculeSet:
    """Molecules and their targets.

    Attributes
    ----------
    ids : list of str
        One name per molecule (file name, row number or the file's id column).
    smiles : list of str
        Canonical SMILES (without explicit H).
    mols : list of rdkit.Chem.Mol
        Explicit hydrogens, one 3-D conformer each.
    targets : pandas.DataFrame
        (N, T): one column per target, canonical units (``units``), NaN where unknown.
    units : dict
        Target name → unit string.
    source : str
        Where the molecules came from.
    n_skipped : int
        Invalid rows skipped under ``skip_invalid``.
    skip_reasons : dict
        Reason → number of rows skipped for it.
    skipped : list of str
        Each skipped row as ``"<where>: <reason>"`` (``"line 2: expected a valid SMILES…"``).
    units_note : str
        The unit convention the targets were read with (printed by reports).
    """

    ids: list[str]
    smiles: list[str]
    mols: list
    targets: pd.DataFrame
    units: dict[str, str] = field(default_factory=dict)
    source: str = ""
    n_skipped: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)
    units_note: str = ""
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.mols)

    def subset(self, index) -> MoleculeSet:
        """The molecules at integer positions ``index``."""
        index = np.asarray(index, dtype=np.int64)
        return MoleculeSet(
            ids=[self.ids[i] for i in index], smiles=[self.smiles[i] for i in index],
            mols=[self.mols[i] for i in index],
            targets=self.targets.iloc[index].reset_index(drop=True),
            units=dict(self.units), source=self.source, n_skipped=self.n_skipped,
            skip_reasons=dict(self.skip_reasons), units_note=self.units_note,
            skipped=list(self.skipped),
        )


class Collector:
    """Accumulates molecules; turns a bad row into an InputError or a skip.

    Parameters
    ----------
    path : path-like
        The file being read (named in every error).
    skip_invalid : bool
        Count and skip bad rows instead of raising.
    """

    def __init__(self, path, skip_invalid: bool):
        self.path, self.skip_invalid = str(path), skip_invalid
        self.ids, self.smiles, self.mols, self.rows = [], [], [], []
        self.n_skipped = 0
        self.reasons: dict[str, int] = {}
        self.skipped: list[str] = []

    def add(self, ident: str, mol, values: dict[str, float]) -> None:
        """Keep one molecule and its target values."""
        from rdkit import Chem

        self.ids.append(str(ident))
        self.smiles.append(Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False)))
        self.mols.append(mol)
        self.rows.append(values)

    def bad(self, where: str, reason: str) -> None:
        """A row that cannot be read: raise, or count it under ``skip_invalid``."""
        # One line, whatever the file or a library put in the text (tar member names, RDKit).
        where, reason = (" ".join(str(t).split()) for t in (where, reason))
        if not self.skip_invalid:
            raise InputError(f"{where}: {reason}", self.path)
        self.n_skipped += 1
        self.skipped.append(f"{where}: {reason}")
        # Group by the reason's kind, not its molecule-specific details.
        kind = reason.split(":")[0]
        self.reasons[kind] = self.reasons.get(kind, 0) + 1

    def result(self, units: dict[str, str], columns: list[str] | None = None,
               note: str = "") -> MoleculeSet:
        """The collected molecules as a :class:`MoleculeSet` (at least one, or InputError)."""
        table = pd.DataFrame(self.rows, columns=columns, dtype=np.float64)
        if columns is None and not self.rows:
            table = pd.DataFrame(index=range(0))
        if not self.mols:
            raise InputError("expected at least one valid molecule, found none", self.path)
        return MoleculeSet(self.ids, self.smiles, self.mols, table.reset_index(drop=True),
                           units={k: units[k] for k in table.columns if k in units},
                           source=self.path, n_skipped=self.n_skipped,
                           skip_reasons=dict(self.reasons), units_note=note,
                           skipped=list(self.skipped))


def parse_float(text: str) -> float:
    """A number as QM9's xyz files write it (Mathematica exponents: ``1.2*^-5``)."""
    return float(text.replace("*^", "e"))


def canonical_unit(name: str, unit: str | None) -> str:
    """The app's unit of target ``name``; unknown targets keep the file's unit."""
    return TARGETS[name].unit if name in TARGETS else (unit or "")


def target_columns(columns, targets: list[str] | None, path) -> dict[str, tuple[str, str | None]]:
    """Map target name → (column header, unit) for the requested targets.

    ``targets=None`` picks whichever of the 12 Gilmer targets are present.
    """
    by_name = {}
    for col in columns:
        name, unit = parse_column(col)
        by_name.setdefault(name, (col, unit))
    if targets is None:
        return {n: by_name[n] for n in GILMER_TARGETS if n in by_name}
    missing = [t for t in targets if t not in by_name]
    if missing:
        raise InputError(f"expected target column(s) {missing}, found columns {list(columns)}", path)
    return {t: by_name[t] for t in targets}


def select_targets(ms: MoleculeSet, targets: list[str] | None, path) -> MoleculeSet:
    """Keep only ``targets`` of ``ms`` (all when ``None``); InputError naming missing ones."""
    if targets is None:
        return ms
    missing = [t for t in targets if t not in ms.targets.columns]
    if missing:
        raise InputError(f"expected target(s) {missing}, found {list(ms.targets.columns)}", path)
    ms.targets = ms.targets[targets]
    return ms


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one).

    The default worker count of the app's process pools: a container or
    ``taskset`` limit counts, not the machine's cores.
    """
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
