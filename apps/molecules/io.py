"""Molecule file formats: QM9 (qm9pack, dsgdb9nsd xyz/tarball, MoleculeNet SDF), CSV, SDF.

Every reader returns a :class:`MoleculeSet`: RDKit molecules with explicit
hydrogens and a 3-D conformer, plus a table of targets in the app's canonical
units (see :mod:`deepsci.apps.molecules.targets`). Molecules given only as
SMILES get an ETKDGv3 + MMFF conformer so 3-D models still apply.

The app's own CSV format (written by ``label`` and ``predict``, read by
``train``) is chemprop-compatible: a ``smiles`` column, optional ``id`` and
``xyz`` (geometry, ``"El x y z; El x y z; …"`` in Å) columns, and one column
per target named ``"<name> [<unit>]"``.
"""
from __future__ import annotations

import gzip
import importlib.util
import io as _io
import os
import re
import sys
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deepsci.core.errors import InputError
from deepsci.core.io import atomic_path

from .featurize import ELEMENTS, check_elements, embed_smiles
from .targets import GILMER_TARGETS, HARTREE_EV, KCAL_MOL_EV, column_name, convert, parse_column

__all__ = [
    "MoleculeSet",
    "read_molecules",
    "read_csv",
    "read_sdf",
    "read_xyz",
    "read_qm9pack",
    "read_smiles_list",
    "qm9pack_dir",
    "mol_from_xyz",
    "geometry_string",
    "write_csv",
    "bundled_subset",
    "map_chunks",
    "available_cpus",
]

# Target columns in QM9's own files: 17-field comment line, qm9pack CSVs, MoleculeNet CSV.
_XYZ_FIELDS = ("tag", "index", "A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2",
               "zpve", "u0", "u", "h", "g", "cv")
_XYZ_UNITS = {"homo": "Ha", "lumo": "Ha", "gap": "Ha", "zpve": "Ha", "u0": "Ha", "u": "Ha",
              "h": "Ha", "g": "Ha"}
_QM9PACK_COLUMNS = {
    "Dipole_debye": "mu", "Polarizability_bohr3": "alpha", "HOMO_au": "homo", "LUMO_au": "lumo",
    "HOMO_LUMO_gap_au": "gap", "R2_bohr2": "r2", "ZPVE_au": "zpve",
    "InternalEnergy_0K_au": "u0", "InternalEnergy_298K_au": "u", "Enthalphy_298K_au": "h",
    "GibbsFreeEnergy_298K_au": "g", "Heatcapacity_Cv_cal_mol_K": "cv",
}
_MOLECULENET_COLUMNS = {"mu": "mu", "alpha": "alpha", "homo": "homo", "lumo": "lumo",
                        "gap": "gap", "r2": "r2", "zpve": "zpve", "u0": "u0", "u298": "u",
                        "h298": "h", "g298": "g", "cv": "cv"}
