"""QM9's own files: ``dsgdb9nsd_*.xyz`` (17 property fields on line 2,
Mathematica ``*^`` exponents, Hartree energies), a folder of them or the
``.tar.bz2`` tarball; plain xyz files give molecules without targets.
"""
from __future__ import annotations

import tarfile
import zlib
from pathlib import Path

from deepsci.core.errors import InputError

from ..targets import GILMER_TARGETS, HARTREE_EV
from .base import HARTREE_TARGETS, Collector, MoleculeSet, canonical_unit, parse_float
from .geometry import mol_from_xyz

__all__ = ["read_xyz", "parse_qm9_xyz", "XYZ_FIELDS"]

XYZ_FIELDS = ("tag", "index", "A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2",
              "zpve", "u0", "u", "h", "g", "cv")


def parse_qm9_xyz(text: str, where: str) -> tuple[list[str], list[list[float]], dict, str | None]:
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
            raw = {k: parse_float(v) for k, v in zip(XYZ_FIELDS[2:], fields[2:], strict=True)}
        except ValueError:
            raise ValueError(f"expected 17 numeric QM9 fields on line 2, found {lines[1]!r}") from None
        for name in GILMER_TARGETS:
            props[name] = raw[name] * (HARTREE_EV if name in HARTREE_TARGETS else 1.0)
    symbols, coords = [], []
    for k, line in enumerate(lines[2:2 + n]):
        f = line.split()
        try:
            symbols.append(f[0])
            coords.append([parse_float(v) for v in f[1:4]])
            if len(coords[-1]) != 3:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"line {k + 3}: expected 'El x y z', found {line.strip()!r}") from None
    smiles = None
    if props and len(lines) >= n + 4:
        parts = lines[n + 3].split()
        smiles = parts[-1] if parts else None  # relaxed (B3LYP) geometry SMILES
    return symbols, coords, props, smiles


def _is_tarfile(path: Path) -> bool:
    """Whether ``path`` is a tar archive; a damaged compressed one is an InputError."""
    try:
        return tarfile.is_tarfile(path)
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
        raise InputError(f"expected a readable tar archive of xyz files, found a corrupt one "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())})", path) from None


def read_xyz(path, *, skip_invalid: bool = False, limit: int | None = None) -> MoleculeSet:
    """Read QM9 ``dsgdb9nsd_*.xyz`` files: one file, a folder of them, or a ``.tar(.bz2)``.

    The 17-field comment line (Mathematica ``*^`` exponents) gives the targets,
    converted to canonical units; plain xyz files give molecules without targets.
    """
    path = Path(path)
    col = Collector(path, skip_invalid)
    if not path.exists():
        raise InputError("expected an existing xyz file, folder or tarball, found none", path)

    def handle(name: str, text: str) -> None:
        try:
            symbols, coords, props, _ = parse_qm9_xyz(text, name)
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
            try:
                text = p.read_text(errors="replace")
            except OSError as exc:  # a folder named *.xyz, a broken link
                raise InputError(f"expected a readable xyz file, found {type(exc).__name__}", p) \
                    from None
            handle(p.name, text)
    elif path.is_file() and _is_tarfile(path):
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
        except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
            raise InputError(f"expected a readable tar archive of xyz files, found a corrupt one "
                             f"({type(exc).__name__}: {exc})", path) from None
    else:
        if path.suffix.lower() in (".bz2", ".gz", ".tar", ".tgz", ".tbz2", ".xz"):
            raise InputError("expected a readable tar archive of xyz files, found a corrupt one",
                             path)
        handle(path.name, path.read_text(errors="replace"))
    has = any(col.rows) and all(r for r in col.rows)
    columns = list(GILMER_TARGETS) if has else []
    if not has:
        col.rows = [{} for _ in col.rows]
    return col.result({c: canonical_unit(c, None) for c in columns}, columns=columns)
