"""Which unit each target column of a table is in: from its header, or from a recognised layout.

A header ``"gap [Ha]"`` names its unit. A bare header (``gap``) is accepted only
inside a layout whose units are fixed by its publisher: MoleculeNet's / chemprop's
``qm9.csv`` (``mol_id,smiles,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv,
u0_atom,…``), recognised by QM9's own column names ``u298``/``h298``/``g298`` or the
``*_atom`` atomization energies. There energies are Hartree (``*_atom``: kcal/mol).
Any other bare target header is an error: a unit is never guessed.
"""
from __future__ import annotations

import numpy as np

from deepsci.core.errors import InputError

from ..targets import HARTREE_EV, KCAL_MOL_EV, TARGETS, parse_column

__all__ = ["MOLECULENET_COLUMNS", "MOLECULENET_UNITS", "plan_units"]

#: MoleculeNet / chemprop qm9.csv column -> the app's target name.
MOLECULENET_COLUMNS = {"mu": "mu", "alpha": "alpha", "homo": "homo", "lumo": "lumo",
                       "gap": "gap", "r2": "r2", "zpve": "zpve", "u0": "u0", "u298": "u",
                       "h298": "h", "g298": "g", "cv": "cv", "u0_atom": "u0_atom",
                       "u298_atom": "u_atom", "h298_atom": "h_atom", "g298_atom": "g_atom"}
#: The unit of each target in that layout (QM9's own units).
MOLECULENET_UNITS = {"mu": "D", "alpha": "a0^3", "homo": "Ha", "lumo": "Ha", "gap": "Ha",
                     "r2": "a0^2", "zpve": "Ha", "u0": "Ha", "u": "Ha", "h": "Ha", "g": "Ha",
                     "cv": "cal/mol/K", "u0_atom": "kcal/mol", "u_atom": "kcal/mol",
                     "h_atom": "kcal/mol", "g_atom": "kcal/mol"}
# Names only QM9's files use; the app's own format writes u/h/g with units.
_MARKERS = frozenset(("u298", "h298", "g298", "u0_atom", "u298_atom", "h298_atom", "g298_atom"))
# Largest plausible |median| in Hartree: a gap or orbital energy in eV would be ~27x larger.
_HARTREE_MAX = {"homo": 1.5, "lumo": 1.5, "gap": 1.5, "zpve": 0.5, "u0": 3000.0, "u": 3000.0,
                "h": 3000.0, "g": 3000.0}

MOLECULENET_NOTE = (f"MoleculeNet/chemprop qm9.csv layout (bare headers): homo, lumo, gap, zpve, "
                    f"u0, u298, h298, g298 read as Hartree (1 Ha = {HARTREE_EV} eV), *_atom as "
                    f"kcal/mol (1 kcal/mol = {KCAL_MOL_EV} eV), converted to eV; mu D, alpha a0^3, "
                    f"r2 a0^2, cv cal/mol/K as given")


def _known(name: str) -> bool:
    return name in TARGETS or name in MOLECULENET_UNITS or name in MOLECULENET_COLUMNS


def plan_units(headers, targets: list[str] | None, path, *, layouts: bool = True
               ) -> tuple[dict[str, tuple[str, str | None]], str]:
    """Map target name -> (header, unit in the file) and say which convention gave the units.

    Parameters
    ----------
    headers : sequence of str
        The table's column headers.
    targets : list of str or None
        Targets wanted; ``None``: whichever of the 12 Gilmer targets are present.
    path : path-like
        The file (named in errors).
    layouts : bool
        Recognise MoleculeNet's qm9.csv layout (CSV tables); False requires units on
        every target header (SDF properties).

    Returns
    -------
    columns : dict
        Target name -> (header, unit).
    note : str
        The unit convention used, for reports.

    Raises
    ------
    InputError
        A bare target header outside a recognised layout.
    """
    from ..targets import GILMER_TARGETS

    parsed = [(h, *parse_column(h)) for h in headers]
    bare = [n for _, n, u in parsed if u is None and _known(n)]
    with_unit = [n for _, n, u in parsed if u is not None and _known(n)]
    moleculenet = layouts and bool(set(bare) & _MARKERS) and not with_unit
    by_name: dict[str, tuple[str, str | None]] = {}
    for h, n, u in parsed:
        if moleculenet and n in MOLECULENET_COLUMNS:
            n = MOLECULENET_COLUMNS[n]
            u = MOLECULENET_UNITS[n]
        by_name.setdefault(n, (h, u))
    if targets is None:
        wanted = [n for n in GILMER_TARGETS if n in by_name]
    else:
        missing = [t for t in targets if t not in by_name]
        if missing:
            raise InputError(f"expected target column(s) {missing}, found columns {list(headers)}",
                             path)
        wanted = list(targets)
    unitless = [by_name[n][0] for n in wanted if by_name[n][1] is None and n in TARGETS]
    if unitless:
        raise InputError(f"expected a unit in the header of target column(s) {unitless} (e.g. "
                         f"'{unitless[0]} [eV]' or '{unitless[0]} [Ha]'), found none; only "
                         f"MoleculeNet's qm9.csv layout (with u298, h298, g298) is read without "
                         f"units", path)
    cols = {n: by_name[n] for n in wanted}
    if moleculenet:
        return cols, MOLECULENET_NOTE
    conv = [f"{h} -> {TARGETS[n].unit}" for n, (h, u) in cols.items()
            if n in TARGETS and u is not None and u != TARGETS[n].unit]
    note = "units from the column headers" + (f" (converted: {', '.join(conv)})" if conv else "")
    return cols, note


def check_hartree(name: str, values: np.ndarray, header: str, path) -> None:
    """Refuse a Hartree column whose magnitude says it is in eV (a renamed, converted file)."""
    ok = values[np.isfinite(values)]
    limit = _HARTREE_MAX.get(name)
    if limit is not None and len(ok) and float(np.median(np.abs(ok))) > limit:
        raise InputError(f"column {header!r}: expected Hartree values in MoleculeNet's qm9.csv "
                         f"layout (|median| <= {limit}), found a median of "
                         f"{float(np.median(ok)):.4g}; name the unit in the header, e.g. "
                         f"'{header} [eV]'", path)
