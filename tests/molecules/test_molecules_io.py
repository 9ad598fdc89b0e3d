"""Readers for each format on small files the tests write, and bad inputs."""
import bz2
import gzip
import tarfile

import numpy as np
import pandas as pd
import pytest

from deepsci.apps.molecules import io, synth
from deepsci.apps.molecules.targets import HARTREE_EV
from deepsci.core.errors import InputError


@pytest.fixture(scope="module")
def mset():
    return synth.synthetic_set(smiles=("CCO", "c1ccccc1", "CC#N", "OC(F)F", "NC=O"))


def _same_targets(a, b, cols, rtol=1e-5):
    for c in cols:
        np.testing.assert_allclose(a.targets[c].to_numpy(), b.targets[c].to_numpy(), rtol=rtol)


def test_csv_round_trip_with_geometry(mset, tmp_path):
    p = synth.write_csv_set(mset, tmp_path / "m.csv.gz")
    back = io.read_molecules(p)
    assert back.ids == mset.ids and list(back.targets.columns) == ["mu", "alpha", "gap", "u0"]
    _same_targets(back, mset, ["mu", "gap", "u0"])
    # Geometry kept: same coordinates to the written precision.
    for m0, m1 in zip(mset.mols, back.mols, strict=True):
        np.testing.assert_allclose(m0.GetConformer().GetPositions(),
                                   m1.GetConformer().GetPositions(), atol=1e-5)


def test_chemprop_csv_smiles_only_with_units(tmp_path):
    p = tmp_path / "chemprop.csv"
    pd.DataFrame({"SMILES": ["CCO", "C#N"], "gap [Ha]": [0.3, 0.4], "extra": [1, 2]}).to_csv(p, index=False)
    ms = io.read_csv(p, targets=["gap"])
    assert len(ms) == 2 and ms.mols[0].GetNumConformers() == 1
    np.testing.assert_allclose(ms.targets["gap"], np.array([0.3, 0.4]) * HARTREE_EV)
    assert ms.units == {"gap": "eV"}


def test_qm9_xyz_file_folder_and_tarball(mset, tmp_path):
    paths = synth.write_qm9_xyz(mset, tmp_path / "xyz")
    text = paths[0].read_text()
    assert "*^" in text and len(text.splitlines()[1].split()) == 17
    one = io.read_molecules(paths[0])
    assert len(one) == 1 and one.ids == ["dsgdb9nsd_000001"]
    folder = io.read_molecules(tmp_path / "xyz")
    assert len(folder) == 5
    np.testing.assert_allclose(folder.targets["u0"], mset.targets["u0"], rtol=1e-6)
    np.testing.assert_allclose(folder.targets["mu"], mset.targets["mu"], atol=1e-4)
    tar = tmp_path / "dsgdb9nsd.xyz.tar.bz2"
    with tarfile.open(tar, "w:bz2") as t:
        for p in paths:
            t.add(p, arcname=p.name)
    packed = io.read_molecules(tar)
    assert packed.ids == folder.ids
    np.testing.assert_allclose(packed.targets["gap"], folder.targets["gap"])


def test_moleculenet_sdf_and_companion_csv(mset, tmp_path):
    p = synth.write_moleculenet_sdf(mset, tmp_path / "gdb9.sdf")
    ms = io.read_molecules(p)
    assert len(ms) == 5 and ms.mols[0].GetNumAtoms() == mset.mols[0].GetNumAtoms()
    _same_targets(ms, mset, ["gap", "u0", "mu"])  # Hartree → eV
    raw = io.sdf.moleculenet_table(tmp_path / "gdb9.sdf.csv")
    np.testing.assert_allclose(raw["u0_atom"], mset.targets["u0"] * 0.001, rtol=1e-6)  # kcal/mol → eV


def test_sdf_with_property_units(mset, tmp_path):
    ms = io.read_molecules(synth.write_sdf(mset, tmp_path / "props.sdf"), targets=["gap", "mu"])
    assert list(ms.targets.columns) == ["gap", "mu"] and ms.ids == mset.ids
    _same_targets(ms, mset, ["gap", "mu"])


