"""predict and label write an SDF beside the CSV (issue #18), read back with RDKit.

Every record must carry the molecule the model (or the DFT) used: its explicit
hydrogens, its conformer (the V2000 molfile keeps 4 decimals of Å, so
coordinates are compared to 6e-5 Å) and, as SD tags, the CSV row's exact cells.
"""
import csv
import gzip
import json

import numpy as np
import pytest

from deepsci.apps.cli import main
from deepsci.apps.molecules import synth

SMILES = {"ethanol": "CCO", "benzene": "c1ccccc1", "methylammonium": "C[NH3+]",
          "glycine": "NCC(=O)O"}
XYZ_TOL = 6e-5  # V2000 coordinates are %10.4f


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    return synth.untrained_members(tmp_path_factory.mktemp("sdfm"), n=2)


def _run(*argv):
    return main([str(a) for a in argv])


def _csv_rows(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        return list(csv.DictReader(fh))


def _records(path):
    from rdkit import Chem

    supplier = Chem.SDMolSupplier(str(path), removeHs=False)
    records = list(supplier)
    assert all(m is not None for m in records), "a record RDKit cannot read"
    return records


def _check_against_csv(sdf, rows):
    """Every record's title, SMILES, atoms and tags equal its CSV row; returns the records."""
    from rdkit import Chem

    from deepsci.apps.molecules.io import geometry

    records = _records(sdf)
    assert len(records) == len(rows)
    canon = lambda s: Chem.MolToSmiles(Chem.MolFromSmiles(s))  # noqa: E731
    for mol, row in zip(records, rows, strict=True):
        assert mol.GetProp("_Name") == row["id"] == mol.GetProp("id")
        assert canon(mol.GetProp("smiles")) == canon(row["smiles"])
        assert canon(Chem.MolToSmiles(Chem.RemoveHs(mol))) == canon(row["smiles"])
        symbols, xyz = geometry.parse_geometry(row["xyz"])
        assert [a.GetSymbol() for a in mol.GetAtoms()] == symbols
        np.testing.assert_allclose(mol.GetConformer().GetPositions(), xyz, atol=XYZ_TOL, rtol=0)
        props = [c for c in row if c not in ("id", "smiles", "xyz")]
        assert props and sorted(mol.GetPropNames()) == sorted(["id", "smiles", *props])
        for col in props:
            # The same printed digits, so both files parse to the same float.
            assert mol.GetProp(col) == row[col], (col, mol.GetProp(col), row[col])
    return records


def test_predict_sdf_round_trips_the_csv(members, tmp_path, capsys):
    from rdkit import Chem

    from deepsci.apps.molecules.featurize import embed_smiles

    smi = tmp_path / "new.smi"
    smi.write_text("".join(f"{s} {name}\n" for name, s in SMILES.items()) + "C1CC broken\n")
    out = tmp_path / "pred.csv"
    model = ",".join(str(p) for p in members)
    rc = _run("molecules", "predict", smi, "--model", model, "--out", out, "--skip-invalid")
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "pred.sdf" in printed.out and "skipped 1" in printed.out
    rows = _csv_rows(out)
    records = _check_against_csv(tmp_path / "pred.sdf", rows)
    # The skipped molecule is in neither file.
    assert [r["id"] for r in rows] == list(SMILES)
    assert {"gap [eV]", "gap_std [eV]", "mu [D]", "mu_std [D]"} <= set(rows[0])
    assert all(float(r["gap_std [eV]"]) > 0 for r in rows)  # two different members
    for mol, (name, s) in zip(records, SMILES.items(), strict=True):
        # The conformer the predictor featurised: the seeded ETKDG + MMFF embedding.
        used = embed_smiles(s, seed=0)
        assert mol.GetNumAtoms() == used.GetNumAtoms() == Chem.AddHs(Chem.MolFromSmiles(s)).GetNumAtoms()
        np.testing.assert_allclose(mol.GetConformer().GetPositions(),
                                   used.GetConformer().GetPositions(), atol=XYZ_TOL, rtol=0)
        assert Chem.GetFormalCharge(mol) == Chem.GetFormalCharge(used), name
    record = json.loads((tmp_path / "pred.csv.run.json").read_text())
    assert record["results"]["outputs"] == {"csv": str(out), "sdf": str(tmp_path / "pred.sdf")}


def test_predict_sdf_keeps_an_xyz_geometry_and_the_name_rule(members, tmp_path, capsys):
    """xyz input: the record is that geometry; ``x.csv.gz`` → ``x.sdf``; --no-sdf: CSV only."""
    ms = synth.synthetic_set(2)
    folder = tmp_path / "xyz"
    paths = synth.write_qm9_xyz(ms, folder)
    out = tmp_path / "x.csv.gz"
    rc = _run("molecules", "predict", folder, "--model", members[0], "--out", out)
    assert rc == 0, capsys.readouterr().err
    rows = _csv_rows(out)
    records = _check_against_csv(tmp_path / "x.sdf", rows)
    assert "gap_std [eV]" not in rows[0]  # one model: no spread
    for mol, path in zip(records, sorted(paths), strict=True):
        lines = path.read_text().splitlines()
        given = [[float(v.replace("*^", "e")) for v in line.split()[1:4]]
                 for line in lines[2:2 + int(lines[0])]]
        np.testing.assert_allclose(mol.GetConformer().GetPositions(), given, atol=XYZ_TOL, rtol=0)
    # A finished run's outputs are replaced only with --overwrite, both together, and a
    # killed attempt's SDF temporary (stem "x", not the CSV's "x.csv") is cleaned away.
    before = {p: p.read_bytes() for p in (out, tmp_path / "x.sdf")}
    rc = _run("molecules", "predict", folder, "--model", members[0], "--out", out)
    err = capsys.readouterr().err
    assert rc == 2 and "found a finished run's output (pass --overwrite" in err, err
    stale = tmp_path / ".x.k1ll3d.tmp.sdf"
    stale.write_text("half a record")
    rc = _run("molecules", "predict", folder, "--model", members[0], "--out", out, "--overwrite")
    assert rc == 0, capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before and not stale.exists()
    rc = _run("molecules", "predict", folder, "--model", members[0], "--out",
              tmp_path / "y.csv", "--no-sdf")
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "y.csv").exists() and not (tmp_path / "y.sdf").exists()