_MOLECULENET_ATOM_COLUMNS = {"u0_atom": "u0_atom", "u298_atom": "u_atom", "h298_atom": "h_atom",
                             "g298_atom": "g_atom"}


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
        One column per target, canonical units (``units``), NaN where unknown.
    units : dict
        Target name → unit string.
    source : str
        Where the molecules came from.
    n_skipped : int
        Invalid rows skipped under ``skip_invalid``.
    skip_reasons : dict
        Reason → number of rows skipped for it.
    """

    ids: list[str]
    smiles: list[str]
    mols: list
    targets: pd.DataFrame
    units: dict[str, str] = field(default_factory=dict)
    source: str = ""
    n_skipped: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)

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
            skip_reasons=dict(self.skip_reasons),
        )


class _Collector:
    """Accumulates molecules; turns a bad row into an InputError or a skip."""

    def __init__(self, path, skip_invalid: bool):
        self.path, self.skip_invalid = str(path), skip_invalid
        self.ids, self.smiles, self.mols, self.rows = [], [], [], []
        self.n_skipped = 0
        self.reasons: dict[str, int] = {}

    def add(self, ident: str, mol, values: dict[str, float]) -> None:
        from rdkit import Chem

        self.ids.append(str(ident))
        self.smiles.append(Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False)))
        self.mols.append(mol)
        self.rows.append(values)

    def bad(self, where: str, reason: str) -> None:
        if not self.skip_invalid:
            raise InputError(f"{where}: {reason}", self.path)
        self.n_skipped += 1
        # Group by the reason's kind, not its molecule-specific details.
        kind = reason.split(":")[0]
        self.reasons[kind] = self.reasons.get(kind, 0) + 1

    def result(self, units: dict[str, str], columns: list[str] | None = None) -> MoleculeSet:
        table = pd.DataFrame(self.rows, columns=columns, dtype=np.float64)
        if columns is None and not self.rows:
            table = pd.DataFrame(index=range(0))
        if not self.mols:
            raise InputError("expected at least one valid molecule, found none", self.path)
        return MoleculeSet(self.ids, self.smiles, self.mols, table.reset_index(drop=True),
                           units={k: units[k] for k in table.columns if k in units},
                           source=self.path, n_skipped=self.n_skipped,
                           skip_reasons=dict(self.reasons))


def _float(text: str) -> float:
    # QM9's xyz files write Mathematica exponents: 1.2*^-5.
    return float(text.replace("*^", "e"))


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


def _parse_geometry(text: str):
    symbols, coords = [], []
    for part in str(text).split(";"):
        f = part.split()
        if not f:
            continue
        if len(f) != 4:
            raise ValueError(f"expected 'El x y z' per atom in the xyz column, found {part.strip()!r}")
        symbols.append(f[0])
        coords.append([_float(v) for v in f[1:]])
    return symbols, coords


# --------------------------------------------------------------------- CSV
def _target_columns(columns, targets, path) -> dict[str, tuple[str, str | None]]:
    """Map target name → (column header, unit) for the requested targets."""
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


def read_csv(path, *, smiles_column: str = "smiles", targets: list[str] | None = None,
             skip_invalid: bool = False, seed: int = 0, require_targets: bool = False) -> MoleculeSet:
    """Read a chemprop-style CSV: a SMILES column and target columns.

    Parameters
    ----------
    path : path-like
        ``.csv`` or ``.csv.gz``.
    smiles_column : str
        Name of the SMILES column (case-insensitive).
    targets : list of str, optional
        Target columns to read, named ``name`` or ``name [unit]``; units of the
        known QM9 targets are converted to the canonical ones. ``None`` reads
        whichever of the 12 Gilmer targets are present.
    skip_invalid : bool
        Skip rows that fail (and count them) instead of raising.
    seed : int
        Conformer seed for rows without an ``xyz`` geometry.
    require_targets : bool
        Raise when no target column is found.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, comment=None)
    except FileNotFoundError:
        raise InputError("expected an existing CSV file, found none", path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"expected a CSV table, found unreadable data ({exc})", path) from None
    lower = {c.lower(): c for c in df.columns}
    if smiles_column.lower() not in lower:
        raise InputError(f"expected a column {smiles_column!r}, found columns {list(df.columns)}",
                         path)
    scol = lower[smiles_column.lower()]
    tcols = _target_columns([c for c in df.columns if c not in (scol,)], targets, path)
    if require_targets and not tcols:
        raise InputError(f"expected target columns, found columns {list(df.columns)}", path)
    xcol = lower.get("xyz")
    idcol = lower.get("id")
    values, units = {}, {}
    for name, (col, unit) in tcols.items():
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64)
        try:
            values[name], _ = convert(v, unit, name)
        except ValueError as exc:
            raise InputError(f"column {col!r}: {exc}", path) from None
        units[name] = _canonical_unit(name, unit)
    col = _Collector(path, skip_invalid)
    for i in range(len(df)):
        where = f"row {i + 2}"  # 1-based, after the header line
        smi = df[scol].iloc[i]
        try:
            if xcol is not None and isinstance(df[xcol].iloc[i], str) and df[xcol].iloc[i].strip():
                symbols, coords = _parse_geometry(df[xcol].iloc[i])
                mol = mol_from_xyz(symbols, coords, charge=_formal_charge(smi))
            else:
                if not isinstance(smi, str) or not smi.strip():
                    raise ValueError("expected a SMILES string, found an empty cell")
                mol = embed_smiles(smi.strip(), seed=seed)
        except ValueError as exc:
            col.bad(where, str(exc))
            continue
        ident = df[idcol].iloc[i] if idcol is not None else f"{path.name}:{i + 2}"
        col.add(ident, mol, {n: values[n][i] for n in tcols})
    return col.result(units, columns=list(tcols))