def test_smiles_list(tmp_path):
    p = tmp_path / "new.smi"
    p.write_text("# header\nCCO ethanol\nc1ccccc1\n")
    ms = io.read_molecules(p)
    assert ms.ids == ["ethanol", "new.smi:3"] and ms.targets.shape == (2, 0)


# ------------------------------------------------------------------ bad inputs
def test_invalid_smiles_names_file_and_row_or_skips(tmp_path):
    p = tmp_path / "bad.csv"
    pd.DataFrame({"smiles": ["CCO", "C1CC", "[Na+].[Cl-]", "C"], "gap [eV]": [1, 2, 3, 4]}).to_csv(p, index=False)
    with pytest.raises(InputError) as e:
        io.read_csv(p, targets=["gap"])
    assert "row 3" in str(e.value) and "SMILES" in str(e.value) and str(p) in str(e.value)
    ms = io.read_csv(p, targets=["gap"], skip_invalid=True)
    assert len(ms) == 2 and ms.n_skipped == 2
    np.testing.assert_array_equal(ms.targets["gap"], [1, 4])


def test_unsupported_element(tmp_path):
    p = tmp_path / "s.csv"
    pd.DataFrame({"smiles": ["CCS"]}).to_csv(p, index=False)
    with pytest.raises(InputError, match="found S"):
        io.read_csv(p)


def test_missing_column(tmp_path):
    p = tmp_path / "m.csv"
    pd.DataFrame({"smi": ["C"], "gap [eV]": [1.0]}).to_csv(p, index=False)
    with pytest.raises(InputError, match="expected a column 'smiles'"):
        io.read_csv(p)
    pd.DataFrame({"smiles": ["C"], "gap [eV]": [1.0]}).to_csv(p, index=False)
    with pytest.raises(InputError, match=r"expected target column\(s\) \['u0'\]"):
        io.read_csv(p, targets=["u0"])


def test_xyz_without_atoms_and_corrupt(tmp_path):
    empty = tmp_path / "empty.xyz"
    empty.write_text("0\ncomment\n")
    with pytest.raises(InputError, match="at least one atom"):
        io.read_molecules(empty)
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\ngdb 1\nO 0 0 0\nH 1 x 0\n")
    with pytest.raises(InputError, match="bad.xyz"):
        io.read_molecules(bad)


def test_corrupt_tarball(tmp_path):
    p = tmp_path / "broken.tar.bz2"
    p.write_bytes(bz2.compress(b"not a tar archive at all" * 50)[:60])
    with pytest.raises(InputError, match="corrupt"):
        io.read_molecules(p)


def test_write_csv_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "o.csv.gz"
    io.write_csv(out, ids=["a"], smiles=["C"], columns={"gap": np.array([1.0])}, units={})
    before = out.read_bytes()

    def boom(self, data):
        raise OSError("disk full")

    monkeypatch.setattr(gzip.GzipFile, "write", boom)
    with pytest.raises(OSError):
        io.write_csv(out, ids=["b"], smiles=["CC"], columns={"gap": np.array([2.0])}, units={})
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["o.csv.gz"]


def test_bundled_subset_is_small_and_attributed():
    p = io.bundled_subset()
    assert p.exists() and p.stat().st_size < 2_000_000
    head = pd.read_csv(p, nrows=5)
    assert {"smiles", "xyz", "gap [eV]", "u0 [eV]", "cv [cal/mol/K]"} <= set(head.columns)
    assert "Ramakrishnan" in (p.parent / "README.md").read_text()


def test_qm9pack_reader():
    import importlib.util

    if importlib.util.find_spec("qm9pack") is None:  # its own import needs pkg_resources
        pytest.skip("qm9pack (deepsci[qm9]) not installed")
    ms = io.read_qm9pack(rows=np.array([0, 1, 2]))
    assert ms.ids == ["dsgdb9nsd_000001", "dsgdb9nsd_000002", "dsgdb9nsd_000003"]
    # Water (QM9 #3): μ = 1.8511 D, HOMO = -0.2928 Ha.
    assert ms.targets["mu"].iloc[2] == pytest.approx(1.8511)
    assert ms.targets["homo"].iloc[2] == pytest.approx(-0.2928 * HARTREE_EV)


