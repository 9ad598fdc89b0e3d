"""Molecule file formats: QM9 (qm9pack, dsgdb9nsd xyz/tarball, MoleculeNet SDF), CSV, SDF, SMILES.

Every reader returns a :class:`MoleculeSet`: RDKit molecules with explicit
hydrogens and a 3-D conformer, plus a table of targets in the app's canonical
units (see :mod:`deepsci.apps.molecules.targets`). Molecules given only as
SMILES get an ETKDGv3 + MMFF conformer so 3-D models still apply.

One module per format (``csvfile``, ``sdf``, ``xyz``, ``smiles``, ``qm9pack``),
shared pieces in ``base`` and ``geometry``; :func:`read_molecules` picks the
reader from the file name through :data:`READERS`.

The app's own CSV format (written by ``label`` and ``predict``, read by
``train``) is chemprop-compatible: a ``smiles`` column, optional ``id`` and
``xyz`` (geometry, ``"El x y z; El x y z; …"`` in Å) columns, and one column
per target named ``"<name> [<unit>]"``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from deepsci.core.errors import InputError

from .base import MoleculeSet, available_cpus, select_targets
from .csvfile import read_csv, write_csv
from .geometry import geometry_string, mol_from_xyz
from .outputs import check_outputs, remove_stale_outputs, sdf_path, write_outputs
from .qm9pack import qm9pack_dir, read_qm9pack
from .sdf import read_sdf
from .smiles import read_smiles_list
from .xyz import read_xyz

__all__ = [
    "MoleculeSet",
    "READERS",
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
    "write_outputs",
    "sdf_path",
    "remove_stale_outputs",
    "check_outputs",
    "bundled_subset",
    "available_cpus",
]


def _csv(path: Path, *, targets, smiles_column, skip_invalid, seed) -> MoleculeSet:
    return read_csv(path, targets=targets, smiles_column=smiles_column,
                    skip_invalid=skip_invalid, seed=seed)


def _sdf(path: Path, *, targets, smiles_column, skip_invalid, seed) -> MoleculeSet:
    return read_sdf(path, targets=targets, skip_invalid=skip_invalid, seed=seed)


def _xyz(path: Path, *, targets, smiles_column, skip_invalid, seed) -> MoleculeSet:
    # xyz files carry all 17 QM9 fields or none; the selection happens after reading.
    return select_targets(read_xyz(path, skip_invalid=skip_invalid), targets, path)


def _smi(path: Path, *, targets, smiles_column, skip_invalid, seed) -> MoleculeSet:
    return read_smiles_list(path, skip_invalid=skip_invalid, seed=seed)


#: (file-name endings in lower case, reader, reads folders), tried in order.
READERS: tuple[tuple[tuple[str, ...], Callable[..., MoleculeSet], bool], ...] = (
    ((".csv", ".csv.gz"), _csv, False),
    ((".sdf", ".sdf.gz"), _sdf, False),
    ((".xyz", ".tar", ".tar.bz2", ".tbz2", ".tar.gz", ".tgz"), _xyz, True),
    ((".smi", ".txt"), _smi, False),
)


def read_molecules(path, *, targets: list[str] | None = None, smiles_column: str = "smiles",
                   skip_invalid: bool = False, seed: int = 0) -> MoleculeSet:
    """Read any supported molecule file, chosen by its name.

    ``.csv``/``.csv.gz`` → :func:`read_csv`; ``.sdf``/``.sdf.gz`` → :func:`read_sdf`;
    ``.xyz``, a folder or a ``.tar``/``.tar.bz2``/``.tar.gz`` → :func:`read_xyz`;
    ``.smi``/``.txt`` → :func:`read_smiles_list`.

    Parameters
    ----------
    path : path-like
        The file or folder.
    targets : list of str, optional
        Target names to keep (``None``: whichever of the 12 Gilmer targets are present).
    smiles_column : str
        SMILES column of a CSV.
    skip_invalid : bool
        Skip (and count) unreadable molecules instead of raising.
    seed : int
        Conformer seed for molecules given without a geometry.

    Returns
    -------
    MoleculeSet
    """
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise InputError("expected an existing molecule file, found none", path)
    kw = {"targets": targets, "smiles_column": smiles_column, "skip_invalid": skip_invalid,
          "seed": seed}
    for suffixes, reader, folders in READERS:
        if name.endswith(suffixes) or (folders and path.is_dir()):
            if path.is_dir() and not folders:
                raise InputError(f"expected a {suffixes[0]} file, found a folder", path)
            return reader(path, **kw)
    raise InputError("expected .csv, .sdf, .xyz, a folder, .tar(.bz2) or .smi, found "
                     f"{path.suffix or 'no suffix'}", path)


def bundled_subset() -> Path:
    """Path of the QM9 subset shipped with deepsci (see ``data/molecules/README.md``)."""
    import importlib.resources

    return Path(str(importlib.resources.files("deepsci.data") / "molecules" / "qm9_subset.csv.gz"))