def _canonical_unit(name: str, unit: str | None) -> str:
    from .targets import TARGETS

    return TARGETS[name].unit if name in TARGETS else (unit or "")


def _formal_charge(smiles) -> int:
    from rdkit import Chem

    m = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) else None
    return 0 if m is None else Chem.GetFormalCharge(m)


# --------------------------------------------------------------------- SDF
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
        table = _moleculenet_table(companion)
        if targets is not None:
            missing = [t for t in targets if t not in table.columns]
            if missing:
                raise InputError(f"expected target column(s) {missing}, found {list(table.columns)}",
                                 companion)
            table = table[targets]
        else:
            table = table[[c for c in GILMER_TARGETS if c in table.columns]]
    opener = gzip.open if path.suffix == ".gz" else open
    col = _Collector(path, skip_invalid)
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
                    names = _target_columns(list(props), targets, path)
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
    return col.result({c: _canonical_unit(c, None) for c in columns}, columns=columns)


def _moleculenet_table(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"expected MoleculeNet's gdb9.sdf.csv table, found unreadable data ({exc})",
                         path) from None
    out = {}
    for src, dst in _MOLECULENET_COLUMNS.items():
        if src in df.columns:
            v = df[src].to_numpy(np.float64)
            out[dst] = v * HARTREE_EV if dst in _XYZ_UNITS else v
    for src, dst in _MOLECULENET_ATOM_COLUMNS.items():
        if src in df.columns:
            out[dst] = df[src].to_numpy(np.float64) * KCAL_MOL_EV
    if not out:
        raise InputError(f"expected QM9 property columns (mu, gap, u0, …), found {list(df.columns)}",
                         path)
    return pd.DataFrame(out)


