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
import warnings
from dataclasses import dataclass

import numpy as np

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.runs import RunDir

from .io import check_outputs, read_molecules, remove_stale_outputs, write_outputs
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
        from .predict import check_out_name

        check_pyscf_method(*_parse_method(self.method))
        if not 0 < self.field < 0.05:
            raise ConfigError(f"expected --field in (0, 0.05) au, found {self.field}")
        if self.max_memory_mb < 100:
            raise ConfigError(f"expected --max-memory-mb >= 100, found {self.max_memory_mb}")
        if self.seed < 0:
            raise ConfigError(f"expected --seed >= 0, found {self.seed}")
        check_out_name(self.out)
        return self


def _one_line(exc: BaseException) -> str:
    """A library's message on one line (PySCF splits some over two)."""
    return " ".join(str(exc).replace("'", "").split()) or type(exc).__name__


def check_pyscf_method(xc: str, basis: str) -> None:
    """Refuse an unknown functional or basis before any molecule is read.

    Without PySCF installed nothing is checked here (labelling says so later).
    """
    try:
        from pyscf import gto
        from pyscf.dft import libxc
    except ImportError:
        return
    if xc != "hf":
        try:
            libxc.parse_xc(xc)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"expected --method with a PySCF functional or hf, found {xc!r} "
                              f"({_one_line(exc)})") from None
    if basis != "qm9":
        try:
            with warnings.catch_warnings():
                # PySCF suggests installing basis-set-exchange on stderr for unknown names.
                warnings.simplefilter("ignore")
                gto.basis.load(basis, "C")
        except (KeyError, ValueError, RuntimeError, OSError) as exc:
            raise ConfigError(f"expected --method with a PySCF basis name, found {basis!r} "
                              f"({_one_line(exc)})") from None


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return gto.M(atom=atoms, basis=basis, unit="Angstrom", charge=charge, spin=nelec % 2,
                         verbose=0, max_memory=max_memory)
    except (KeyError, RuntimeError, ValueError) as exc:
        # A basis without these elements: one line, as every other error.
        raise ConfigError(f"expected a PySCF basis with elements "
                          f"{sorted({a for a, _ in atoms})}, found {basis_name!r} "
                          f"({_one_line(exc)})") from None


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


def _label_all(run, ms, cfg: LabelConfig) -> tuple[list[int], list[dict], list[str]]:
    """Label each molecule of ``ms`` (or take its marker); returns kept index, rows, skipped.

    A molecule whose SCF fails is an error naming it, or under ``skip_invalid``
    is skipped and named in ``skipped``. A marker is used only for the same
    molecule (id and SMILES), so an edited input never takes another's labels.
    """
    from deepsci.core.progress import progress

    kept, rows, skipped = [], [], []
    for i in progress(range(len(ms)), desc="label", unit="mol"):
        key, who = f"{i:07d}", {"id": ms.ids[i], "smiles": ms.smiles[i]}
        marker = run.marker(key) if run.done(key) else None
        if not (isinstance(marker, dict) and marker.get("molecule") == who):
            try:
                row = label_molecule(ms.mols[i], method=cfg.method,
                                     polarizability=cfg.polarizability, field=cfg.field,
                                     max_memory=cfg.max_memory_mb)
                marker = {"molecule": who, "row": row}
            except ValueError as exc:
                if not cfg.skip_invalid:
                    raise InputError(f"molecule {ms.ids[i]}: {_one_line(exc)}", cfg.inputs) \
                        from None
                marker = {"molecule": who, "skipped": _one_line(exc)}
            run.mark(key, marker)
        if "skipped" in marker:
            if not cfg.skip_invalid:  # skipped by an earlier --skip-invalid attempt
                raise InputError(f"molecule {ms.ids[i]}: {marker['skipped']}", cfg.inputs)
            skipped.append(f"molecule {ms.ids[i]}: {marker['skipped']}")
            continue
        kept.append(i)
        rows.append(marker["row"])
    return kept, rows, skipped


def label_molecules(cfg: LabelConfig, *, overwrite: bool = False) -> dict:
    """Label every molecule of ``cfg.inputs``; resumable, CSV and SDF written atomically at the end.

    Finished molecules are kept as resume markers of the run (beside the
    output, in ``.<out>.state/``), so a killed run restarts where it stopped;
    they are removed once the outputs are complete. An existing output is
    replaced only with ``overwrite``; an output that is the input never.
    """
    cfg.validate()
    check_outputs(cfg.out, inputs=[cfg.inputs], sdf=cfg.sdf, overwrite=overwrite)
    ms = read_molecules(cfg.inputs, targets=None, smiles_column=cfg.smiles_column,
                        skip_invalid=cfg.skip_invalid, seed=cfg.seed)
    with RunDir(cfg.out, command="molecules label", config=cfg, inputs=[cfg.inputs],
                overwrite=overwrite, file_output=True) as run:
        kept, rows, failed = _label_all(run, ms, cfg)
        if not kept:
            # Nothing to resume either: leave no markers and no record of an empty run.
            shutil.rmtree(run.state_dir, ignore_errors=True)
            raise InputError("expected at least one molecule whose SCF converges, found none",
                             cfg.inputs)
        names = list(_UNITS)
        remove_stale_outputs(cfg.out)
        written = write_outputs(cfg.out, ids=[ms.ids[i] for i in kept],
                                smiles=[ms.smiles[i] for i in kept],
                                mols=[ms.mols[i] for i in kept], sdf=cfg.sdf,
                                columns={n: np.array([r[n] for r in rows]) for n in names},
                                units=_UNITS)
        # The CSV holds every row now; the markers would only shadow a later re-run.
        shutil.rmtree(run.state_dir, ignore_errors=True)
        n_skipped = ms.n_skipped + len(failed)
        run.record(n=len(kept), n_skipped=n_skipped, skipped=ms.skipped + failed,
                   method=cfg.method, targets=names,
                   outputs={k: str(v) for k, v in written.items()})
    return {"out": str(cfg.out), "outputs": written, "n": len(kept), "n_skipped": n_skipped,
            "skipped": ms.skipped + failed, "rows": rows}
