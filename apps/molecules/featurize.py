"""Molecules as graphs: Gilmer et al. (2017) atom and edge features, with RDKit.

A molecule is an RDKit ``Mol`` with explicit hydrogens and one 3-D conformer.
Its graph is three arrays:

``atoms``  (n, 13) float32
    element one-hot H/C/N/O/F, atomic number, acceptor, donor, aromatic,
    sp/sp2/sp3 one-hot, number of attached hydrogens.
``pairs``  (E, 2) int32
    directed edges as ``(receiver v, sender w)``; both directions of each edge.
``edges``  (E, 6) float32
    bond type one-hot single/double/triple/aromatic/no-bond and the
    interatomic distance in Å.

``graph="bond"`` keeps chemical bonds only; ``graph="complete"`` connects every
ordered atom pair, non-bonded pairs carrying the "no bond" type and their
distance (Gilmer's best variant).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "ELEMENTS",
    "ATOM_FEATURES",
    "EDGE_FEATURES",
    "N_ATOM_FEATURES",
    "N_EDGE_FEATURES",
    "GRAPH_KINDS",
    "Graph",
    "featurize",
    "embed_smiles",
    "check_elements",
]

ELEMENTS = ("H", "C", "N", "O", "F")
ATOM_FEATURES = (
    "is_H", "is_C", "is_N", "is_O", "is_F", "atomic_number", "acceptor", "donor",
    "aromatic", "sp", "sp2", "sp3", "num_h",
)
EDGE_FEATURES = ("single", "double", "triple", "aromatic", "no_bond", "distance")
N_ATOM_FEATURES = len(ATOM_FEATURES)
N_EDGE_FEATURES = len(EDGE_FEATURES)
GRAPH_KINDS = ("bond", "complete")


@dataclass(frozen=True)
class Graph:
    """One molecule's graph; see the module docstring for the array layouts."""

    atoms: np.ndarray
    pairs: np.ndarray
    edges: np.ndarray

    @property
    def n_atoms(self) -> int:
        return int(self.atoms.shape[0])


@lru_cache(maxsize=1)
def _feature_factory():
    from rdkit import RDConfig
    from rdkit.Chem import ChemicalFeatures

    return ChemicalFeatures.BuildFeatureFactory(os.path.join(RDConfig.RDDataDir, "BaseFeatures.fdef"))


@lru_cache(maxsize=1)
def _donor_acceptor_patterns():
    """Compiled SMARTS of the Donor and Acceptor families of RDKit's BaseFeatures.fdef.

    Matching only these two families gives the same atoms as the feature
    factory, which also matches the other families (3/4 of featurisation time).
    """
    from rdkit import Chem

    pats = {"Donor": [], "Acceptor": []}
    for name, smarts in _feature_factory().GetFeatureDefs().items():
        family = name.split(".")[0]
        if family in pats:
            pats[family].append(Chem.MolFromSmarts(smarts))
    return pats


def check_elements(mol) -> None:
    """Raise ``ValueError`` naming the first element outside H, C, N, O, F."""
    if mol.GetNumAtoms() == 0:
        raise ValueError("expected at least one atom, found none")
    for atom in mol.GetAtoms():
        if atom.GetSymbol() not in ELEMENTS:
            raise ValueError(
                f"expected only elements {'/'.join(ELEMENTS)}, found {atom.GetSymbol()}"
            )


def _bond_onehot(bond) -> list[float]:
    from rdkit import Chem

    bt = bond.GetBondType()
    return [
        float(bt == Chem.BondType.SINGLE),
        float(bt == Chem.BondType.DOUBLE),
        float(bt == Chem.BondType.TRIPLE),
        float(bt == Chem.BondType.AROMATIC),
        0.0,
    ]


