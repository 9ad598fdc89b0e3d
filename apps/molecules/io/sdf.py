"""SDF molfiles with 3-D coordinates, including MoleculeNet's QM9 ``gdb9.sdf``
and its companion ``gdb9.sdf.csv`` of targets.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from deepsci.core.errors import InputError

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
    names = None
    with opener(path, "rb") as fh:
        supplier = Chem.ForwardSDMolSupplier(fh, removeHs=False, sanitize=True)
        for i, mol in enumerate(supplier):
            where = f"record {i + 1}"
            if mol is None:
                col.bad(where, "expected a valid molfile record, found one RDKit cannot parse")
                continue
            try:
                check_elements(mol)
                if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
                    mol = embed_smiles(Chem.MolToSmiles(mol), seed=seed)
                elif any(a.GetTotalNumHs() for a in mol.GetAtoms()):
                    mol = Chem.AddHs(mol, addCoords=True)
            except ValueError as exc:
                col.bad(where, str(exc))
                continue
            if table is not None:
                if i >= len(table):
                    raise InputError(f"{where}: expected a row in {companion.name}, found none", path)
                values = table.iloc[i].to_dict()
            else:
                props = mol.GetPropsAsDict()
                if names is None:
                    names = target_columns(list(props), targets, path)
                values = {}
                for n, (c, unit) in names.items():
                    try:
                        values[n] = convert(float(props.get(c, np.nan)), unit, n)[0]
                    except (TypeError, ValueError) as exc:
                        raise InputError(f"{where}: property {c!r}: {exc}", path) from None
            ident = mol.GetProp("_Name") if mol.HasProp("_Name") and mol.GetProp("_Name") else \
                f"{path.name}:{i + 1}"
            col.add(ident, mol, values)
    columns = list(table.columns) if table is not None else list(names or {})
    return col.result({c: canonical_unit(c, None) for c in columns}, columns=columns)


def moleculenet_table(path: Path) -> pd.DataFrame:
    """MoleculeNet's ``gdb9.sdf.csv`` as (N, T) targets in the app's units (Hartree and kcal/mol → eV)."""
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"expected MoleculeNet's gdb9.sdf.csv table, found unreadable data ({exc})",
                         path) from None
    out = {}
    for src, dst in _MOLECULENET_COLUMNS.items():
        if src in df.columns:
            v = df[src].to_numpy(np.float64)
            out[dst] = v * HARTREE_EV if dst in HARTREE_TARGETS else v
    for src, dst in _MOLECULENET_ATOM_COLUMNS.items():
        if src in df.columns:
            out[dst] = df[src].to_numpy(np.float64) * KCAL_MOL_EV
    if not out:
        raise InputError(f"expected QM9 property columns (mu, gap, u0, …), found {list(df.columns)}",
                         path)
    return pd.DataFrame(out)
