"""Molecules from geometries: RDKit molecules from elements and coordinates
(bond orders from a SMILES template or perceived with xyz2mol), and the app's
``xyz`` geometry column.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import numpy as np

from ..featurize import ELEMENTS, check_elements
from .base import parse_float

__all__ = ["mol_from_xyz", "geometry_string", "parse_geometry", "formal_charge"]


def mol_from_xyz(symbols, coords, *, charge: int = 0, smiles: str | None = None):
    """An RDKit molecule from elements and Cartesian coordinates (Å).

    With ``smiles`` (QM9 ships one per molecule), connectivity comes from the
    geometry and bond orders and charges from the SMILES, used as a template;
    when the two graphs differ (connectivity changed on relaxation) or no
    SMILES is given, bonds and bond orders are perceived with RDKit's
    ``DetermineBonds`` (xyz2mol).

    Raises
    ------
    ValueError
        No atoms, unsupported elements, or bonds that cannot be perceived.
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDetermineBonds

    RDLogger.DisableLog("rdApp.*")
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    if len(symbols) == 0:
        raise ValueError("expected at least one atom, found none")
    if len(symbols) != len(coords):
        raise ValueError(f"expected {len(symbols)} coordinates, found {len(coords)}")
    if not np.all(np.isfinite(coords)):
        raise ValueError("expected finite coordinates, found NaN/inf")
    block = f"{len(symbols)}\n\n" + "\n".join(
        f"{s} {x:.10f} {y:.10f} {z:.10f}" for s, (x, y, z) in zip(symbols, coords, strict=True))
    mol = Chem.MolFromXYZBlock(block)
    if mol is None:
        raise ValueError("expected element symbols, found an unreadable atom list")
    if not set(symbols) <= set(ELEMENTS):
        check_elements(mol)  # names the offending element
    if smiles:
        templated = _bonds_from_template(mol, smiles)
        if templated is not None:
            return templated
    # Strained rings (bicyclobutanes) put non-bonded atoms within 1.3x covalent
    # radii; tighter factors recover some, and extended-Hückel connectivity
    # recovers the rest of QM9 (checked against QM9's own SMILES).
    err = None
    for cov in (1.3, 1.2, 1.1, None):
        trial = Chem.Mol(mol)
        try:
            if cov is None:
                with _quiet_fds():  # YAeHMOP prints distance warnings on the C streams
                    rdDetermineBonds.DetermineBonds(trial, charge=charge, useHueckel=True)
            else:
                rdDetermineBonds.DetermineBonds(trial, charge=charge, covFactor=cov)
            return trial
        except Exception as exc:  # RDKit raises bare ValueError/RuntimeError
            err = exc
    raise ValueError(f"expected perceivable bonds, found {type(err).__name__}: {err}")


def _bonds_from_template(mol, smiles: str):
    """``mol`` (atoms + conformer) with bond orders and charges of ``smiles``, or None.

    The geometry's connectivity (covalent radii) must be isomorphic to the
    SMILES graph with explicit H; a different graph returns None so the caller
    falls back to perceiving bonds from the geometry alone.
    """
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    tmpl = Chem.MolFromSmiles(smiles)
    if tmpl is None:
        return None
    tmpl = Chem.AddHs(tmpl)
    n, nb = tmpl.GetNumAtoms(), tmpl.GetNumBonds()
    if n != mol.GetNumAtoms():
        return None
    Chem.Kekulize(tmpl, clearAromaticFlags=True)
    for cov in (1.3, 1.2):
        conn = Chem.RWMol(mol)
        try:
            rdDetermineBonds.DetermineConnectivity(conn, covFactor=cov)
        except Exception:  # noqa: BLE001 - RDKit raises bare RuntimeError
            return None
        if conn.GetNumBonds() == nb:
            break
    else:
        return None
    # Match graphs only: every bond single, no charges or aromatic flags.
    skel = Chem.RWMol(tmpl)
    for i in range(n):
        skel.GetAtomWithIdx(i).SetFormalCharge(0)
    for i in range(nb):
        skel.GetBondWithIdx(i).SetBondType(Chem.BondType.SINGLE)
    match = conn.GetSubstructMatch(skel)
    if not match:
        return None
    for i in range(n):
        a = conn.GetAtomWithIdx(match[i])
        a.SetFormalCharge(tmpl.GetAtomWithIdx(i).GetFormalCharge())
        # Every H is an explicit atom, so no implicit H may be added.
        a.SetNoImplicit(True)
        a.SetNumExplicitHs(0)
    for i in range(nb):
        b = tmpl.GetBondWithIdx(i)
        conn.GetBondBetweenAtoms(match[b.GetBeginAtomIdx()],
                                 match[b.GetEndAtomIdx()]).SetBondType(b.GetBondType())
    out = conn.GetMol()
    try:
        Chem.SanitizeMol(out)
    except Exception:  # noqa: BLE001 - RDKit raises several sanitisation errors
        return None
    # As DetermineBonds does, so SMILES written for other tools keep stereo.
    Chem.AssignStereochemistryFrom3D(out)
    return out


@contextmanager
def _quiet_fds():
    """Silence file descriptors 1 and 2 (C-level output) for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def geometry_string(mol) -> str:
    """The app's ``xyz`` column: ``"El x y z; …"`` in Å for one molecule."""
    pos = mol.GetConformer().GetPositions()
    return "; ".join(f"{a.GetSymbol()} {x:.6f} {y:.6f} {z:.6f}"
                     for a, (x, y, z) in zip(mol.GetAtoms(), pos, strict=True))


def parse_geometry(text: str) -> tuple[list[str], list[list[float]]]:
    """The app's ``xyz`` column (``"El x y z; …"``) → (symbols, coordinates in Å)."""
    symbols, coords = [], []
    for part in str(text).split(";"):
        f = part.split()
        if not f:
            continue
        if len(f) != 4:
            raise ValueError(f"expected 'El x y z' per atom in the xyz column, found {part.strip()!r}")
        symbols.append(f[0])
        coords.append([parse_float(v) for v in f[1:]])
    return symbols, coords


def formal_charge(smiles) -> int:
    """Net formal charge of a SMILES string (0 when it does not parse)."""
    from rdkit import Chem

    m = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) else None
    return 0 if m is None else Chem.GetFormalCharge(m)