def featurize(mol, *, graph: str = "complete") -> Graph:
    """Gilmer atom and edge features of one molecule.

    Parameters
    ----------
    mol : rdkit.Chem.Mol
        Explicit hydrogens and a 3-D conformer (see :func:`embed_smiles`).
    graph : {"complete", "bond"}
        Edge set: every ordered atom pair, or chemical bonds only.

    Returns
    -------
    Graph
        ``atoms`` (n, 13), ``pairs`` (E, 2) as (receiver, sender), ``edges`` (E, 6).

    Raises
    ------
    ValueError
        No atoms, an element outside H/C/N/O/F, or no conformer.
    """
    from rdkit import Chem

    if graph not in GRAPH_KINDS:
        raise ValueError(f"Expected graph in {GRAPH_KINDS}. Received: graph={graph!r}")
    check_elements(mol)
    if mol.GetNumConformers() == 0:
        raise ValueError("expected a 3-D conformer, found none")
    n = mol.GetNumAtoms()
    hyb = Chem.HybridizationType
    acceptor = np.zeros(n, np.float32)
    donor = np.zeros(n, np.float32)
    pats = _donor_acceptor_patterns()
    for family, out in (("Acceptor", acceptor), ("Donor", donor)):
        for patt in pats[family]:
            for match in mol.GetSubstructMatches(patt, uniquify=True, maxMatches=10_000):
                out[list(match)] = 1.0
    atoms = np.zeros((n, N_ATOM_FEATURES), np.float32)
    for a in mol.GetAtoms():
        i = a.GetIdx()
        atoms[i, ELEMENTS.index(a.GetSymbol())] = 1.0
        atoms[i, 5] = a.GetAtomicNum()
        atoms[i, 6] = acceptor[i]
        atoms[i, 7] = donor[i]
        atoms[i, 8] = float(a.GetIsAromatic())
        h = a.GetHybridization()
        atoms[i, 9] = float(h == hyb.SP)
        atoms[i, 10] = float(h == hyb.SP2)
        atoms[i, 11] = float(h == hyb.SP3)
        # With explicit hydrogens GetTotalNumHs counts H neighbours too.
        atoms[i, 12] = a.GetTotalNumHs(includeNeighbors=True)
    pos = np.asarray(mol.GetConformer().GetPositions(), np.float64)
    if graph == "bond":
        src, dst, types = [], [], []
        for b in mol.GetBonds():
            i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
            t = _bond_onehot(b)
            src += [i, j]
            dst += [j, i]
            types += [t, t]
        recv = np.asarray(dst, np.int32)
        send = np.asarray(src, np.int32)
        onehot = np.asarray(types, np.float32).reshape(-1, 5)
    else:
        v, w = np.nonzero(~np.eye(n, dtype=bool))
        recv, send = v.astype(np.int32), w.astype(np.int32)
        table = np.zeros((n, n, 5), np.float32)
        table[:, :, 4] = 1.0
        for b in mol.GetBonds():
            i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
            table[i, j] = table[j, i] = _bond_onehot(b)
        onehot = table[recv, send]
    dist = np.linalg.norm(pos[recv] - pos[send], axis=1).astype(np.float32)
    edges = np.concatenate([onehot, dist[:, None]], axis=1)
    pairs = np.stack([recv, send], axis=1).astype(np.int32).reshape(-1, 2)
    return Graph(atoms=atoms, pairs=pairs, edges=edges.reshape(-1, N_EDGE_FEATURES))


def featurize_chunk(task: tuple[list, str]) -> list[Graph]:
    """``[featurize(m, graph=graph) for m in mols]`` for ``task = (mols, graph)``.

    Top-level (picklable) so a process pool can run it.
    """
    mols, graph = task
    return [featurize(m, graph=graph) for m in mols]


def embed_smiles(smiles: str, *, seed: int = 0, optimize: bool = True):
    """A SMILES string as a 3-D molecule: explicit H, ETKDGv3 conformer, MMFF-relaxed.

    Parameters
    ----------
    smiles : str
        The molecule.
    seed : int
        Random seed of the embedding, so conformers are reproducible.
    optimize : bool
        Relax the ETKDG conformer with the MMFF94 force field.

    Returns
    -------
    rdkit.Chem.Mol

    Raises
    ------
    ValueError
        Unparseable SMILES, no atoms, unsupported elements, or embedding failure.
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) else None
    if mol is None:
        raise ValueError(f"expected a valid SMILES, found {smiles!r}")
    check_elements(mol)
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise ValueError(f"expected an embeddable molecule, found ETKDG failure for {smiles!r}")
    if optimize and AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=500)
    return mol
