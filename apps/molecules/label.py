"""DFT labels for a user's own molecules with PySCF (the ``dft`` extra).

The default method reproduces QM9's level of theory: B3LYP (Gaussian's
flavour, VWN3 → PySCF ``b3lypg``) with Gaussian's 6-31G(2df,p). PySCF's
built-in ``6-31G(2df,p)`` takes its d exponents from a different source
(1.252/0.313 for C); Gaussian's "2d" splits the 6-31G* exponent 0.8 into
1.6 and 0.4. The basis here is 6-31G + d(1.6) + d(0.4) + PySCF's f shell on
heavy atoms and 6-31G + p on H.

Labels are single points at the molecule's geometry (given in xyz/SDF/CSV
``xyz`` input; MMFF-relaxed ETKDG conformers for SMILES): HOMO, LUMO, gap
[eV], dipole μ [D], ⟨R²⟩ [a0²] about the centre of nuclear charge (as
Gaussian reports it) and the isotropic polarizability α [a0³] by central
finite differences of the dipole in a ±0.001 au field. QM9 also optimised
each geometry with B3LYP; here the geometry is used as given.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.runs import RunDir

from .io import read_molecules, remove_stale_outputs, write_outputs
from .targets import HARTREE_EV

__all__ = ["LabelConfig", "qm9_basis", "label_molecule", "label_molecules", "METHODS"]

AU_DEBYE = 2.541746473
METHODS = ("b3lyp-qm9", "hf/sto-3g", "<xc or hf>/<pyscf basis>")


@dataclass
class LabelConfig:
    """``deepsci molecules label``.

    Attributes
    ----------
    inputs : str
        Molecules: .smi/.txt, .csv, .sdf, .xyz, a folder or tarball of xyz files.
    out : str
        Output CSV in the format ``train --data`` reads (with the ``xyz`` geometry column).
    method : str
        b3lyp-qm9 (QM9's B3LYP/6-31G(2df,p)) or <method>/<basis> with a PySCF
        functional or hf and a PySCF basis name, e.g. hf/sto-3g.
    polarizability : bool
        Compute α by finite field (6 more SCF runs per molecule).
    field : float
        Finite-field strength in au for α.
    max_memory_mb : int
        PySCF's memory limit per SCF.
    skip_invalid : bool
        Skip unreadable molecules and report how many.
    smiles_column : str
        SMILES column of a CSV.
    seed : int
        Conformer seed for SMILES input.
    sdf : bool
        Also write ``<stem>.sdf``: every molecule at the geometry the DFT used
        with its labels as SD tags (for RDKit, DataWarrior, KNIME, PyMOL).
    """

    inputs: str
    out: str = "labels.csv"
    method: str = "b3lyp-qm9"
    polarizability: bool = True
    field: float = 1e-3
    max_memory_mb: int = 2000
    skip_invalid: bool = False
    smiles_column: str = "smiles"
    seed: int = 0
    sdf: bool = True

    def validate(self) -> LabelConfig:
        _parse_method(self.method)
        if not 0 < self.field < 0.05:
            raise ConfigError(f"expected --field in (0, 0.05) au, found {self.field}")
        if self.max_memory_mb < 100:
            raise ConfigError(f"expected --max-memory-mb >= 100, found {self.max_memory_mb}")
        if self.seed < 0:
            raise ConfigError(f"expected --seed >= 0, found {self.seed}")
        return self


def _parse_method(spec: str) -> tuple[str, str]:
    spec = spec.strip().lower()
    if spec == "b3lyp-qm9":
        return "b3lypg", "qm9"
    if spec.count("/") != 1 or not all(spec.split("/")):
        raise ConfigError(f"expected --method b3lyp-qm9 or <method>/<basis> (e.g. hf/sto-3g), "
                          f"found {spec!r}")
    method, basis = spec.split("/")
    return method, basis


def qm9_basis(elements) -> dict:
    """Gaussian's 6-31G(2df,p) as a PySCF basis dict for ``elements``."""
    from pyscf import gto

    basis = {}
    for el in set(elements):
        if el == "H":
            basis[el] = gto.basis.load("6-31g(2df,p)", el)  # 6-31G + p(1.1), as Gaussian
            continue
        shells = [s for s in gto.basis.load("6-31g", el)]
        f_shells = [s for s in gto.basis.load("6-31g(2df,p)", el) if s[0] == 3]
        basis[el] = shells + [[2, [1.6, 1.0]], [2, [0.4, 1.0]]] + f_shells
    return basis


def _pyscf_mol(mol, basis_name: str, max_memory: int):
    from pyscf import gto
    from rdkit import Chem

    pos = mol.GetConformer().GetPositions()
    atoms = [(a.GetSymbol(), tuple(p)) for a, p in zip(mol.GetAtoms(), pos, strict=True)]
    charge = Chem.GetFormalCharge(mol)
    nelec = sum(a.GetAtomicNum() for a in mol.GetAtoms()) - charge
    basis = qm9_basis([a for a, _ in atoms]) if basis_name == "qm9" else basis_name
    try:
        return gto.M(atom=atoms, basis=basis, unit="Angstrom", charge=charge, spin=nelec % 2,
                     verbose=0, max_memory=max_memory)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"expected a PySCF basis name, found {basis_name!r} ({exc})") from None


