"""The shared export and distill runners: held-out check, refusals, teacher targets and losses."""
import json

import keras
import numpy as np
import pytest

from deepsci.core.compress import (
    DistillSettings,
    ExportConfig,
    ExportSpec,
    batches_of,
    distill_loss_fn,
    run_export,
    teacher_targets,
)
from deepsci.core.distill import distillation_loss, regression_distillation_loss
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.models.card import ModelCard
from deepsci.core.models.serialization import save_model


def _model(seed, k=4):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu")(inp)
    return keras.Model(inp, {"cls": keras.layers.Dense(k)(h), "val": keras.layers.Dense(1)(h)})


def _saved(tmp_path, seed, name):
    path = tmp_path / name / "model.keras"
    path.parent.mkdir(parents=True)
    save_model(_model(seed), path, card=ModelCard(app="toy", task="t", input_spec={"x": [6]}))
    return path


def _draw(source, n, seed, card):
    return np.random.default_rng(seed).normal(size=(n, 6)).astype("float32")


def _disagree(ref, got):
    return float(np.mean(np.argmax(ref["cls"], -1) != np.argmax(got["cls"], -1)))


SPEC = ExportSpec(app="toy", task="t", draw=_draw, compare=_disagree, measure="class disagreement",
                  tolerance=0.2)


def test_export_checks_on_held_out_rows_and_records_the_run(tmp_path):
    model = _saved(tmp_path, 1, "a")
    out = tmp_path / "m.tflite"
    cfg = ExportConfig(model=str(model), out=out, quantize="none", samples=8, check=24,
                       batch_size=4).validate()
    report = run_export(cfg, SPEC)
    # float32 LiteRT reproduces the Keras model: no argmax flips on 24 held-out rows.
    assert report["difference"] == 0.0 and report["check_rows"] == 24
    assert report["calibration_rows"] == 0  # only int8 calibrates
    card = json.loads(out.with_name("m.card.json").read_text())
    assert card["extra"]["litert"]["quantize"] == "none" and card["app"] == "toy"
    run = json.loads((tmp_path / "m.tflite.run.json").read_text())
    assert run["results"]["measure"] == "class disagreement"
    with pytest.raises(InputError, match="existing"):
        run_export(cfg, SPEC)
    int8 = run_export(ExportConfig(model=str(model), out=tmp_path / "q.tflite", samples=32,
                                   check=16, batch_size=4).validate(), SPEC)
    assert int8["calibration_rows"] == 32 and int8["check_rows"] == 16


def test_export_refuses_ensembles_and_bad_options(tmp_path):
    a, b = _saved(tmp_path, 1, "a"), _saved(tmp_path, 2, "b")
    with pytest.raises(ConfigError, match="ensemble of 2"):
        run_export(ExportConfig(model=f"{a},{b}", out=tmp_path / "e.tflite").validate(), SPEC)
    for bad in ({"quantize": "int4"}, {"out": tmp_path / "x.keras"}, {"samples": 0},
                {"batch_size": 0}, {"tolerance": -1.0}):
        with pytest.raises(ConfigError):
            ExportConfig(model=str(a), **{"out": tmp_path / "o.tflite", **bad}).validate()
    assert not list(tmp_path.glob("*.tflite"))


def test_teacher_targets_average_the_members_and_the_loss_combines_heads(tmp_path):
    a, b = _saved(tmp_path, 1, "a"), _saved(tmp_path, 2, "b")
    x = _draw(None, 10, 3, None)
    settings = DistillSettings(teacher=f"{a},{b}", temperature=2.0, alpha=0.5).validate()
    heads = {"cls": "softmax", "val": "mean"}
    targets, paths = teacher_targets(settings, [x[:6], x[6:]], app="toy", task="t",
                                     cache_dir=tmp_path / "cache", heads=heads, batch_size=4)
    assert paths == [a, b]
    ma, mb = keras.saving.load_model(a), keras.saving.load_model(b)
    ya, yb = ma(x), mb(x)

    def soft(z):
        e = np.exp(z / 2.0 - (z / 2.0).max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    want = (soft(ya["cls"].numpy()) + soft(yb["cls"].numpy())) / 2
    np.testing.assert_allclose(targets["cls"], want, atol=1e-5)
    np.testing.assert_allclose(targets["val"], (ya["val"].numpy() + yb["val"].numpy()) / 2, atol=1e-5)
    # Cached: a second call computes nothing new and returns the same targets.
    again, _ = teacher_targets(settings, [x[:6], x[6:]], app="toy", task="t",
                               cache_dir=tmp_path / "cache", heads=heads)
    np.testing.assert_array_equal(again["cls"], targets["cls"])

    loss = distill_loss_fn(heads, settings, weights={"val": 2.0})
    labels = {"cls": np.arange(10) % 4, "val": np.ones((10, 1), "float32")}
    pred = {"cls": ya["cls"], "val": ya["val"]}
    got = loss({"label": labels, "teacher": targets}, pred).numpy()
    want = (distillation_loss(labels["cls"], pred["cls"], targets["cls"], temperature=2.0, alpha=0.5)
            + 2.0 * regression_distillation_loss(labels["val"], pred["val"], targets["val"], alpha=0.5))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)
    assert got.shape == (10,)


def test_batches_are_full_size_and_cover_every_row():
    x = {"a": np.arange(10)}
    got = list(batches_of(x, 4))
    assert [len(b["a"]) for b in got] == [4, 4, 4]
    assert set(np.concatenate([b["a"] for b in got])) == set(range(10))


def test_distill_settings_need_a_teacher_and_valid_numbers():
    for bad in ({"teacher": ""}, {"teacher": "a", "temperature": 0.0}, {"teacher": "a", "alpha": 1.5}):
        with pytest.raises(ConfigError):
            DistillSettings(**bad).validate()
