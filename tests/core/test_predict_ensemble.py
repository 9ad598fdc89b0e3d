"""The core predictor (one trace, padding, postprocess), ensembles and process helpers."""
import os
import time

import keras
import numpy as np
import pytest

from deepsci.core.ensemble import combine, load_ensemble, member_seeds, model_paths, write_ensemble
from deepsci.core.errors import InputError
from deepsci.core.models.card import ModelCard
from deepsci.core.models.serialization import save_model
from deepsci.core.parallel import process_map, start_child, thread_map
from deepsci.core.predict import Predictor, predictor


def _model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


def _card(app="variants", units=3):
    return ModelCard(app=app, task="genotype", input_spec={"shape": [4]},
                     outputs={"genotype": {"classes": list(range(units))}})


@pytest.mark.parametrize("n", [1, 5, 8, 13])
def test_predictor_matches_the_model_and_traces_once(n):
    import tensorflow as tf

    m = _model(0)
    p = Predictor(m, batch_size=4, postprocess=tf.nn.softmax)
    x = np.random.default_rng(n).normal(size=(n, 4)).astype("float32")
    np.testing.assert_allclose(p(x), tf.nn.softmax(m(x)).numpy(), rtol=1e-5, atol=1e-6)
    p(x[:3])
    assert p.traces == 1
    assert predictor(m, batch_size=4) is predictor(m, batch_size=4)


def test_predictor_dict_inputs_and_xla():
    inp = {"a": keras.Input((2,), name="a"), "b": keras.Input((2,), name="b")}
    out = keras.layers.Dense(1)(keras.layers.Concatenate()([inp["a"], inp["b"]]))
    m = keras.Model(inp, {"y": out})
    x = {"a": np.ones((3, 2), "float32"), "b": np.zeros((3, 2), "float32")}
    y = Predictor(m, batch_size=2, xla=True)(x)
    np.testing.assert_allclose(y["y"], m(x)["y"].numpy(), rtol=1e-5)


def test_predictor_xla_follows_the_current_accelerator(monkeypatch):
    from deepsci.core import accelerator

    m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert Predictor(m, batch_size=2).xla is False  # before any setup(): the defaults
    monkeypatch.setattr(accelerator, "_ACTIVE", [accelerator.AcceleratorConfig(xla=True)])
    p = Predictor(m, batch_size=2)
    assert p.xla is True and Predictor(m, batch_size=2, xla=False).xla is False
    assert predictor(m, batch_size=2).xla is True
    x = np.ones((3, 3), "float32")
    np.testing.assert_allclose(p(x), m(x).numpy(), rtol=1e-5)


def test_ensemble_is_the_mean_of_its_members(tmp_path):
    import tensorflow as tf

    paths = []
    for i in member_seeds(0, 3):
        paths.append(save_model(_model(i), tmp_path / f"member_{i}" / "model.keras", card=_card()))
    write_ensemble(tmp_path, paths, info={"recipe": "r"})
    assert model_paths(tmp_path) == paths
    assert model_paths(",".join(map(str, paths[:2]))) == paths[:2]
    ens = load_ensemble(tmp_path, expect="variants", batch_size=4, postprocess=tf.nn.softmax)
    x = np.random.default_rng(1).normal(size=(6, 4)).astype("float32")
    members = [tf.nn.softmax(keras.saving.load_model(p)(x)).numpy() for p in paths]
    mean, std = ens.predict_with_std(x)
    np.testing.assert_allclose(mean, np.mean(members, axis=0), rtol=1e-5)
    np.testing.assert_allclose(std, np.std(members, axis=0, ddof=1), rtol=1e-4, atol=1e-7)
    with pytest.raises(InputError, match="expected a molecules model, found a variants model"):
        load_ensemble(tmp_path, expect="molecules")


def test_members_that_disagree_are_refused(tmp_path):
    a = save_model(_model(0), tmp_path / "a.keras", card=_card())
    b = save_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), tmp_path / "b.keras",
                   card=_card(units=2))
    with pytest.raises(InputError, match="agree on outputs"):
        load_ensemble(f"{a},{b}", expect="variants")
    with pytest.raises(InputError, match="found no file"):
        model_paths(f"{a},{tmp_path / 'missing.keras'}")


def test_combine_geometric_and_dicts():
    p = [np.array([[0.9, 0.1]]), np.array([[0.5, 0.5]])]
    mean, _ = combine(p, how="geometric")
    g = np.sqrt(np.array([0.45, 0.05]))
    np.testing.assert_allclose(mean[0], g / g.sum())
    m, s = combine([{"y": np.array([1.0])}, {"y": np.array([3.0])}])
    assert m["y"][0] == 2.0 and s["y"][0] == pytest.approx(np.sqrt(2))


def _square(x):
    return x * x


def _sleep_then_write(path):
    time.sleep(30)
    with open(path, "w") as f:
        f.write("late")


def test_process_and_thread_maps_keep_order():
    assert process_map(_square, range(7), workers=2) == [i * i for i in range(7)]
    assert process_map(_square, [3], workers=2) == [9]
    assert thread_map(_square, range(5), workers=3) == [0, 1, 4, 9, 16]


def test_child_dies_with_its_parent(tmp_path):
    # The parent is a forked process that starts a child and is SIGKILLed.
    import multiprocessing as mp
    import signal

    flag = tmp_path / "late.txt"
    pid_file = tmp_path / "child.pid"

    def parent():
        child = start_child(_sleep_then_write, (str(flag),), name="t", context="fork")
        pid_file.write_text(str(child.pid))
        time.sleep(60)

    proc = mp.get_context("fork").Process(target=parent)
    proc.start()
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    for _ in range(100):
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the child outlived its killed parent")
    assert not flag.exists()


def test_cached_predictor_does_not_keep_its_model_alive():
    import gc
    import weakref

    m = _model(3)
    predictor(m, batch_size=2)(np.ones((1, 4), "float32"))
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None