# --------------------------------------------------------------------- xyz
def _parse_qm9_xyz(text: str, where: str):
    """Parse one dsgdb9nsd xyz file (or a plain xyz file) → (symbols, coords, props, smiles)."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ValueError("expected an atom count on line 1, found an empty file")
    try:
        n = int(lines[0].split()[0])
    except ValueError:
        raise ValueError(f"expected an atom count on line 1, found {lines[0].strip()!r}") from None
    if n <= 0:
        raise ValueError("expected at least one atom, found none")
    if len(lines) < n + 2:
        raise ValueError(f"expected {n} atom lines, found {max(len(lines) - 2, 0)}")
    fields = lines[1].split()
    props = {}
    if len(fields) == 17 and fields[0] == "gdb":
        try:
            raw = {k: _float(v) for k, v in zip(_XYZ_FIELDS[2:], fields[2:], strict=True)}
        except ValueError:
            raise ValueError(f"expected 17 numeric QM9 fields on line 2, found {lines[1]!r}") from None
        for name in GILMER_TARGETS:
            props[name] = raw[name] * (HARTREE_EV if name in _XYZ_UNITS else 1.0)
    symbols, coords = [], []
    for k, line in enumerate(lines[2:2 + n]):
        f = line.split()
        try:
            symbols.append(f[0])
            coords.append([_float(v) for v in f[1:4]])
            if len(coords[-1]) != 3:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"line {k + 3}: expected 'El x y z', found {line.strip()!r}") from None
    smiles = None
    if props and len(lines) >= n + 4:
        parts = lines[n + 3].split()
        smiles = parts[-1] if parts else None  # relaxed (B3LYP) geometry SMILES
    return symbols, coords, props, smiles


def read_xyz(path, *, skip_invalid: bool = False, limit: int | None = None) -> MoleculeSet:
    """Read QM9 ``dsgdb9nsd_*.xyz`` files: one file, a folder of them, or a ``.tar(.bz2)``.

    The 17-field comment line (Mathematica ``*^`` exponents) gives the targets,
    converted to canonical units; plain xyz files give molecules without targets.
    """
    path = Path(path)
    col = _Collector(path, skip_invalid)
    if not path.exists():
        raise InputError("expected an existing xyz file, folder or tarball, found none", path)

    def handle(name: str, text: str) -> None:
        try:
            symbols, coords, props, _ = _parse_qm9_xyz(text, name)
            mol = mol_from_xyz(symbols, coords)
        except ValueError as exc:
            col.bad(name, str(exc))
            return
        col.add(Path(name).stem, mol, props)

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".xyz")
        if not files:
            raise InputError("expected *.xyz files in the folder, found none", path)
        for p in files[:limit]:
            handle(p.name, p.read_text(errors="replace"))
    elif tarfile.is_tarfile(path) if path.is_file() else False:
        try:
            with tarfile.open(path, "r:*") as tar:
                count = 0
                for member in tar:
                    if not member.isfile() or not member.name.endswith(".xyz"):
                        continue
                    data = tar.extractfile(member).read().decode("utf-8", "replace")
                    handle(member.name, data)
                    count += 1
                    if limit is not None and count >= limit:
                        break
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise InputError(f"expected a readable tar archive of xyz files, found a corrupt one "
                             f"({type(exc).__name__}: {exc})", path) from None
    else:
        if path.suffix in (".bz2", ".gz", ".tar"):
            raise InputError("expected a readable tar archive of xyz files, found a corrupt one",
                             path)
        handle(path.name, path.read_text(errors="replace"))
    has = any(col.rows) and all(r for r in col.rows)
    columns = list(GILMER_TARGETS) if has else []
    if not has:
        col.rows = [{} for _ in col.rows]
    return col.result({c: _canonical_unit(c, None) for c in columns}, columns=columns)


# --------------------------------------------------------------------- qm9pack
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
    return _from_qm9pack_frame(df.reset_index(drop=True), folder, skip_invalid, workers)


def _from_qm9pack_frame(df: pd.DataFrame, folder: Path, skip_invalid: bool,
                        workers: int | None = None) -> MoleculeSet:
    from deepsci.core.progress import progress

    col = _Collector(folder, skip_invalid)
    values = {}
    for src, name in _QM9PACK_COLUMNS.items():
        v = df[src].to_numpy(np.float64)
        values[name] = v * HARTREE_EV if name in _XYZ_UNITS else v
    records = list(zip(df["XYZ_file"], df["Elements"], df["XYZ_Ang"], df["SMILES"], strict=True))
    chunks = [records[s:s + _CHUNK] for s in range(0, len(records), _CHUNK)]
    bar = progress(total=len(records), desc="read QM9", unit="mol")
    i = 0
    for chunk in map_chunks(_qm9pack_rows, chunks, workers=workers):
        for name, mol, reason in chunk:
            if mol is None:
                col.bad(name, reason)
            else:
                col.add(name, mol, {n: values[n][i] for n in GILMER_TARGETS})
            i += 1
        bar.update(len(chunk))
    bar.close()
    return col.result({c: _canonical_unit(c, None) for c in GILMER_TARGETS},
                      columns=list(GILMER_TARGETS))


_CHUNK = 1000


def _qm9pack_rows(records) -> list[tuple]:
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


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_chunks(func, chunks: list, *, workers: int | None = None):
    """``func`` over ``chunks`` in order, in a pool of ``workers`` processes.

    ``workers=None`` uses every CPU this process may run on; one worker or a
    single chunk runs in this process. Workers are spawned, not forked, so a
    TensorFlow already initialised in the parent is never copied mid-state.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    if workers is None:
        workers = available_cpus()
    workers = max(1, min(int(workers or 1), len(chunks)))
    if workers == 1:
        yield from map(func, chunks)
        return
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        yield from pool.map(func, chunks)


