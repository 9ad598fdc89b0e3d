"""Synthetic molecules and files for tests and demos (no external data).

Molecules are real (QM9-like SMILES embedded with ETKDGv3 + MMFF); their
labels are cheap, deterministic functions of structure and geometry named
like the QM9 targets, so the whole pipeline (units, readers, training,
metrics) can be exercised in seconds. They are *not* quantum chemistry.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .featurize import embed_smiles
from .io import MoleculeSet, geometry_string, write_csv
from .targets import HARTREE_EV, KCAL_MOL_EV

__all__ = ["SMILES", "synthetic_set", "synthetic_labels", "write_qm9_xyz", "write_sdf",
           "write_moleculenet_sdf", "write_csv_set", "untrained_members"]

#: Small QM9-like molecules (H, C, N, O, F only; at most 9 heavy atoms).
SMILES = (
    "C", "N", "O", "C#C", "C#N", "C=O", "CC", "CO", "CC#N", "CC=O", "CCO", "COC", "NC=O",
    "CC(C)=O", "CC(N)=O", "OCCO", "CCCC", "CC(C)C", "C1CC1", "C1CCC1", "C1CCOC1", "c1ccccc1",
    "c1ccncc1", "c1ccoc1", "c1cc[nH]c1", "Cc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "CC(=O)O",
    "FC(F)F", "CF", "OC(F)F", "N#CC#N", "CCCO", "CC(O)C", "C=CC=C", "C#CC#C", "O=C1CCC1",
    "CN(C)C", "NCCO", "CC1=CC=CC1", "OCC#N", "CNC=O", "c1cnc[nH]1", "O=CC=O", "CCC#C",
)

_REF = {"H": -13.6, "C": -1029.8, "N": -1485.3, "O": -2042.6, "F": -2713.5}  # ~atomic U0, eV


def synthetic_labels(mol) -> dict[str, float]:
    """Deterministic pseudo-properties of one embedded molecule, in canonical units.

    ``u0`` is additive in atoms and bonds; ``gap`` falls with π bonds; ``mu`` is the
    Gasteiger-charge dipole (Debye) of the 3-D geometry; ``alpha`` grows with size.
    """
    from rdkit.Chem import rdPartialCharges

    m = type(mol)(mol)
    rdPartialCharges.ComputeGasteigerCharges(m)
    q = np.array([float(a.GetProp("_GasteigerCharge")) for a in m.GetAtoms()])
    q = np.nan_to_num(q)
    pos = m.GetConformer().GetPositions()
    dip = np.linalg.norm((q[:, None] * (pos - pos.mean(0))).sum(0)) * 4.803  # e·Å → D
    pi = sum(b.GetBondTypeAsDouble() > 1 for b in m.GetBonds())
    heavy = sum(a.GetAtomicNum() > 1 for a in m.GetAtoms())
    u0 = sum(_REF[a.GetSymbol()] for a in m.GetAtoms()) - 0.3 * m.GetNumBonds()
    return {"mu": float(dip), "alpha": float(6.0 + 7.5 * heavy + 1.1 * pi),
            "gap": float(9.5 - 3.0 * pi / (1.0 + pi) - 0.1 * heavy), "u0": float(u0)}


def synthetic_set(n: int | None = None, *, seed: int = 0, smiles=SMILES) -> MoleculeSet:
    """``n`` molecules (default: all of :data:`SMILES`) with :func:`synthetic_labels`."""
    from rdkit import Chem

    chosen = list(smiles)
    if n is not None:
        rng = np.random.default_rng(seed)
        chosen = [chosen[i] for i in rng.choice(len(chosen), size=n, replace=n > len(chosen))]
    mols = [embed_smiles(s, seed=seed + i) for i, s in enumerate(chosen)]
    rows = [synthetic_labels(m) for m in mols]
    return MoleculeSet(ids=[f"synth_{i}" for i in range(len(mols))],
                       smiles=[Chem.MolToSmiles(Chem.RemoveHs(m)) for m in mols], mols=mols,
                       targets=pd.DataFrame(rows),
                       units={"mu": "D", "alpha": "a0^3", "gap": "eV", "u0": "eV"},
                       source="synthetic")


def write_csv_set(ms: MoleculeSet, path, *, geometry: bool = True) -> Path:
    """Write a set in the app's CSV format (with or without the ``xyz`` column)."""
    return write_csv(path, ids=ms.ids, smiles=ms.smiles,
                     columns={c: ms.targets[c].to_numpy() for c in ms.targets.columns},
                     units=ms.units, mols=ms.mols if geometry else None)


def _mathematica(x: float) -> str:
    # QM9 writes exponents the Mathematica way: 1.2345*^-5.
    s = f"{x:.6e}"
    mant, exp = s.split("e")
    return f"{mant}*^{int(exp)}"


