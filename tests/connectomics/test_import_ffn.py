"""import-ffn: a google/ffn convstack_3d checkpoint becomes a deepsci FFN whose output is the checkpoint's.

The checkpoints here are written by the test with ``tf.raw_ops.SaveV2`` under google/ffn's
TF1 variable names (``seed_update/conv{i}_{a,b}/weights`` ...), so no network is needed.
The imported model is checked against a NumPy evaluation of convstack_3d written here
from the architecture's description (not from deepsci's code). Set ``DEEPSCI_FFN_FIB25``
to the prefix of google/ffn's ``models/fib25/model.ckpt-27465036`` to check the real one too.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from deepsci.apps.connectomics.import_ffn import ImportFFNConfig, import_ffn  # noqa: E402
from deepsci.core.errors import ConfigError, InputError  # noqa: E402


def write_checkpoint(prefix: Path, *, depth: int, features: int, seed: int = 0, drop: str | None = None,
                     extra: dict | None = None, step: int = 1234) -> dict:
    """A convstack_3d checkpoint with google/ffn's variable names; returns name -> array."""
    rng = np.random.default_rng(seed)
    names = [f"conv{i}_{ab}" for i in range(depth) for ab in "ab"] + ["conv_lom"]
    values = {}
    for n in names:
        cin = 2 if n == "conv0_a" else features
        shape = (1, 1, 1, features, 1) if n == "conv_lom" else (3, 3, 3, cin, features)
        # Large enough weights that a wrong layer order or kernel layout changes the output by O(1).
        values[f"seed_update/{n}/weights"] = rng.normal(0, 0.4, shape).astype(np.float32)
        values[f"seed_update/{n}/biases"] = rng.normal(0, 0.3, shape[-1]).astype(np.float32)
    values.update(extra or {})
    values.pop(drop, None)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    tensors = [tf.constant(v) for v in values.values()] + [tf.constant(step, tf.int64)]
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=[*values, "global_step"],
                      shape_and_slices=[""] * len(tensors), tensors=tensors)
    return values


def _conv_same(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3-D cross-correlation with zero padding ('SAME'), x (N, Z, Y, X, C), w (kz, ky, kx, C, F)."""
    kz, ky, kx = w.shape[:3]
    pz, py, px = kz // 2, ky // 2, kx // 2
    xp = np.pad(x, ((0, 0), (pz, pz), (py, py), (px, px), (0, 0)))
    n, z, y, xx, _ = x.shape
    out = np.zeros((n, z, y, xx, w.shape[-1]), np.float64)
    for a in range(kz):
        for c in range(ky):
            for d in range(kx):
                out += np.tensordot(xp[:, a:a + z, c:c + y, d:d + xx, :], w[a, c, d], axes=([4], [0]))
    return out + b


def numpy_convstack(v: dict, x: np.ndarray, depth: int) -> np.ndarray:
    """google/ffn's convstack_3d: two convs, depth-1 pre-activation residual modules, relu, 1x1x1, + logits."""
    def conv(net, name):
        return _conv_same(net, v[f"seed_update/{name}/weights"].astype(np.float64),
                          v[f"seed_update/{name}/biases"].astype(np.float64))

    relu = lambda t: np.maximum(t, 0.0)  # noqa: E731
    x = x.astype(np.float64)
    net = conv(relu(conv(x, "conv0_a")), "conv0_b")
    for i in range(1, depth):
        net = net + conv(relu(conv(relu(net), f"conv{i}_a")), f"conv{i}_b")
    return x[..., 1:2] + conv(relu(net), "conv_lom")


def _inputs(fov, n=3, seed=5):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.standard_normal((n, *fov, 1)), rng.uniform(-3, 3, (n, *fov, 1))],
                          -1).astype(np.float32)


def test_import_equals_numpy_evaluation_of_the_checkpoint(tmp_path):
    from deepsci.apps.connectomics.predict import load_flood_filler
    from deepsci.core.models.serialization import load_model

    depth, features, fov = 3, 5, (9, 11, 7)
    v = write_checkpoint(tmp_path / "train" / "model.ckpt-1234", depth=depth, features=features)
    out = tmp_path / "imported.keras"
    # A folder holding the checkpoint is enough; depth and width come from the variable shapes.
    res = import_ffn(ImportFFNConfig(checkpoint=str(tmp_path / "train"), out=str(out), fov_size=fov,
                                     deltas=(2, 3, 2), voxel_size_nm=(8.0, 8.0, 8.0)))
    assert (res["depth"], res["features"], res["global_step"]) == (depth, features, 1234)
    assert res["checkpoint"] == str(tmp_path / "train" / "model.ckpt-1234")
    model, card = load_model(out, expect="connectomics", task="ffn")  # safe_mode=True
    x = _inputs(fov)
    ref = numpy_convstack(v, x, depth)
    got = np.asarray(model(x, training=False), np.float64)
    assert got.shape == (3, *fov, 1)
    scale = float(np.max(np.abs(ref - x[..., 1:2])))
    assert scale > 1.0  # the update is not negligible, so the comparison means something
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * scale)
    # The card: what segment needs (FFN shape, normalisation) and where the weights came from.
    assert card.extra["ffn"] == {"fov_size": list(fov), "deltas": [2, 3, 2], "depth": depth, "features": features}
    assert (card.preprocessing["image_mean"], card.preprocessing["image_stddev"]) == (128.0, 33.0)
    assert card.training["source"]["global_step"] == 1234
    assert card.extra["import_check"]["max_abs_diff"] <= 1e-3
    assert [f["name"] for f in card.data["files"]] == ["model.ckpt-1234.index",
                                                      "model.ckpt-1234.data-00000-of-00001"]
    assert card.input_spec["voxel_size"] == [8.0, 8.0, 8.0]
    # The product's runner takes it like a trained deepsci FFN.
    ff, _ = load_flood_filler(out)
    assert ff.fov == fov and ff.deltas == (2, 3, 2)
    np.testing.assert_allclose(ff(x), ref[..., 0], rtol=0, atol=1e-4 * scale)


