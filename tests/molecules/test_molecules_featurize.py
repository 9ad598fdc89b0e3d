"""Featurisation against hand-checked molecules, and the target/unit conventions."""
import numpy as np
import pytest

from deepsci.apps.molecules import targets as T
from deepsci.apps.molecules.featurize import ATOM_FEATURES, embed_smiles, featurize


def _feat(mol, name):
    return mol.atoms[:, ATOM_FEATURES.index(name)]


def test_water_atoms_and_edges():
    g = featurize(embed_smiles("O"), graph="bond")
    assert g.atoms.shape == (3, 13)
    # O first, then two H: element one-hot, atomic number. RDKit's BaseFeatures
    # patterns (Gilmer's source of donor/acceptor) need a heavy neighbour, so a
    # lone water molecule has neither flag; methanol's O has both.
    np.testing.assert_array_equal(g.atoms[:, :5], [[0, 0, 0, 1, 0], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(_feat(g, "atomic_number"), [8, 1, 1])
    meoh = featurize(embed_smiles("CO"), graph="bond")
    assert _feat(meoh, "acceptor")[1] == 1 and _feat(meoh, "donor")[1] == 1
    assert _feat(meoh, "acceptor")[0] == 0 and _feat(meoh, "donor")[0] == 0
    np.testing.assert_array_equal(_feat(g, "num_h"), [2, 0, 0])
    assert _feat(g, "sp3")[0] == 1
    # Two O-H bonds, both directions, single bonds of about 0.96 Å (MMFF).
    assert g.pairs.shape == (4, 2) and set(map(tuple, g.pairs)) == {(0, 1), (1, 0), (0, 2), (2, 0)}
    np.testing.assert_array_equal(g.edges[:, :5], [[1, 0, 0, 0, 0]] * 4)
    assert np.all((g.edges[:, 5] > 0.9) & (g.edges[:, 5] < 1.0))


def test_ethanol_hybridisation_donor_and_complete_graph():
    mol = embed_smiles("CCO")
    g = featurize(mol, graph="complete")
    n = mol.GetNumAtoms()
    assert n == 9 and g.pairs.shape == (n * (n - 1), 2)
    # 8 bonds → 16 directed bonded edges, the rest carry the "no bond" type.
    assert g.edges[:, 4].sum() == n * (n - 1) - 16
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    np.testing.assert_array_equal(_feat(g, "sp3")[heavy], [1, 1, 1])
    np.testing.assert_array_equal(_feat(g, "num_h")[heavy], [3, 2, 1])
    np.testing.assert_array_equal(_feat(g, "donor")[heavy], [0, 0, 1])
    # Distances are symmetric.
    d = {(int(v), int(w)): e[5] for (v, w), e in zip(g.pairs, g.edges, strict=True)}
    assert all(abs(d[(v, w)] - d[(w, v)]) < 1e-6 for v, w in d)


def test_benzene_aromatic():
    g = featurize(embed_smiles("c1ccccc1"), graph="bond")
    carbons = g.atoms[:, 1] == 1
    assert carbons.sum() == 6
    assert np.all(_feat(g, "aromatic")[carbons] == 1) and np.all(_feat(g, "sp2")[carbons] == 1)
    arom = g.edges[:, 3] == 1
    assert arom.sum() == 12  # six aromatic C-C bonds, both directions
    np.testing.assert_allclose(g.edges[arom, 5], 1.39, atol=0.02)


@pytest.mark.parametrize("smiles,msg", [("[Na+].[Cl-]", "found Na"), ("C1CC", "valid SMILES"),
                                        ("", "at least one atom")])
def test_bad_molecules(smiles, msg):
    with pytest.raises(ValueError, match=msg):
        featurize(embed_smiles(smiles))


def test_graph_kind_validated():
    with pytest.raises(ValueError, match="Expected graph"):
        featurize(embed_smiles("C"), graph="knn")


def test_units_and_columns():
    assert T.parse_column("gap [Ha]") == ("gap", "Ha")
    assert T.parse_column("u0") == ("u0", None)
    assert T.column_name("cv") == "cv [cal/mol/K]"
    v, f = T.convert(np.array([1.0]), "Ha", "gap")
    assert f == pytest.approx(27.211386245988) and v[0] == pytest.approx(27.211386245988)
    assert T.convert(np.array([1.0]), "kcal/mol", "u0")[0][0] == pytest.approx(0.0433641, rel=1e-5)
    with pytest.raises(ValueError, match="expected a unit"):
        T.convert(np.array([1.0]), "D", "gap")
    assert T.resolve_targets("all") == list(T.GILMER_TARGETS) and len(T.GILMER_TARGETS) == 12
    assert T.TARGETS["zpve"].chemical_accuracy == 0.0012


@pytest.mark.parametrize("smiles", ["CCO", "c1ccncc1", "Nc1ccccc1", "CC(=O)O", "OC(F)F", "[nH]1cccc1"])
def test_donor_acceptor_match_rdkit_feature_factory(smiles):
    from deepsci.apps.molecules.featurize import _feature_factory

    mol = embed_smiles(smiles, seed=0)
    g = featurize(mol, graph="bond")
    acc, don = np.zeros(mol.GetNumAtoms()), np.zeros(mol.GetNumAtoms())
    for f in _feature_factory().GetFeaturesForMol(mol):
        if f.GetFamily() == "Acceptor":
            acc[list(f.GetAtomIds())] = 1
        elif f.GetFamily() == "Donor":
            don[list(f.GetAtomIds())] = 1
    np.testing.assert_array_equal(g.atoms[:, 6], acc)
    np.testing.assert_array_equal(g.atoms[:, 7], don)