# --------------------------------------------------------------------- SMILES list
def read_smiles_list(path, *, skip_invalid: bool = False, seed: int = 0) -> MoleculeSet:
    """Read a ``.smi``/``.txt`` file: one SMILES per line, optionally followed by a name."""
    path = Path(path)
    if not path.exists():
        raise InputError("expected an existing SMILES file, found none", path)
    col = _Collector(path, skip_invalid)
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


def read_molecules(path, *, targets: list[str] | None = None, smiles_column: str = "smiles",
                   skip_invalid: bool = False, seed: int = 0) -> MoleculeSet:
    """Read any supported molecule file, chosen by its name.

    ``.csv``/``.csv.gz`` → :func:`read_csv`; ``.sdf``/``.sdf.gz`` → :func:`read_sdf`;
    ``.xyz``, a folder or a ``.tar``/``.tar.bz2``/``.tar.gz`` → :func:`read_xyz`;
    ``.smi``/``.txt`` → :func:`read_smiles_list`.
    """
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise InputError("expected an existing molecule file, found none", path)
    if name.endswith((".csv", ".csv.gz")):
        return read_csv(path, targets=targets, smiles_column=smiles_column,
                        skip_invalid=skip_invalid, seed=seed)
    if name.endswith((".sdf", ".sdf.gz")):
        return read_sdf(path, targets=targets, skip_invalid=skip_invalid, seed=seed)
    if path.is_dir() or name.endswith((".xyz", ".tar", ".tar.bz2", ".tbz2", ".tar.gz", ".tgz")):
        ms = read_xyz(path, skip_invalid=skip_invalid)
        if targets is not None:
            missing = [t for t in targets if t not in ms.targets.columns]
            if missing:
                raise InputError(f"expected target(s) {missing}, found {list(ms.targets.columns)}",
                                 path)
            ms.targets = ms.targets[targets]
        return ms
    if name.endswith((".smi", ".txt")):
        return read_smiles_list(path, skip_invalid=skip_invalid, seed=seed)
    raise InputError("expected .csv, .sdf, .xyz, a folder, .tar(.bz2) or .smi, found "
                     f"{path.suffix or 'no suffix'}", path)


def bundled_subset() -> Path:
    """Path of the QM9 subset shipped with deepsci (see ``data/molecules/README.md``)."""
    import importlib.resources

    return Path(str(importlib.resources.files("deepsci.data") / "molecules" / "qm9_subset.csv.gz"))


# --------------------------------------------------------------------- writing
def write_csv(path, *, ids, smiles, columns: dict[str, np.ndarray], units: dict[str, str],
              mols=None) -> Path:
    """Write the app's CSV format atomically (``.csv`` or ``.csv.gz``).

    Parameters
    ----------
    ids, smiles : sequence of str
    columns : dict
        Target name → values (N,); headers become ``"name [unit]"``.
    units : dict
        Target name (or any column) → unit; missing → canonical or bare name.
    mols : sequence of rdkit.Chem.Mol, optional
        Adds the ``xyz`` geometry column so ``train`` reuses these geometries.
    """
    path = Path(path)
    out = pd.DataFrame({"id": list(ids), "smiles": list(smiles)})
    if mols is not None:
        out["xyz"] = [geometry_string(m) for m in mols]
    for name, v in columns.items():
        out[column_name(name, units.get(name))] = np.asarray(v)
    buf = _io.StringIO()
    out.to_csv(buf, index=False, float_format="%.8g")
    data = buf.getvalue().encode()
    with atomic_path(path) as tmp:
        if path.name.endswith(".gz"):
            # mtime=0 keeps the bytes reproducible for the same table.
            with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
                gz.write(data)
        else:
            tmp.write_bytes(data)
    return path