def test_wrong_layer_order_would_be_detected(tmp_path):
    """The NumPy reference is sensitive to what an import could get wrong (here: a transposed kernel)."""
    depth, fov = 2, (7, 7, 7)
    v = write_checkpoint(tmp_path / "model.ckpt-1", depth=depth, features=4, seed=3)
    import_ffn(ImportFFNConfig(checkpoint=str(tmp_path / "model.ckpt-1"), out=str(tmp_path / "m.keras"),
                               fov_size=fov, deltas=(2, 2, 2)))
    from deepsci.core.models.serialization import load_model

    model, _ = load_model(tmp_path / "m.keras", expect="connectomics")
    x = _inputs(fov, n=2)
    wrong = dict(v)
    wrong["seed_update/conv1_a/weights"] = np.swapaxes(v["seed_update/conv1_a/weights"], 0, 2).copy()
    got = np.asarray(model(x, training=False), np.float64)
    assert np.max(np.abs(got - numpy_convstack(wrong, x, depth))) > 1e-2
    np.testing.assert_allclose(got, numpy_convstack(v, x, depth), rtol=0, atol=1e-3)


def test_bad_checkpoints_are_one_line_input_errors(tmp_path):
    out = str(tmp_path / "m.keras")
    write_checkpoint(tmp_path / "a" / "model.ckpt-7", depth=3, features=4, drop="seed_update/conv2_b/biases")
    with pytest.raises(InputError, match=r"expected variable seed_update/conv2_b/biases .*found none") as e:
        import_ffn(ImportFFNConfig(checkpoint=str(tmp_path / "a" / "model.ckpt-7"), out=out, fov_size=(9, 9, 9),
                                   deltas=(2, 2, 2)))
    assert "\n" not in str(e.value) and "model.ckpt-7" in str(e.value)
    not_ckpt = tmp_path / "notes.txt"
    not_ckpt.write_text("not a checkpoint\n")
    with pytest.raises(InputError, match="found a file that is not one"):
        import_ffn(ImportFFNConfig(checkpoint=str(not_ckpt), out=out))
    fake = tmp_path / "b" / "model.ckpt-3"
    fake.parent.mkdir()
    Path(f"{fake}.index").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="does not load") as e:
        import_ffn(ImportFFNConfig(checkpoint=str(fake.parent), out=out))
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="holding a TensorFlow checkpoint"):
        import_ffn(ImportFFNConfig(checkpoint=str(tmp_path), out=out))
    # Batch norm (or any variable convstack_3d does not have) cannot be represented: refused.
    write_checkpoint(tmp_path / "c" / "model.ckpt-1", depth=2, features=4,
                     extra={"seed_update/conv1_a/BatchNorm/beta": np.zeros(4, np.float32)})
    with pytest.raises(InputError, match="only convstack_3d variables"):
        import_ffn(ImportFFNConfig(checkpoint=str(tmp_path / "c"), out=out, fov_size=(9, 9, 9), deltas=(2, 2, 2)))
    with pytest.raises(ConfigError, match="odd sizes"):
        import_ffn(ImportFFNConfig(checkpoint=str(tmp_path / "c"), out=out, fov_size=(8, 9, 9), deltas=(2, 2, 2)))
    assert not (tmp_path / "m.keras").exists() and not (tmp_path / "m.card.json").exists()


FIB25 = os.environ.get("DEEPSCI_FFN_FIB25")


@pytest.mark.skipif(not FIB25 or not Path(f"{FIB25}.index").exists(),
                    reason="DEEPSCI_FFN_FIB25 (google/ffn models/fib25/model.ckpt-27465036) not set")
def test_real_fib25_checkpoint_is_imported_exactly(tmp_path):
    from deepsci.core.models.serialization import load_model

    res = import_ffn(ImportFFNConfig(checkpoint=FIB25, out=str(tmp_path / "fib25.keras")))
    assert (res["depth"], res["features"], res["global_step"]) == (12, 32, 27465036)
    model, _ = load_model(tmp_path / "fib25.keras", expect="connectomics")
    reader = tf.train.load_checkpoint(FIB25)
    v = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith("seed_update/")}
    x = _inputs((33, 33, 33), n=1)
    ref = numpy_convstack(v, x, 12)
    np.testing.assert_allclose(np.asarray(model(x, training=False), np.float64), ref, rtol=0,
                               atol=1e-4 * float(np.max(np.abs(ref))))
