"""The 12 QM9 targets of Gilmer et al. (2017), their units and chemical accuracy.

One unit convention is used everywhere in the app (inputs are converted on
read, outputs carry the unit in every column header as ``name [unit]``):

=====  =================  ==========  ==================
name   property           unit        chemical accuracy
=====  =================  ==========  ==================
mu     dipole moment      D           0.1
alpha  polarizability     a0^3        0.1
homo   HOMO energy        eV          0.043
lumo   LUMO energy        eV          0.043
gap    HOMO-LUMO gap      eV          0.043
r2     electronic spatial a0^2        1.2
       extent <R^2>
zpve   zero-point vib.    eV          0.0012
u0     internal energy    eV          0.043
       at 0 K
u      internal energy    eV          0.043
       at 298.15 K
h      enthalpy 298.15 K  eV          0.043
g      free energy        eV          0.043
       298.15 K
cv     heat capacity      cal/mol/K   0.050
=====  =================  ==========  ==================

Energies are in eV as Gilmer reports them (QM9 stores Hartree); the chemical
accuracy thresholds are those of Faber et al. (2017) and Gilmer et al. (2017).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "HARTREE_EV",
    "KCAL_MOL_EV",
    "Target",
    "TARGETS",
    "GILMER_TARGETS",
    "parse_column",
    "column_name",
    "convert",
    "resolve_targets",
]

#: CODATA 2018 Hartree energy in eV.
HARTREE_EV = 27.211386245988
#: 1 kcal/mol in eV (4184 J/mol / (N_A e)).
KCAL_MOL_EV = 0.0433641043


@dataclass(frozen=True)
class Target:
    """One predicted property: its canonical unit and chemical-accuracy threshold."""

    name: str
    label: str
    unit: str
    chemical_accuracy: float | None


_T = [
    Target("mu", "μ (dipole moment)", "D", 0.1),
    Target("alpha", "α (isotropic polarizability)", "a0^3", 0.1),
    Target("homo", "ε_HOMO", "eV", 0.043),
    Target("lumo", "ε_LUMO", "eV", 0.043),
    Target("gap", "Δε (HOMO-LUMO gap)", "eV", 0.043),
    Target("r2", "⟨R²⟩ (electronic spatial extent)", "a0^2", 1.2),
    Target("zpve", "ZPVE", "eV", 0.0012),
    Target("u0", "U0 (internal energy at 0 K)", "eV", 0.043),
    Target("u", "U (internal energy at 298 K)", "eV", 0.043),
    Target("h", "H (enthalpy at 298 K)", "eV", 0.043),
    Target("g", "G (free energy at 298 K)", "eV", 0.043),
    Target("cv", "Cv (heat capacity at 298 K)", "cal/mol/K", 0.050),
]
# Atomization energies (MoleculeNet's *_atom columns): not among Gilmer's 12, same threshold.
_ATOMIZATION = [Target(f"{n}_atom", f"{n.upper()} atomization energy", "eV", 0.043)
                for n in ("u0", "u", "h", "g")]
TARGETS: dict[str, Target] = {t.name: t for t in (*_T, *_ATOMIZATION)}
GILMER_TARGETS: tuple[str, ...] = tuple(t.name for t in _T)

# Factors that bring a unit to the canonical unit of its kind.
_TO_CANONICAL = {
    "ev": ("eV", 1.0),
    "ha": ("eV", HARTREE_EV),
    "hartree": ("eV", HARTREE_EV),
    "au": ("eV", HARTREE_EV),
    "kcal/mol": ("eV", KCAL_MOL_EV),
    "d": ("D", 1.0),
    "debye": ("D", 1.0),
    "a0^3": ("a0^3", 1.0),
    "bohr^3": ("a0^3", 1.0),
    "bohr3": ("a0^3", 1.0),
    "a0^2": ("a0^2", 1.0),
    "bohr^2": ("a0^2", 1.0),
    "bohr2": ("a0^2", 1.0),
    "cal/mol/k": ("cal/mol/K", 1.0),
    "cal/molk": ("cal/mol/K", 1.0),
}

_COL = re.compile(r"^\s*(?P<name>[^\[\]]+?)\s*(?:\[(?P<unit>[^\]]*)\])?\s*$")


def parse_column(header: str) -> tuple[str, str | None]:
    """Split a column header ``"gap [eV]"`` into ``("gap", "eV")``.

    A header without brackets gives ``(header, None)``.
    """
    m = _COL.match(header)
    if m is None:
        return header.strip(), None
    return m.group("name"), m.group("unit")


def column_name(name: str, unit: str | None = None) -> str:
    """The output header of a target: ``"gap [eV]"`` (unknown units: bare name)."""
    if unit is None and name in TARGETS:
        unit = TARGETS[name].unit
    return f"{name} [{unit}]" if unit else name


def convert(values, unit: str | None, name: str):
    """Convert ``values`` given in ``unit`` to the canonical unit of target ``name``.

    Parameters
    ----------
    values : array_like
        Values in ``unit``.
    unit : str or None
        The unit found in the file; ``None`` means already canonical.
    name : str
        Target name; targets not in :data:`TARGETS` are returned unchanged.

    Returns
    -------
    values, factor
        Converted values and the factor used.

    Raises
    ------
    ValueError
        When ``unit`` cannot be converted to the target's canonical unit.
    """
    if unit is None or name not in TARGETS:
        return values, 1.0
    canon = TARGETS[name].unit
    key = unit.strip().lower().replace(" ", "").replace("·", "/")
    if unit == canon or key == canon.lower():
        return values, 1.0
    if key not in _TO_CANONICAL or _TO_CANONICAL[key][0] != canon:
        raise ValueError(f"expected a unit convertible to {canon} for {name!r}, found {unit!r}")
    factor = _TO_CANONICAL[key][1]
    return values * factor, factor


def resolve_targets(spec: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Turn ``"all"``, ``None``, ``"gap,u0"`` or a list into a list of target names."""
    if spec is None or spec == "all" or spec == ["all"]:
        return list(GILMER_TARGETS)
    if isinstance(spec, str):
        spec = [s for s in spec.split(",")]
    out = [s.strip() for s in spec if s.strip()]
    if len(set(out)) != len(out):
        raise ValueError(f"expected distinct target names, found {out}")
    return out