def _scf(pmol, method: str, field=None):
    from pyscf import dft, scf

    open_shell = pmol.spin != 0
    if method == "hf":
        mf = scf.UHF(pmol) if open_shell else scf.RHF(pmol)
    else:
        mf = dft.UKS(pmol) if open_shell else dft.RKS(pmol)
        mf.xc = method
    if field is not None:
        # Electrons (charge -1) in a uniform field F: H' = +F·r.
        h = mf.get_hcore()
        r = pmol.intor("int1e_r", comp=3)
        mf.get_hcore = lambda *a, h=h + np.einsum("x,xij->ij", field, r): h
    mf.conv_tol = 1e-9
    mf.kernel()
    if not mf.converged:
        mf = mf.newton()
        mf.kernel()
    if not mf.converged:
        raise ValueError("expected a converged SCF, found none after second-order fallback")
    return mf


def _dipole_au(mf) -> np.ndarray:
    return np.asarray(mf.dip_moment(unit="AU", verbose=0))


def _frontier(mf) -> tuple[float, float]:
    e, occ = mf.mo_energy, mf.mo_occ
    if isinstance(e, (list, tuple)) or np.ndim(e) == 2:
        e, occ = np.concatenate(list(e)), np.concatenate(list(occ))
    return float(e[occ > 0].max()), float(e[occ == 0].min())


def label_molecule(mol, *, method: str = "b3lyp-qm9", polarizability: bool = True,
                   field: float = 1e-3, max_memory: int = 2000) -> dict[str, float]:
    """DFT/HF properties of one RDKit molecule (explicit H, 3-D conformer).

    Returns
    -------
    dict
        ``homo``, ``lumo``, ``gap`` [eV], ``mu`` [D], ``r2`` [a0²], ``alpha`` [a0³]
        (NaN without ``polarizability``) and ``e_scf`` [eV].
    """
    xc, basis = _parse_method(method)
    pmol = _pyscf_mol(mol, basis, max_memory)
    mf = _scf(pmol, xc)
    homo, lumo = _frontier(mf)
    mu = _dipole_au(mf)
    charges = pmol.atom_charges()
    centre = charges @ pmol.atom_coords() / charges.sum()
    dm = mf.make_rdm1()
    dm = dm[0] + dm[1] if np.ndim(dm) == 3 else dm
    with pmol.with_common_orig(centre):
        r2 = float(np.einsum("ij,ji->", pmol.intor("int1e_r2"), dm))
    alpha = float("nan")
    if polarizability:
        diag = []
        for k in range(3):
            f = np.zeros(3)
            f[k] = field
            plus = _dipole_au(_scf(pmol, xc, f))
            minus = _dipole_au(_scf(pmol, xc, -f))
            diag.append((plus[k] - minus[k]) / (2 * field))
        alpha = float(np.mean(diag))
    return {"homo": homo * HARTREE_EV, "lumo": lumo * HARTREE_EV, "gap": (lumo - homo) * HARTREE_EV,
            "mu": float(np.linalg.norm(mu) * AU_DEBYE), "r2": r2, "alpha": alpha,
            "e_scf": float(mf.e_tot) * HARTREE_EV}


_UNITS = {"homo": "eV", "lumo": "eV", "gap": "eV", "mu": "D", "r2": "a0^2", "alpha": "a0^3",
          "e_scf": "eV"}


def label_molecules(cfg: LabelConfig, *, overwrite: bool = False) -> dict:
    """Label every molecule of ``cfg.inputs``; resumable, CSV written atomically at the end.

    Finished molecules are kept as resume markers of the run (beside the
    output, in ``.<out>.state/``), so a killed run restarts where it stopped;
    they are removed once the CSV is complete. ``overwrite`` is accepted for
    the CLI's output group (the CSV is always replaced atomically).
    """
    from deepsci.core.progress import progress

    cfg.validate()
    ms = read_molecules(cfg.inputs, targets=None, smiles_column=cfg.smiles_column,
                        skip_invalid=cfg.skip_invalid, seed=cfg.seed)
    with RunDir(cfg.out, command="molecules label", config=cfg, inputs=[cfg.inputs],
                overwrite=overwrite, file_output=True) as run:
        rows = []
        for i in progress(range(len(ms)), desc="label", unit="mol"):
            key = f"{i:07d}"
            if run.done(key):
                rows.append(run.marker(key))
                continue
            try:
                row = label_molecule(ms.mols[i], method=cfg.method,
                                     polarizability=cfg.polarizability, field=cfg.field,
                                     max_memory=cfg.max_memory_mb)
            except ValueError as exc:
                raise InputError(f"molecule {ms.ids[i]}: {exc}", cfg.inputs) from None
            run.mark(key, row)
            rows.append(row)
        names = list(_UNITS)
        remove_stale_outputs(cfg.out)
        written = write_outputs(cfg.out, ids=ms.ids, smiles=ms.smiles, mols=ms.mols, sdf=cfg.sdf,
                                columns={n: np.array([r[n] for r in rows]) for n in names},
                                units=_UNITS)
        # The CSV holds every row now; the markers would only shadow a later re-run.
        shutil.rmtree(run.state_dir, ignore_errors=True)
        run.record(n=len(ms), n_skipped=ms.n_skipped, method=cfg.method, targets=names,
                   outputs={k: str(v) for k, v in written.items()})
    return {"out": str(cfg.out), "outputs": written, "n": len(ms), "n_skipped": ms.n_skipped,
            "rows": rows}
