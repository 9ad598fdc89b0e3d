"""The field's cheap baseline: ridge regression on RDKit descriptors.

A linear model on a few dozen 2-D descriptors (element and bond counts, ring
counts, hybridisation counts, Crippen logP/MR, TPSA, ...) is the classical
first try for QM9-type properties; the shipped model's card and the demo
compare the MPNN with it on the same held-out molecules.
"""
from __future__ import annotations

import numpy as np

__all__ = ["DESCRIPTORS", "descriptors", "fit_ridge", "predict_ridge"]

DESCRIPTORS = (
    "n_H", "n_C", "n_N", "n_O", "n_F", "heavy_atoms", "single", "double", "triple", "aromatic",
    "rings", "aromatic_rings", "sp", "sp2", "sp3", "h_donors", "h_acceptors", "rotatable",
    "fraction_csp3", "valence_electrons", "mol_wt", "logp", "mr", "tpsa",
)


def _one(mol) -> list[float]:
    from rdkit import Chem
    from rdkit.Chem import Crippen, Descriptors, rdMolDescriptors

    sym = [a.GetSymbol() for a in mol.GetAtoms()]
    bonds = [b.GetBondType() for b in mol.GetBonds()]
    bt = Chem.rdchem.BondType
    hyb = [a.GetHybridization() for a in mol.GetAtoms() if a.GetSymbol() != "H"]
    ht = Chem.rdchem.HybridizationType
    return [
        *(float(sym.count(e)) for e in ("H", "C", "N", "O", "F")),
        float(sum(s != "H" for s in sym)),
        *(float(bonds.count(t)) for t in (bt.SINGLE, bt.DOUBLE, bt.TRIPLE, bt.AROMATIC)),
        float(rdMolDescriptors.CalcNumRings(mol)), float(rdMolDescriptors.CalcNumAromaticRings(mol)),
        *(float(hyb.count(t)) for t in (ht.SP, ht.SP2, ht.SP3)),
        float(rdMolDescriptors.CalcNumHBD(mol)), float(rdMolDescriptors.CalcNumHBA(mol)),
        float(rdMolDescriptors.CalcNumRotatableBonds(mol)), float(rdMolDescriptors.CalcFractionCSP3(mol)),
        float(Descriptors.NumValenceElectrons(mol)), float(Descriptors.MolWt(mol)),
        float(Crippen.MolLogP(mol)), float(Crippen.MolMR(mol)), float(rdMolDescriptors.CalcTPSA(mol)),
    ]


def descriptors(mols) -> np.ndarray:
    """RDKit descriptors of molecules.

    Parameters
    ----------
    mols : list of rdkit.Chem.Mol
        N molecules (explicit hydrogens).

    Returns
    -------
    numpy.ndarray
        (N, len(DESCRIPTORS)) float64.
    """
    return np.array([_one(m) for m in mols], dtype=np.float64).reshape(len(mols), len(DESCRIPTORS))


def fit_ridge(x: np.ndarray, y: np.ndarray, *, alpha: float = 1.0) -> dict:
    """Ridge regression per target on standardised descriptors (closed form).

    Parameters
    ----------
    x : numpy.ndarray
        (N, D) descriptors.
    y : numpy.ndarray
        (N, T) targets; NaN rows of a target are left out of its fit.
    alpha : float
        L2 penalty on the standardised coefficients.

    Returns
    -------
    dict
        ``{"mean": (D,), "scale": (D,), "coef": (D, T), "intercept": (T,), "alpha": float}``
        as lists (JSON-ready).
    """
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - mean) / scale
    coef = np.zeros((x.shape[1], y.shape[1]))
    intercept = np.zeros(y.shape[1])
    for j in range(y.shape[1]):
        ok = np.isfinite(y[:, j])
        zj, yj = z[ok], y[ok, j]
        intercept[j] = yj.mean()
        coef[:, j] = np.linalg.solve(zj.T @ zj + alpha * np.eye(zj.shape[1]), zj.T @ (yj - yj.mean()))
    return {"mean": mean.tolist(), "scale": scale.tolist(), "coef": coef.tolist(),
            "intercept": intercept.tolist(), "alpha": alpha}


def predict_ridge(fit: dict, x: np.ndarray) -> np.ndarray:
    """(N, T) predictions of a :func:`fit_ridge` result for (N, D) descriptors."""
    z = (x - np.asarray(fit["mean"])) / np.asarray(fit["scale"])
    return z @ np.asarray(fit["coef"]) + np.asarray(fit["intercept"])
