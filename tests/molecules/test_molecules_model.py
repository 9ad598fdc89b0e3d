"""The enn-s2s MPNN (core/models/mpnn.py): contract, round trip, invariances, batching."""
import numpy as np
import pytest

from deepsci.apps.molecules.featurize import embed_smiles, featurize
from deepsci.apps.molecules.graphs import GraphTable, collate, make_source, pad_batch


@pytest.fixture(scope="module")
def graphs():
    return [featurize(embed_smiles(s, seed=1), graph="complete")
            for s in ("CCO", "c1ccoc1", "CC#N", "OC(F)F")]


def _model(n_targets=3, **kw):
    from deepsci.core.models.mpnn import mpnn

    kw = {"units": 16, "edge_hidden": (8, 4), "head": (16,), **kw}
    return mpnn(13, 6, n_targets, **kw)


def _inputs(gs):
    return collate(GraphTable.from_graphs(gs), np.arange(len(gs)))


def test_round_trip_safe_mode(graphs, tmp_path):
    from deepsci.apps.molecules.model import member_card
    from deepsci.core.models.serialization import load_model, save_model

    m = _model(mean=[1.0, 2.0, 3.0], std=[0.5, 1.0, 2.0], atomref=[[0.1, 0, 0]] * 5)
    x = _inputs(graphs)
    y = np.asarray(m(x))
    card = member_card(units={"gap": "eV", "mu": "D", "cv": "cal/mol/K"}, graph="complete",
                       scaling={}, training={}, data={}, metrics={}, extra={})
    save_model(m, tmp_path / "m.keras", card=card)
    m2, back = load_model(tmp_path / "m.keras", expect="molecules", task="qm9-properties")
    assert back.outputs["mu"] == {"unit": "D", "chemical_accuracy": 0.1}
    assert list(back.outputs) == ["gap", "mu", "cv"] and back.input_spec["graph"] == "complete"
    np.testing.assert_allclose(np.asarray(m2(x)), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer,kwargs,msg", [
    ("EdgeNetworkGRU", {"units": 0}, "Expected units"),
    ("EdgeNetworkGRU", {"edge_hidden": ()}, "Expected edge_hidden"),
    ("EdgeNetworkGRU", {"aggregation": "max"}, "Expected aggregation"),
    ("Set2Set", {"steps": 1.5}, "Expected steps"),
    ("TargetScaler", {"mean": [0.0], "std": [0.0]}, "Expected mean and std"),
])
def test_layers_validate(layer, kwargs, msg):
    from deepsci.core.models import mpnn

    with pytest.raises(ValueError, match=msg):
        getattr(mpnn, layer)(**kwargs)


def test_layer_configs_round_trip():
    from deepsci.core.models.mpnn import EdgeNetworkGRU, Set2Set, TargetScaler

    for layer in (EdgeNetworkGRU(8, 2, (4,), "mean"), Set2Set(2), TargetScaler([1.0], [2.0], [[0.5]])):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_permutation_invariance(graphs):
    """Shuffling the atom order of a molecule gives the same prediction."""
    m = _model()
    g = graphs[1]
    perm = np.random.default_rng(0).permutation(g.n_atoms)
    inv = np.argsort(perm)
    from deepsci.apps.molecules.featurize import Graph

    shuffled = Graph(atoms=g.atoms[perm], pairs=inv[g.pairs].astype(np.int32), edges=g.edges)
    a = np.asarray(m(_inputs([g])))
    b = np.asarray(m(_inputs([shuffled])))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_disjoint_union_batch_equals_single_molecules(graphs):
    """A molecule's prediction does not depend on the others in its batch, nor on padding."""
    m = _model(aggregation="mean")
    batch = np.asarray(m(_inputs(graphs)))
    single = np.concatenate([np.asarray(m(_inputs([g]))) for g in graphs])
    np.testing.assert_allclose(batch, single, rtol=1e-4, atol=1e-5)
    x, y, w = pad_batch(_inputs(graphs), np.zeros((4, 3), np.float32), atoms=200, edges=900, graphs=6)
    padded = np.asarray(m(x))
    assert padded.shape == (6, 3) and list(w) == [1, 1, 1, 1, 0, 0]
    np.testing.assert_allclose(padded[:4], batch, rtol=1e-4, atol=1e-5)


def test_make_source_splits_whole_molecules_over_replicas(graphs):
    import tensorflow as tf

    table = GraphTable.from_graphs(graphs * 5)
    y = np.arange(20, dtype=np.float32)[:, None]
    fn = make_source(table, y, global_batch=4, shuffle=True, seed=3)
    ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                     num_replicas_in_sync=2)
    seen = []
    for x, yy, w in fn(ctx, epoch=0):
        assert yy.shape == (3, 1) and x["atoms"].shape[0] == x["graph"].shape[0]
        g = x["graph"].numpy()
        assert np.all(np.diff(g) >= 0) and g.max() == 2  # padding molecule last
        seen += list(yy.numpy()[w.numpy() > 0, 0])
    assert len(seen) == 20 and sorted(seen) == list(range(20))
    again = [yy.numpy().tolist() for _, yy, _ in fn(ctx, epoch=0)]
    other = [yy.numpy().tolist() for _, yy, _ in fn(ctx, epoch=1)]
    assert again != other  # reshuffled per epoch, reproducibly


@pytest.mark.parametrize("jit_compile,streams", [(False, 1), (True, 2)])
def test_packed_inference_equals_eager(graphs, jit_compile, streams):
    from deepsci.apps.molecules.predict import inference_plan, predict_table

    m = _model(mean=[1.0, 2.0, 3.0], std=[0.5, 1.0, 2.0], atomref=[[0.1, 0, 0]] * 5)
    gs = [graphs[i % len(graphs)] for i in range(23)]
    table = GraphTable.from_graphs(gs)
    eager = np.asarray(m(collate(table, np.arange(len(gs)))))
    batches, atoms, edges = inference_plan(table, 5)
    assert np.array_equal(np.concatenate(batches), np.arange(23)) and atoms % 256 == 0
    mean, std = predict_table([m], table, batch_size=5, streams=streams, jit_compile=jit_compile)
    np.testing.assert_allclose(mean, eager, rtol=1e-5, atol=1e-5)
    assert not std.any()
