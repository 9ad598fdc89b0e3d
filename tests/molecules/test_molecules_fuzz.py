"""Fuzzing the molecules readers (issue #19): any text or bytes in a file either reads as
valid molecules or raises deepsci's InputError, never a library's exception.

Each reader gets arbitrary bytes and text shaped like its format (SMILES tokens, CSV
cells, molfile lines, xyz lines with numbers and Mathematica exponents), through
:func:`deepsci.apps.molecules.io.read_molecules` as the CLI calls it; the tarball and the
folder of xyz files get the same xyz texts as members.
"""
from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepsci.apps.molecules.io import read_molecules
from deepsci.core.errors import InputError

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))
SMILES_TOKENS = ["C", "c", "N", "n", "O", "o", "F", "Cl", "1", "2", "(", ")", "=", "#", "[", "]",
                 "+", "-", "H", "@", "/", "\\", ".", "%10", "[nH]", "[O-]", "[NH4+]", " ", "*"]
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32).map(str),
                    st.integers(-5, 5).map(str), st.sampled_from(["1.2*^-5", "1e", "-", "", "x"]))
ELEMENTS = st.sampled_from(["H", "C", "N", "O", "F", "Cl", "Xx", "", "6", "c"])


def _check(name: str, data: bytes | str, **kw) -> None:
    """Read ``data`` saved as ``name``: a valid set of molecules, or an InputError."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
        _read(path, **kw)


def _read(path: Path, **kw) -> None:
    try:
        ms = read_molecules(path, **kw)
    except InputError as exc:
        assert "\n" not in str(exc), str(exc)  # one line on the terminal
        return
    assert len(ms) >= 1 and len(ms.ids) == len(ms.smiles) == len(ms.mols) == len(ms.targets)
    for mol in ms.mols:
        pos = mol.GetConformer().GetPositions()
        assert pos.shape == (mol.GetNumAtoms(), 3) and np.isfinite(pos).all()


smiles_lines = st.lists(st.lists(st.sampled_from(SMILES_TOKENS), max_size=8).map("".join),
                        max_size=4).map("\n".join)


@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.text(max_size=200), smiles_lines),
       st.booleans())
def test_smiles_list(data, skip):
    _check("mols.smi", data, skip_invalid=skip)


def _csv_text(header, rows):
    return "\n".join([",".join(header), *(",".join(r) for r in rows)]) + "\n"


csv_tables = st.builds(
    _csv_text,
    st.lists(st.sampled_from(["smiles", "SMILES", "id", "xyz", "gap [eV]", "gap", "mu [D]",
                              "u0 [Ha]", "", "\"a,b\""]), min_size=1, max_size=4),
    st.lists(st.lists(st.one_of(NUMBERS, smiles_lines.map(lambda s: s.replace("\n", " ")),
                                st.just("C 0 0 0; H 0 0 1.1")), max_size=4), max_size=4))


@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.text(max_size=200), csv_tables), st.booleans())
def test_csv(data, skip):
    _check("mols.csv", data, skip_invalid=skip)
    if isinstance(data, bytes):
        _check("mols.csv.gz", data)


def _molfile(title, atoms, bonds, props):
    lines = [title, "  fuzz", "", f"{len(atoms):3d}{len(bonds):3d}  0  0  0  0  0  0  0  0999 V2000"]
    lines += [f"{x:>10}{y:>10}{z:>10} {el:<3} 0  0  0  0  0  0  0  0  0  0  0  0"
              for el, x, y, z in atoms]
    lines += [f"{a:3d}{b:3d}{t:3d}  0" for a, b, t in bonds]
    lines.append("M  END")
    for k, v in props:
        lines += [f">  <{k}>", v, ""]
    return "\n".join(lines) + "\n$$$$\n"


molfiles = st.builds(
    _molfile, st.text(max_size=10).map(lambda s: s.replace("\n", "")),
    st.lists(st.tuples(ELEMENTS, NUMBERS, NUMBERS, NUMBERS), max_size=4),
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)), max_size=3),
    st.lists(st.tuples(st.sampled_from(["gap [eV]", "mu", "x"]), NUMBERS), max_size=2))


@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.text(max_size=200), molfiles), st.booleans())
def test_sdf(data, skip):
    _check("mols.sdf", data, skip_invalid=skip)
    if isinstance(data, bytes):
        _check("mols.sdf.gz", data)


def _xyz_text(count, comment, atoms, tail):
    body = "\n".join(" ".join([el, x, y, z]) for el, x, y, z in atoms)
    return f"{count}\n{comment}\n{body}\n{tail}"


xyz_texts = st.builds(
    _xyz_text, st.one_of(st.integers(-1, 5).map(str), st.text(max_size=3)),
    st.one_of(st.just("gdb 1 " + " ".join(["1.0"] * 15)), st.text(max_size=20),
              st.lists(NUMBERS, min_size=15, max_size=15).map(lambda v: "gdb 1 " + " ".join(v))),
    st.lists(st.tuples(ELEMENTS, NUMBERS, NUMBERS, NUMBERS), max_size=5),
    st.sampled_from(["", "100.0\t200.0\nC\tC\nInChI=1S/x\tInChI=1S/x\n", "\n\n\n"]))


@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.text(max_size=200), xyz_texts))
def test_xyz_file(data):
    _check("mol.xyz", data)


@SETTINGS
@given(st.lists(st.one_of(xyz_texts, st.binary(max_size=100)), min_size=1, max_size=3),
       st.booleans(), st.booleans())
def test_xyz_folder_and_tarball(members, as_tar, skip):
    with tempfile.TemporaryDirectory() as d:
        if as_tar:
            path = Path(d) / "qm9.tar.bz2"
            with tarfile.open(path, "w:bz2") as tar:
                for k, m in enumerate(members):
                    raw = m if isinstance(m, bytes) else m.encode()
                    info = tarfile.TarInfo(f"dsgdb9nsd_{k:06d}.xyz")
                    info.size = len(raw)
                    tar.addfile(info, io.BytesIO(raw))
        else:
            path = Path(d) / "xyz"
            path.mkdir()
            for k, m in enumerate(members):
                p = path / f"dsgdb9nsd_{k:06d}.xyz"
                (p.write_bytes if isinstance(m, bytes) else p.write_text)(m)
        _read(path, skip_invalid=skip)


@SETTINGS
@given(st.binary(min_size=1, max_size=200))
def test_damaged_tarball_bytes(data):
    _check("qm9.tar.bz2", data)
    _check("qm9.tar.gz", b"\x1f\x8b" + data)