def _geometry(smiles):
    from deepsci.apps.molecules.featurize import embed_smiles

    m = embed_smiles(smiles, seed=1)
    return [a.GetSymbol() for a in m.GetAtoms()], m.GetConformer().GetPositions()


@pytest.mark.parametrize("smiles", ["[NH3+]CC(=O)[O-]", "c1ccncc1", "CC#N", "O=C1CC1"])
def test_bonds_from_smiles_template(smiles):
    from rdkit import Chem

    symbols, coords = _geometry(smiles)
    # Shuffle atom order so the template must be matched, not copied.
    order = np.random.default_rng(0).permutation(len(symbols))
    mol = io.mol_from_xyz([symbols[i] for i in order], coords[order], smiles=smiles)
    assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
    assert mol.GetNumAtoms() == len(symbols)
    assert all(a.GetNumImplicitHs() == 0 for a in mol.GetAtoms())
    np.testing.assert_allclose(mol.GetConformer().GetPositions(), coords[order])


def test_template_with_other_graph_falls_back_to_perception():
    from rdkit import Chem

    symbols, coords = _geometry("CCO")
    # Dimethyl ether has the same atoms but another graph: the geometry wins.
    mol = io.mol_from_xyz(symbols, coords, smiles="COC")
    assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == "CCO"


def test_qm9pack_rows_report_skip_reasons(monkeypatch):
    rows = [("dsgdb9nsd_1.xyz", "['O','H','H']",
             "[[0,0,0.1173],[0,0.7572,-0.4692],[0,-0.7572,-0.4692]]", "O"),
            ("dsgdb9nsd_2.xyz", "['O','H']", "[[0,0,0]]", "O")]
    out = io.qm9pack.qm9pack_rows(rows)
    assert out[0][1] is not None and out[0][1].GetNumAtoms() == 3
    assert out[1][1] is None and "coordinates" in out[1][2]


def test_moleculenet_qm9_csv_layout_is_hartree(tmp_path):
    # MoleculeNet's qm9.csv header; methane and water rows in QM9's own units (Ha, kcal/mol).
    cols = ("mol_id,smiles,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv,"
            "u0_atom,u298_atom,h298_atom,g298_atom").split(",")
    rows = [["gdb_1", "C", 157.7, 157.7, 157.7, 0.0, 13.21, -0.3877, 0.1171, 0.5048, 35.36,
             0.044749, -40.47893, -40.476062, -40.475117, -40.498597, 6.469, -395.999,
             -398.643, -401.014, -372.471],
            ["gdb_3", "O", 799.6, 437.9, 282.9, 1.8511, 6.31, -0.2928, 0.0687, 0.3615, 19.0002,
             0.021375, -76.404702, -76.401867, -76.400922, -76.422349, 6.002, -232.2, -233.1,
             -233.7, -222.6]]
    p = tmp_path / "qm9.csv"
    pd.DataFrame(rows, columns=cols).to_csv(p, index=False)
    ms = io.read_csv(p)
    assert "MoleculeNet" in ms.units_note and "Hartree" in ms.units_note
    df = pd.read_csv(p)
    ha = 27.211386245988  # CODATA 2018, written out here independently of the app
    for name, src in (("gap", "gap"), ("homo", "homo"), ("u0", "u0"), ("u", "u298"),
                      ("h", "h298"), ("g", "g298"), ("zpve", "zpve")):
        np.testing.assert_allclose(ms.targets[name], df[src] * ha, rtol=1e-12)
    np.testing.assert_allclose(ms.targets["mu"], df["mu"], rtol=1e-12)
    atom = io.read_csv(p, targets=["u0_atom"])
    np.testing.assert_allclose(atom.targets["u0_atom"], df["u0_atom"] * 4.184 / 96.485332, rtol=1e-6)
    # A bare header outside that layout, or eV values in it, is an error, never a guess.
    pd.DataFrame({"smiles": ["C"], "gap": [13.7]}).to_csv(p, index=False)
    with pytest.raises(InputError, match="expected a unit in the header"):
        io.read_csv(p)
    bad = pd.DataFrame(rows, columns=cols)
    bad["gap"] = bad["gap"] * ha
    bad.to_csv(p, index=False)
    with pytest.raises(InputError, match="expected Hartree values"):
        io.read_csv(p)
