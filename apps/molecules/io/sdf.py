"""SDF molfiles with 3-D coordinates, including MoleculeNet's QM9 ``gdb9.sdf``
and its companion ``gdb9.sdf.csv`` of targets.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from deepsci.core.errors import InputError
from deepsci.core.io import DECODE_ERRORS

from ..featurize import check_elements, embed_smiles
from ..targets import GILMER_TARGETS, HARTREE_EV, KCAL_MOL_EV, convert
from .base import HARTREE_TARGETS, Collector, MoleculeSet, canonical_unit, target_columns

__all__ = ["read_sdf", "moleculenet_table"]

_MOLECULENET_COLUMNS = {"mu": "mu", "alpha": "alpha", "homo": "homo", "lumo": "lumo",
                        "gap": "gap", "r2": "r2", "zpve": "zpve", "u0": "u0", "u298": "u",
                        "h298": "h", "g298": "g", "cv": "cv"}
_MOLECULENET_ATOM_COLUMNS = {"u0_atom": "u0_atom", "u298_atom": "u_atom", "h298_atom": "h_atom",
                             "g298_atom": "g_atom"}


def read_sdf(path, *, targets: list[str] | None = None, skip_invalid: bool = False,
             seed: int = 0) -> MoleculeSet:
    """Read an SDF with 3-D coordinates; targets from SDF properties or a companion CSV.

    MoleculeNet's ``gdb9.sdf`` comes with ``gdb9.sdf.csv`` (found automatically
    as ``<path>.csv``): its energies are Hartree except the ``*_atom``
    columns, which are kcal/mol; all are converted to eV. Otherwise properties
    named ``name`` or ``name [unit]`` inside the SDF are read. Molecules
    without a 3-D conformer are embedded from their SMILES (ETKDGv3 + MMFF).
    """
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    path = Path(path)
    if not path.exists():
        raise InputError("expected an existing SDF file, found none", path)
    if path.is_dir():
        raise InputError("expected an SDF file, found a folder", path)
    companion = Path(str(path) + ".csv")
    table = None
    if companion.exists():
        table = moleculenet_table(companion)
        if targets is not None:
            missing = [t for t in targets if t not in table.columns]
            if missing:
                raise InputError(f"expected target column(s) {missing}, found {list(table.columns)}",
                                 companion)
            table = table[targets]
        else:
            table = table[[c for c in GILMER_TARGETS if c in table.columns]]
    opener = gzip.open if path.suffix == ".gz" else open
    col = Collector(path, skip_invalid)
    try:
        with opener(path, "rb") as fh:
            supplier = Chem.ForwardSDMolSupplier(fh, removeHs=False, sanitize=True)
            names = _collect(supplier, col, table, targets, path, companion, seed)
    except InputError:
        raise
    except (*DECODE_ERRORS, SystemError) as exc:
        # A damaged gzip stream or bytes RDKit cannot decode, as one line naming the file;
        # RDKit reports the stream's own error (EOFError, BadGzipFile) as a SystemError.
        exc = exc.__cause__ or exc.__context__ or exc if isinstance(exc, SystemError) else exc
        text = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise InputError(f"expected an SDF file, found unreadable data ({text})", path) from None
    columns = list(table.columns) if table is not None else list(names or {})
    return col.result({c: canonical_unit(c, None) for c in columns}, columns=columns)


def _record(mol, seed: int):
    """One supplier record as a molecule with explicit H and a 3-D conformer (or ValueError)."""
    from rdkit import Chem

    check_elements(mol)
    if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
        return embed_smiles(Chem.MolToSmiles(mol), seed=seed)
    if any(a.GetTotalNumHs() for a in mol.GetAtoms()):
        return Chem.AddHs(mol, addCoords=True)
    return mol


def _values(mol, names) -> dict[str, float]:
    """The record's target properties in canonical units (ValueError naming a bad one)."""
    props = mol.GetPropsAsDict()
    values = {}
    for n, (c, unit) in names.items():
        try:
            values[n] = convert(float(props.get(c, np.nan)), unit, n)[0]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"property {c!r}: expected a number, found {props.get(c)!r} "
                             f"({exc})") from None
    return values


def _collect(supplier, col: Collector, table, targets, path: Path, companion: Path, seed: int):
    """Feed every record of ``supplier`` to ``col``; return the SDF's target columns."""
    names = None
    for i, mol in enumerate(supplier):
        where = f"record {i + 1}"
        if mol is None:
            col.bad(where, "expected a valid molfile record, found one RDKit cannot parse")
            continue
        try:
            mol = _record(mol, seed)
            if table is not None:
                if i >= len(table):
                    raise InputError(f"{where}: expected a row in {companion.name}, found none",
                                     path)
                values = table.iloc[i].to_dict()
            else:
                if names is None:
                    names = target_columns(list(mol.GetPropsAsDict()), targets, path)
                values = _values(mol, names)
            title = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
        except (ValueError, RuntimeError) as exc:  # RDKit's sanitisation and decoding errors
            col.bad(where, " ".join(str(exc).split()))
            continue
        col.add(title or f"{path.name}:{i + 1}", mol, values)
    return names


def moleculenet_table(path: Path) -> pd.DataFrame:
    """MoleculeNet's ``gdb9.sdf.csv`` as (N, T) targets in the app's units (Hartree and kcal/mol → eV)."""
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, *DECODE_ERRORS) as exc:
        text = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise InputError(f"expected MoleculeNet's gdb9.sdf.csv table, found unreadable data "
                         f"({text})", path) from None
    out = {}
    for src, dst in _MOLECULENET_COLUMNS.items():
        if src in df.columns:
            v = _numbers(df[src], src, path)
            out[dst] = v * HARTREE_EV if dst in HARTREE_TARGETS else v
    for src, dst in _MOLECULENET_ATOM_COLUMNS.items():
        if src in df.columns:
            out[dst] = _numbers(df[src], src, path) * KCAL_MOL_EV
    if not out:
        raise InputError(f"expected QM9 property columns (mu, gap, u0, …), found {list(df.columns)}",
                         path)
    return pd.DataFrame(out)


def _numbers(column: pd.Series, header: str, path: Path) -> np.ndarray:
    """A companion-table column as floats; a cell that is not a number names its row."""
    v = pd.to_numeric(column, errors="coerce").to_numpy(np.float64, copy=True)
    wrong = np.flatnonzero(np.isnan(v) & column.notna().to_numpy())
    if len(wrong):
        i = int(wrong[0])
        raise InputError(f"row {i + 2}, column {header!r}: expected a number, found "
                         f"{str(column.iloc[i])[:40]!r}", path)
    return v
