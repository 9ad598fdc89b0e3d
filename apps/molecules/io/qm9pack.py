"""All of QM9 (130,831 molecules) from the CSVs of the ``qm9pack`` package (extra ``qm9``)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd

from deepsci.core.errors import InputError
from deepsci.core.parallel import process_map

from ..targets import GILMER_TARGETS, HARTREE_EV
from .base import HARTREE_TARGETS, Collector, MoleculeSet, available_cpus, canonical_unit
from .geometry import mol_from_xyz

__all__ = ["read_qm9pack", "qm9pack_dir", "qm9pack_rows"]

_QM9PACK_COLUMNS = {
    "Dipole_debye": "mu", "Polarizability_bohr3": "alpha", "HOMO_au": "homo", "LUMO_au": "lumo",
    "HOMO_LUMO_gap_au": "gap", "R2_bohr2": "r2", "ZPVE_au": "zpve",
    "InternalEnergy_0K_au": "u0", "InternalEnergy_298K_au": "u", "Enthalphy_298K_au": "h",
    "GibbsFreeEnergy_298K_au": "g", "Heatcapacity_Cv_cal_mol_K": "cv",
}


def qm9pack_dir() -> Path:
    """The folder of qm9pack's CSVs, found without importing the package."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("expected the qm9pack package (pip install 'deepsci[qm9]'), found none")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def read_qm9pack(*, limit: int | None = None, seed: int = 0, skip_invalid: bool = True,
                 rows: np.ndarray | None = None, workers: int | None = None) -> MoleculeSet:
    """Read QM9 (130,831 molecules) from the installed qm9pack CSVs.

    Parameters
    ----------
    limit : int, optional
        Keep a seeded random sample of this many molecules (fast experiments).
    seed : int
        Seed of that sample.
    skip_invalid : bool
        Skip the few geometries whose bond orders RDKit cannot perceive.
    rows : array of int, optional
        Explicit row positions (after concatenating the three parts) to keep.
    workers : int, optional
        Processes that build the molecules (default: every available CPU).

    Bonds: connectivity from each geometry, bond orders and charges from
    QM9's SMILES as a template; where relaxation changed the graph, full
    perception from the geometry (see :func:`mol_from_xyz`).
    """
    folder = qm9pack_dir()
    usecols = ["XYZ_file", "SMILES", "Elements", "XYZ_Ang", *_QM9PACK_COLUMNS]
    parts = []
    for k in (1, 2, 3):
        f = folder / f"qm9_part{k}.csv"
        if not f.exists():
            raise InputError("expected qm9pack's CSV, found none", f)
        parts.append(pd.read_csv(f, usecols=usecols))
    df = pd.concat(parts, ignore_index=True)
    if rows is not None:
        df = df.iloc[np.asarray(rows)]
    elif limit is not None and limit < len(df):
        pick = np.sort(np.random.default_rng(seed).choice(len(df), size=limit, replace=False))
        df = df.iloc[pick]
    return from_qm9pack_frame(df.reset_index(drop=True), folder, skip_invalid, workers)


def from_qm9pack_frame(df: pd.DataFrame, folder: Path, skip_invalid: bool,
                       workers: int | None = None) -> MoleculeSet:
    """Molecules and targets of qm9pack rows, built in ``workers`` processes (default: all CPUs)."""
    col = Collector(folder, skip_invalid)
    values = {}
    for src, name in _QM9PACK_COLUMNS.items():
        v = df[src].to_numpy(np.float64)
        values[name] = v * HARTREE_EV if name in HARTREE_TARGETS else v
    records = list(zip(df["XYZ_file"], df["Elements"], df["XYZ_Ang"], df["SMILES"], strict=True))
    chunks = [records[s:s + _CHUNK] for s in range(0, len(records), _CHUNK)]
    i = 0
    for chunk in process_map(qm9pack_rows, chunks, workers=workers or available_cpus(),
                             desc="read QM9 (chunks)", progress=True):
        for name, mol, reason in chunk:
            if mol is None:
                col.bad(name, reason)
            else:
                col.add(name, mol, {n: values[n][i] for n in GILMER_TARGETS})
            i += 1
    return col.result({c: canonical_unit(c, None) for c in GILMER_TARGETS},
                      columns=list(GILMER_TARGETS))


_CHUNK = 1000


def qm9pack_rows(records) -> list[tuple]:
    """Molecules of qm9pack rows → ``[(name, mol or None, reason)]`` (runs in a worker)."""
    num = re.compile(r"[-+0-9.eE]+")
    sym = re.compile(r"[A-Za-z]+")  # "['C','H']" → C, H (faster than ast.literal_eval)
    out = []
    for file, elements, xyz, smiles in records:
        name = str(file).replace(".xyz", "")
        try:
            symbols = sym.findall(elements)
            coords = np.array([float(x) for x in num.findall(xyz)])
            out.append((name, mol_from_xyz(symbols, coords, smiles=smiles), ""))
        except (ValueError, SyntaxError) as exc:
            out.append((name, None, str(exc)))
    return out
