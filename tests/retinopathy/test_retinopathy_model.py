"""The DR network: heads, card round trip (safe_mode), ensemble averaging, loss, data."""
import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from deepsci.apps.cli import main
from deepsci.apps.retinopathy.model import build_model, model_card
from deepsci.apps.retinopathy.predict import load_members, predict_arrays
from deepsci.apps.retinopathy.preprocess import PreprocessConfig
from deepsci.apps.retinopathy.train import augment, class_weights, make_loss, make_source
from deepsci.core.errors import InputError
from deepsci.core.models.card import ModelCard
from deepsci.core.models.serialization import load_model, save_model

HEADS = {"grade": 5, "referable": 1, "dme": 1}


def _card(size=48):
    from dataclasses import asdict

    return model_card(size=size, heads=HEADS, variant="small", width=4,
                      preprocessing=asdict(PreprocessConfig(size=size)))


@pytest.fixture(scope="module")
def model():
    return build_model(48, HEADS, width=4)


def test_heads_and_round_trip(model, tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, (2, 48, 48, 3)).astype(np.float32)
    out = model(x, training=False)
    assert out["grade"].shape == (2, 5) and out["referable"].shape == (2, 1)
    save_model(model, tmp_path / "m.keras", card=_card())
    loaded, card = load_model(tmp_path / "m.keras", expect="retinopathy", task="dr-grade")
    assert card.extra["heads"] == HEADS and card.input_spec["shape"] == [48, 48, 3]
    assert card.preprocessing["size"] == 48 and len(card.outputs["grade"]["classes"]) == 5
    again = loaded(x, training=False)
    for k in HEADS:
        np.testing.assert_allclose(again[k], out[k], rtol=1e-5, atol=1e-5)


def test_ensemble_averages_probabilities(model, tmp_path):
    other = build_model(48, HEADS, width=4)
    paths = [tmp_path / "a" / "model.keras", tmp_path / "b" / "model.keras"]
    for m, p in zip((model, other), paths, strict=True):
        save_model(m, p, card=_card())
    x = np.random.default_rng(1).uniform(-1, 1, (3, 48, 48, 3)).astype(np.float32)
    a = predict_arrays(load_members([paths[0]], batch_size=2), x)
    b = predict_arrays(load_members([paths[1]], batch_size=2), x)
    both = predict_arrays(load_members(f"{paths[0]},{paths[1]}", batch_size=2), x)
    for k in ("grade", "referable", "dme"):
        np.testing.assert_allclose(both[k], (a[k] + b[k]) / 2, rtol=1e-5, atol=1e-6)
    # Members are averaged as probabilities: softmax / sigmoid of each one's logits.
    logits = model(x, training=False)
    np.testing.assert_allclose(a["grade"], tf.nn.softmax(logits["grade"]).numpy(), atol=1e-5)
    np.testing.assert_allclose(a["referable"], tf.sigmoid(logits["referable"]).numpy()[:, 0],
                               atol=1e-5)
    np.testing.assert_allclose(both["grade"].sum(1), 1, atol=1e-5)


def test_other_apps_model_is_refused(model, tmp_path, capsys):
    """A molecules card in a retinopathy model folder: one line, exit status 2."""
    mdir = tmp_path / "model"
    save_model(model, mdir / "member_0" / "model.keras",
               card=ModelCard(app="molecules", task="qm9-properties",
                              input_spec={"graph": "bond"}, outputs={"gap": {"unit": "eV"}}))
    (mdir / "ensemble.json").write_text(json.dumps({
        "members": ["member_0/model.keras"],
        "operating_points": {"high_sensitivity": {"name": "high_sensitivity", "threshold": 0.5,
                                                  "sensitivity": 1.0, "specificity": 0.5}}}))
    photo = tmp_path / "eye.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(photo)
    rc = main(["retinopathy", "predict", "--model", str(mdir), str(photo), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0] == (f"error: expected a retinopathy model, found a molecules model "
                      f"({mdir / 'member_0' / 'model.keras'})")
    assert not (tmp_path / "o").exists()
    # A member whose card is missing is refused too, before TensorFlow loads it.
    (mdir / "member_0" / "model.card.json").unlink()
    with pytest.raises(InputError, match="expected the model card model.card.json"):
        load_members(mdir)


def test_class_weights_and_loss():
    gw, rw = class_weights(np.array([0, 0, 0, 2]), np.array([0, 0, 0, 1]))
    assert gw[0] < gw[2] and gw[1] == 0 and np.isclose((gw[[0, 0, 0, 2]]).mean(), 1)
    assert np.isclose(rw[0] * 3 + rw[1], 4)
    loss = make_loss(np.ones(5, np.float32), np.ones(2, np.float32), dme=True)
    y = {"grade": tf.constant([0, 4]), "referable": tf.constant([[0.0], [1.0]]),
         "dme": tf.constant([[-1.0], [1.0]])}
    pred = {"grade": tf.zeros((2, 5)), "referable": tf.zeros((2, 1)), "dme": tf.zeros((2, 1))}
    per = loss(y, pred).numpy()
    # Unknown DME (-1) adds nothing; a known one adds log(2).
    np.testing.assert_allclose(per, [np.log(5) + np.log(2), np.log(5) + 2 * np.log(2)], rtol=1e-5)


def test_source_is_deterministic_and_balanced(tmp_path):
    paths = []
    for i in range(8):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((32, 32, 3), i * 20, np.uint8)).save(p)
        paths.append(str(p))
    df = pd.DataFrame({"cache": paths, "grade": [0] * 6 + [3, 4], "referable": [0] * 6 + [1, 1],
                       "dme": [-1] * 8})
    ctx = tf.distribute.InputContext()
    src = make_source(df, 32, 4, training=True, seed=1, balance="sampling")
    grades = np.concatenate([y["grade"].numpy() for _, y, _ in src(ctx, epoch=0)])
    again = np.concatenate([y["grade"].numpy() for _, y, _ in src(ctx, epoch=0)])
    assert (grades == again).all() and len(grades) == 8
    counts = np.concatenate([np.concatenate([y["grade"].numpy() for _, y, _ in src(ctx, epoch=e)])
                             for e in range(20)])
    assert (counts > 0).mean() > 0.35  # ~2/3 would be 3 or 4 in expectation vs 1/4 unbalanced
    val = make_source(df, 32, 4, training=False)
    x, _, _ = next(iter(val(ctx)))
    assert x.shape == (4, 32, 32, 3) and float(tf.reduce_min(x)) >= -1.0
    # Two replicas, global batch 6: 8 images padded to 12 so no replica gets an
    # empty batch; the padding has weight 0 in evaluation.
    two = tf.distribute.InputContext(num_replicas_in_sync=2)
    batches = list(make_source(df, 32, 6, training=False)(two))
    assert [len(w) for _, _, w in batches] == [3, 3, 3, 3]
    assert np.concatenate([w.numpy() for _, _, w in batches]).sum() == 8
    batches = list(make_source(df, 32, 6, training=True, seed=0)(two))
    assert sum(len(w) for _, _, w in batches) == 12


def test_augment_keeps_shape_and_range():
    img = tf.random.stateless_uniform((40, 40, 3), (1, 2), -1, 1)
    out = augment(img, tf.constant([3, 4], tf.int64))
    assert out.shape == (40, 40, 3)
    assert float(tf.reduce_max(out)) <= 1.0 and float(tf.reduce_min(out)) >= -1.0
    same = augment(img, tf.constant([3, 4], tf.int64))
    np.testing.assert_allclose(out, same)
