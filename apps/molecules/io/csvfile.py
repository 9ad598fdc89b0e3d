"""The app's CSV format (chemprop-compatible), read and written.

A ``smiles`` column, optional ``id`` and ``xyz`` (geometry, ``"El x y z; El x y z; …"``
in Å) columns, and one column per target named ``"<name> [<unit>]"``; ``.csv`` or
``.csv.gz``. ``label`` and ``predict`` write it, ``train`` reads it.
"""
from __future__ import annotations

import gzip
import io as _io
from pathlib import Path

import numpy as np
import pandas as pd

from deepsci.core.errors import InputError
from deepsci.core.io import DECODE_ERRORS, atomic_path

from ..featurize import embed_smiles
from ..targets import column_name, convert
from .base import Collector, MoleculeSet, canonical_unit
from .geometry import formal_charge, geometry_string, mol_from_xyz, parse_geometry
from .units import MOLECULENET_NOTE, check_hartree, plan_units

__all__ = ["read_csv", "write_csv", "output_frame", "write_frame", "format_value",
           "FLOAT_FORMAT"]


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
        Target columns to read, named ``name [unit]``; units of the known QM9
        targets are converted to the canonical ones. Bare ``name`` headers only in
        MoleculeNet's/chemprop's ``qm9.csv`` layout (Hartree energies, see
        :mod:`.units`); elsewhere a bare target header is an InputError. ``None``
        reads whichever of the 12 Gilmer targets are present.
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
    except IsADirectoryError:
        raise InputError("expected a CSV file, found a folder", path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, *DECODE_ERRORS) as exc:
        # gzip, zlib and codec errors of a damaged file, as one line naming it.
        text = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise InputError(f"expected a CSV table, found unreadable data ({text})", path) from None
    df.columns = [str(c) for c in df.columns]
    lower = {c.lower(): c for c in df.columns}
    if smiles_column.lower() not in lower:
        raise InputError(f"expected a column {smiles_column!r}, found columns {list(df.columns)}",
                         path)
    scol = lower[smiles_column.lower()]
    tcols, note = plan_units([c for c in df.columns if c not in (scol,)], targets, path)
    if require_targets and not tcols:
        raise InputError(f"expected target columns, found columns {list(df.columns)}", path)
    xcol = lower.get("xyz")
    idcol = lower.get("id")
    values, units = _target_values(df, tcols, note, path)
    bad_cells = _text_cells(df, [c for c, _ in tcols.values()])
    col = Collector(path, skip_invalid)
    for i in range(len(df)):
        where = f"row {i + 2}"  # 1-based, after the header line
        smi = df[scol].iloc[i]
        if i in bad_cells:
            # A label that is not a number ("high") must never train as a missing value.
            header, cell = bad_cells[i]
            col.bad(f"{where}, column {header!r}", f"expected a finite number, found {cell!r}")
            continue
        try:
            if xcol is not None and isinstance(df[xcol].iloc[i], str) and df[xcol].iloc[i].strip():
                symbols, coords = parse_geometry(df[xcol].iloc[i])
                mol = mol_from_xyz(symbols, coords, charge=formal_charge(smi))
            else:
                if not isinstance(smi, str) or not smi.strip():
                    raise ValueError("expected a SMILES string, found an empty cell")
                mol = embed_smiles(smi.strip(), seed=seed)
        except ValueError as exc:
            col.bad(where, str(exc))
            continue
        ident = df[idcol].iloc[i] if idcol is not None else f"{path.name}:{i + 2}"
        col.add(ident, mol, {n: values[n][i] for n in tcols})
    return col.result(units, columns=list(tcols), note=note)


def _target_values(df: pd.DataFrame, tcols: dict, note: str, path) -> tuple[dict, dict]:
    """Target name → (N,) values in canonical units, and → unit; cells that are not
    finite numbers are NaN here (``_text_cells`` reports them per row)."""
    values, units = {}, {}
    for name, (col, unit) in tcols.items():
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64, copy=True)
        v[~np.isfinite(v)] = np.nan
        if note == MOLECULENET_NOTE and unit == "Ha":
            check_hartree(name, v, col, path)
        try:
            values[name], _ = convert(v, unit, name)
        except ValueError as exc:
            raise InputError(f"column {col!r}: {exc}", path) from None
        units[name] = canonical_unit(name, unit)
    return values, units


def _text_cells(df: pd.DataFrame, headers: list[str]) -> dict[int, tuple[str, str]]:
    """Row → (header, cell) of the first target cell that is neither empty nor a finite number."""
    bad = {}
    for header in headers:
        raw = df[header]
        numbers = pd.to_numeric(raw, errors="coerce")
        text = raw.astype(str).str.strip()
        wrong = ~np.isfinite(numbers.to_numpy(np.float64)) & raw.notna().to_numpy() & \
            (text != "").to_numpy()
        for i in np.flatnonzero(wrong):
            bad.setdefault(int(i), (header, str(raw.iloc[i])[:40]))
    return bad


#: How every float of the app's tables is printed (CSV cells and SDF tags alike): 8
#: significant digits, so float32 model outputs survive and files stay readable.
FLOAT_FORMAT = "%.8g"


def format_value(value) -> str:
    """One table value as the CSV prints it (NaN → empty cell), for SDF tags too."""
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else FLOAT_FORMAT % value
    return str(value)


def output_frame(*, ids, smiles, columns: dict[str, np.ndarray], units: dict[str, str],
                 mols=None) -> pd.DataFrame:
    """The table :func:`write_csv` writes: ``id``, ``smiles``, [``xyz``], ``name [unit]``…"""
    out = pd.DataFrame({"id": list(ids), "smiles": list(smiles)})
    if mols is not None:
        out["xyz"] = [geometry_string(m) for m in mols]
    for name, v in columns.items():
        out[column_name(name, units.get(name))] = np.asarray(v)
    return out


def write_frame(tmp: Path, frame: pd.DataFrame, *, gz: bool, name: str = "") -> None:
    """Write ``frame`` as the app's CSV to ``tmp`` (gzip when ``gz``, its header naming ``name``)."""
    buf = _io.StringIO()
    frame.to_csv(buf, index=False, float_format=FLOAT_FORMAT)
    data = buf.getvalue().encode()
    if gz:
        # mtime=0 and the final name (not the temporary's) keep the bytes reproducible.
        with open(tmp, "wb") as raw, gzip.GzipFile(filename=name, fileobj=raw, mode="wb",
                                                   mtime=0) as zipped:
            zipped.write(data)
    else:
        tmp.write_bytes(data)


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
    frame = output_frame(ids=ids, smiles=smiles, columns=columns, units=units, mols=mols)
    with atomic_path(path) as tmp:
        write_frame(tmp, frame, gz=path.name.endswith(".gz"), name=path.name)
    return path