def test_label_sdf_carries_the_dft_values(tmp_path, capsys):
    pytest.importorskip("pyscf")
    xyz = tmp_path / "water.xyz"
    xyz.write_text("3\nwater\nO -0.0343604951 0.9775395708 0.0076015923\n"
                   "H 0.0647664923 0.0205721989 0.0015346341\nH 0.8717903737 1.3007924048 0.0006931336\n")
    out = tmp_path / "labels.csv"
    rc = _run("molecules", "label", xyz, "--out", out, "--method", "hf/sto-3g",
               "--no-polarizability")
    assert rc == 0, capsys.readouterr().err
    rows = _csv_rows(out)
    (mol,) = _check_against_csv(tmp_path / "labels.sdf", rows)
    np.testing.assert_allclose(mol.GetConformer().GetPositions()[0],
                               [-0.0343604951, 0.9775395708, 0.0076015923], atol=XYZ_TOL, rtol=0)
    # HF/STO-3G water (test_molecules_cli checks the same numbers in the CSV).
    assert float(mol.GetProp("homo [eV]")) == pytest.approx(-10.654, abs=0.02)
    assert float(mol.GetProp("mu [D]")) == pytest.approx(1.7245, abs=0.01)
    # No polarizability: an empty cell in the CSV and an empty tag, not "nan".
    assert rows[0]["alpha [a0^3]"] == "" and mol.GetProp("alpha [a0^3]") == ""


def test_label_skips_a_failed_scf_and_names_it(tmp_path, capfd, monkeypatch, bad_input):
    """A molecule whose SCF fails: an error naming it, or skipped, named in run.json and in
    neither output under --skip-invalid; when every SCF fails nothing is left behind.

    The error keeps the molecules labelled before it as resume markers (DFT is the
    expensive part): the run record says failed, no CSV or SDF exists, and the rerun
    with --skip-invalid labels only what is left.
    """
    from deepsci.apps.molecules import label

    calls = []

    def fake(mol, **kw):  # stands in for PySCF: no convergence for any nitrogen
        calls.append(mol.GetNumAtoms())
        if any(a.GetSymbol() == "N" for a in mol.GetAtoms()):
            raise ValueError("expected a converged SCF, found none after second-order fallback")
        return {n: float(mol.GetNumAtoms()) for n in ("homo", "lumo", "gap", "mu", "r2",
                                                      "alpha", "e_scf")}

    monkeypatch.setattr(label, "label_molecule", fake)
    smi = tmp_path / "m.smi"
    smi.write_text("O water\nN ammonia\nC methane\n")
    out = tmp_path / "l.csv"
    argv = ["molecules", "label", smi, "--out", out, "--method", "hf/sto-3g"]
    bad_input(argv, match=r"molecule ammonia: expected a converged SCF")
    assert not out.exists() and not (tmp_path / "l.sdf").exists()
    assert json.loads((tmp_path / "l.csv.run.json").read_text())["status"] == "failed"
    assert calls == [3, 4]  # water, then ammonia failed
    rc = _run(*argv, "--skip-invalid")
    assert rc == 0, capfd.readouterr().err
    assert "skipped 1 invalid molecule(s)" in capfd.readouterr().out
    assert calls == [3, 4, 4, 5]  # water's marker reused; ammonia retried, then methane
    assert not (tmp_path / ".l.csv.state").exists()
    rows = _csv_rows(out)
    assert [r["id"] for r in rows] == ["water", "methane"] and rows[1]["gap [eV]"] == "5"
    _check_against_csv(tmp_path / "l.sdf", rows)
    results = json.loads((tmp_path / "l.csv.run.json").read_text())["results"]
    assert results["n"] == 2 and results["n_skipped"] == 1
    assert results["skipped"] == ["molecule ammonia: expected a converged SCF, found none after "
                                  "second-order fallback"]
    nitrogen = tmp_path / "n.smi"
    nitrogen.write_text("N\nN#N\n")
    bad_input(["molecules", "label", nitrogen, "--out", tmp_path / "n.csv", "--method",
               "hf/sto-3g", "--skip-invalid"], watch=[tmp_path],
              match="expected at least one molecule whose SCF converges")
