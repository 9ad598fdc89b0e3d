"""Training through the core loop: overfitting a tiny set, scaffold split, the demo hook."""
import json

import numpy as np

from deepsci.apps.molecules import synth
from deepsci.apps.molecules.io import MoleculeSet


def test_overfit_tiny_set(tmp_path):
    """A small MPNN drives the training error of 10 molecules far below the spread of the labels."""
    from deepsci.apps.molecules.graphs import featurize_set
    from deepsci.apps.molecules.model import ModelConfig
    from deepsci.apps.molecules.predict import predict_table
    from deepsci.apps.molecules.train import MoleculeTrainConfig, train_molecules
    from deepsci.core.training import TrainConfig

    ms = synth.synthetic_set(smiles=synth.SMILES[10:22])
    data = synth.write_csv_set(ms, tmp_path / "tiny.csv")
    cfg = MoleculeTrainConfig(
        data=str(data), out=str(tmp_path / "run"), targets=["gap", "mu"], val=2, test=0,
        model=ModelConfig(units=32, edge_hidden=(16, 8), steps=3, head=(64,)),
        train=TrainConfig(epochs=2, steps_per_epoch=150, batch_size=10, learning_rate=3e-3, lr_schedule="constant",
                          progress=False, tensorboard=False, checkpoint_every=10_000))
    summary = train_molecules(cfg)
    split = json.loads((tmp_path / "run/split.json").read_text())
    idx = [ms.ids.index(i) for i in split["train"]]
    assert len(idx) == 10 and len(split["val"]) == 2
    sub = ms.subset(idx)
    pred, _ = predict_table(summary["members"], featurize_set(sub, "bond"))
    y = sub.targets[["gap", "mu"]].to_numpy()
    mae = np.abs(pred - y).mean(axis=0)
    spread = np.abs(y - y.mean(axis=0)).mean(axis=0)
    assert np.all(mae < 0.25 * spread), (mae, spread)


def test_scaffold_split_shares_no_scaffold():
    from rdkit import Chem
    from rdkit.Chem.Scaffolds import MurckoScaffold

    from deepsci.apps.molecules.train import split_indices

    smiles = ["c1ccccc1C", "c1ccccc1O", "c1ccccc1N", "c1ccncc1", "c1ccncc1C", "C1CCC1", "C1CCC1O",
              "CCO", "CCN", "CCC", "C1CC1", "C1CC1C"]
    mols = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in smiles]
    import pandas as pd

    ms = MoleculeSet(ids=smiles, smiles=smiles, mols=mols, targets=pd.DataFrame(index=range(12)))
    tr, va, te = split_indices(ms, kind="scaffold", val=0.25, test=0.25, seed=0)
    assert sorted([*tr, *va, *te]) == list(range(12))
    scaf = lambda i: MurckoScaffold.MurckoScaffoldSmiles(smiles[i])  # noqa: E731
    sets = [{scaf(i) for i in part} for part in (tr, va, te)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    r = split_indices(ms, kind="random", val=3, test=3, seed=1)
    assert [len(p) for p in r] == [6, 3, 3]


def test_atomref_scaling_recovers_composition():
    from deepsci.apps.molecules.featurize import featurize
    from deepsci.apps.molecules.graphs import GraphTable
    from deepsci.apps.molecules.train import fit_scaling

    ms = synth.synthetic_set()
    table = GraphTable.from_graphs([featurize(m, graph="bond") for m in ms.mols])
    counts = table.element_counts()
    y = (counts @ np.array([-13.6, -1029.8, -1485.3, -2042.6, -2713.5]) + 0.01)[:, None]
    s = fit_scaling(table, y)
    np.testing.assert_allclose(np.array(s["atomref"])[:, 0], [-13.6, -1029.8, -1485.3, -2042.6, -2713.5],
                               atol=1e-2)
    assert s["std"][0] < 1e-3


def test_demo_quick(tmp_path):
    from deepsci.apps.molecules.demo import run_demo

    res = run_demo(tmp_path, quick=True, train=True)
    assert res.app == "molecules" and "gap MAE [eV]" in res.metrics and "u0 MAE/chem.acc." in res.metrics
    assert all(p.exists() for p in res.figures)
    assert len([k for k in res.metrics if k.endswith("]")]) == 12
    assert np.isfinite(res.metrics["u0 MAE [eV]"])