def write_qm9_xyz(ms: MoleculeSet, folder, *, start: int = 1) -> list[Path]:
    """Write ``dsgdb9nsd_*.xyz`` files in QM9's layout (17-field line 2, Hartree energies).

    Targets missing from ``ms`` are written as 0.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, mol in enumerate(ms.mols):
        t = {c: float(ms.targets[c].iloc[k]) for c in ms.targets.columns}
        ha = lambda name, t=t: t.get(name, 0.0) / HARTREE_EV  # noqa: E731
        fields = ["gdb", str(start + k), "157.7118", "157.70997", "157.70699",
                  f"{t.get('mu', 0.0):.4f}", f"{t.get('alpha', 0.0):.2f}", f"{ha('homo'):.4f}",
                  f"{ha('lumo'):.4f}", f"{ha('gap'):.4f}", f"{t.get('r2', 0.0):.4f}",
                  f"{ha('zpve'):.6f}", f"{ha('u0'):.6f}", f"{ha('u'):.6f}", f"{ha('h'):.6f}",
                  f"{ha('g'):.6f}", f"{t.get('cv', 0.0):.3f}"]
        pos = mol.GetConformer().GetPositions()
        lines = [str(mol.GetNumAtoms()), "\t".join(fields)]
        for a, (x, y, z) in zip(mol.GetAtoms(), pos, strict=True):
            lines.append(f"{a.GetSymbol()}\t{_mathematica(x)}\t{y:.10f}\t{z:.10f}\t0.000000")
        lines += ["100.0\t200.0", f"{ms.smiles[k]}\t{ms.smiles[k]}", "InChI=1S/x\tInChI=1S/x"]
        p = folder / f"dsgdb9nsd_{start + k:06d}.xyz"
        p.write_text("\n".join(lines) + "\n")
        paths.append(p)
    return paths


def write_sdf(ms: MoleculeSet, path, *, units: bool = True) -> Path:
    """An SDF with 3-D coordinates and one property per target (``name [unit]`` if ``units``)."""
    from rdkit import Chem

    path = Path(path)
    with Chem.SDWriter(str(path)) as w:
        for k, mol in enumerate(ms.mols):
            m = Chem.Mol(mol)
            m.SetProp("_Name", ms.ids[k])
            for c in ms.targets.columns:
                key = f"{c} [{ms.units[c]}]" if units else c
                m.SetProp(key, f"{float(ms.targets[c].iloc[k]):.8g}")
            w.write(m)
    return path


def write_moleculenet_sdf(ms: MoleculeSet, path) -> Path:
    """MoleculeNet's ``gdb9.sdf`` + ``gdb9.sdf.csv`` layout (Hartree; ``*_atom`` in kcal/mol)."""
    path = Path(path)
    write_sdf(MoleculeSet(ms.ids, ms.smiles, ms.mols, ms.targets.iloc[:, :0], {}), path)
    t = ms.targets
    table = {"mol_id": ms.ids}
    for src, dst in (("mu", "mu"), ("alpha", "alpha"), ("gap", "gap"), ("u0", "u0")):
        if src in t.columns:
            v = t[src].to_numpy()
            table[dst] = v / HARTREE_EV if src in ("gap", "u0") else v
    if "u0" in t.columns:
        table["u0_atom"] = (t["u0"].to_numpy() * 0.001) / KCAL_MOL_EV
    pd.DataFrame(table).to_csv(str(path) + ".csv", index=False)
    return path


def geometry_column(ms: MoleculeSet) -> list[str]:
    """The ``xyz`` column strings of a set."""
    return [geometry_string(m) for m in ms.mols]


def untrained_members(folder, *, n: int = 2, units: dict[str, str] | None = None,
                      graph: str = "bond") -> list[Path]:
    """``n`` tiny untrained models of the app, with cards, saved as ``folder/member_k.keras``.

    For tests of what surrounds a model (readers, outputs, errors): each member
    has its own random weights (so an ensemble's std is not zero) and the
    target scaling of QM9-like values, so outputs are on a physical scale.
    """
    import keras

    from deepsci.core.models.serialization import save_model

    from .model import ModelConfig, build_model, member_card

    units = units or {"gap": "eV", "mu": "D"}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t = len(units)
    scaling = {"mean": [7.0 + j for j in range(t)], "std": [1.0] * t, "atomref": None}
    config = ModelConfig(graph=graph, units=8, steps=1, edge_hidden=(4,), set2set_steps=1,
                         head=(8,))
    paths = []
    for k in range(n):
        keras.utils.set_random_seed(k)
        card = member_card(units=units, graph=graph, scaling=scaling, training={"seed": k},
                           data={}, metrics={}, extra={"member": k})
        path = folder / f"member_{k}.keras"
        save_model(build_model(t, config, scaling), path, card=card)
        paths.append(path)
    return paths
