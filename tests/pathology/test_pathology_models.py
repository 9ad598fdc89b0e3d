"""Core Inception models as the pathology app builds them: single/multi-scale, save/load, TTA heatmap."""
import numpy as np
import pytest

from deepsci.apps.pathology import heatmap, io, patches, synth
from deepsci.apps.pathology.model import build_model, model_card
from deepsci.apps.pathology.train import PathologyTrainConfig
from deepsci.core.errors import InputError
from deepsci.core.models.batchnorm import precise_batchnorm


@pytest.mark.parametrize("mags", [(20.0,), (40.0, 20.0, 10.0)])
def test_build_save_load_predict(tmp_path, mags):
    from deepsci.core.models.serialization import load_model, save_model

    cfg = PathologyTrainConfig(slides=".", out=".", width=4,
                               patch=patches.PatchConfig(patch_size=32, magnifications=mags, center_size=8))
    model = build_model(cfg)
    x = [np.random.default_rng(i).uniform(-1, 1, (2, 32, 32, 3)).astype("float32") for i in range(len(mags))]
    inp = x[0] if len(mags) == 1 else x
    y = model(inp, training=False)["tumor"].numpy()
    assert y.shape == (2, 1)
    save_model(model, tmp_path / "m.keras", card=model_card(cfg))
    back, card = load_model(tmp_path / "m.keras", expect="pathology", task="patch-tumour")
    np.testing.assert_allclose(back(inp, training=False)["tumor"].numpy(), y, rtol=1e-5, atol=1e-5)
    assert (card.app, card.task) == ("pathology", "patch-tumour")
    assert card.input_spec["magnifications"] == list(mags) and card.input_spec["center_size"] == 8
    with pytest.raises(InputError, match="expected a molecules model, found a pathology model"):
        load_model(tmp_path / "m.keras", expect="molecules")


def test_precise_batchnorm_sets_exact_batch_statistics():
    import keras

    inputs = keras.Input((4,))
    bn = keras.layers.BatchNormalization()
    model = keras.Model(inputs, bn(inputs))
    data = [np.full((8, 4), v, "float32") for v in (1.0, 3.0)]
    assert precise_batchnorm(model, iter(data)) == 2
    np.testing.assert_allclose(bn.moving_mean.numpy(), 2.0, rtol=1e-6)
    assert bn.momentum == 0.99  # restored


def test_multiscale_heatmap_with_tta(tmp_path):
    from deepsci.core.models.serialization import save_model

    rgb, *_ = synth.render_slide(synth.SynthConfig(width=512, height=512, mpp=0.25, n_tumours=0), seed=2)
    io.write_pyramid_tiff(tmp_path / "s.tif", rgb, mpp=0.25, tile=64, min_size=64)
    mags = (40.0, 20.0, 10.0)
    cfg = PathologyTrainConfig(slides=".", out=".", width=4,
                               patch=patches.PatchConfig(patch_size=32, magnifications=mags, center_size=32))
    save_model(build_model(cfg), tmp_path / "m.keras", card=model_card(cfg))
    hc = heatmap.HeatmapConfig(model=str(tmp_path / "m.keras"), slides=str(tmp_path / "s.tif"),
                               out=str(tmp_path / "h"), stride=128, batch_size=8, tta=True,
                               scheduler="inline")
    heat, info = heatmap.heatmap_slide(tmp_path / "s.tif", hc.model, hc)
    assert heat.shape == (4, 4) and info["stride"] == 128 and info["tta"]
    on = heat[heat > 0]
    assert on.size == info["tiles"] and ((on > 0) & (on < 1)).all()
    res = heatmap.run_heatmaps(hc)
    assert res["s"]["tiles"] == info["tiles"]
    np.testing.assert_allclose(io.read_heatmap(tmp_path / "h" / "s.heatmap.tif")[0], heat, rtol=1e-5)


def test_heatmap_equals_per_tile_prediction_with_tta(tmp_path, tiny_model):
    """Batched row reading + in-graph 8-orientation TTA == the model on each tile's own patches."""
    from deepsci.core.models.serialization import load_model

    rgb, *_ = synth.render_slide(synth.SynthConfig(width=512, height=512, mpp=0.25, n_tumours=1), seed=4)
    io.write_pyramid_tiff(tmp_path / "s.tif", rgb, mpp=0.25, tile=64, min_size=64)
    mags = (40.0, 20.0)
    path = tiny_model(tmp_path / "m.keras", mags, patch=32, center=16)
    hc = heatmap.HeatmapConfig(model=str(path), slides=str(tmp_path / "s.tif"), out=str(tmp_path / "h"),
                               stride=64, batch_size=16, tta=True, scheduler="inline")
    heat, info = heatmap.heatmap_slide(tmp_path / "s.tif", hc.model, hc)
    model, _ = load_model(path)
    cfg = patches.PatchConfig(patch_size=32, magnifications=mags)
    rows, cols = np.nonzero(heat)
    assert 5 < len(rows) == info["tiles"]
    with io.Slide(tmp_path / "s.tif") as s:
        tiles = [patches.read_example(s, (c + 0.5) * 64, (r + 0.5) * 64, cfg)
                 for r, c in zip(rows, cols, strict=True)]
    scales = [np.stack([t[k] for t in tiles]).astype("float32") / 127.5 - 1 for k in range(len(mags))]
    probs = []
    for k in range(4):
        for flip in (False, True):
            x = [np.rot90(v, k, axes=(1, 2)) for v in scales]
            x = [np.ascontiguousarray(v[:, :, ::-1] if flip else v) for v in x]
            probs.append(1 / (1 + np.exp(-model.predict_on_batch(x)["tumor"][:, 0])))
    np.testing.assert_allclose(heat[rows, cols], np.mean(probs, axis=0), atol=1e-5)


def test_dask_workers_split_the_cores(tmp_path, tiny_model):
    """Two local Dask workers each run TensorFlow on cores // 2 threads and agree with inline."""
    import os

    for seed, name in ((1, "a"), (2, "b")):
        rgb, *_ = synth.render_slide(synth.SynthConfig(width=256, height=256, mpp=0.5, n_tumours=0), seed=seed)
        io.write_pyramid_tiff(tmp_path / "slides" / f"{name}.tif", rgb, mpp=0.5, tile=64, min_size=32)
    path = tiny_model(tmp_path / "m.keras", (20.0,))
    common = {"model": str(path), "slides": str(tmp_path / "slides"), "stride": 64, "batch_size": 4}
    dask = heatmap.run_heatmaps(heatmap.HeatmapConfig(out=str(tmp_path / "d"), scheduler="local",
                                                      workers=2, **common))
    inline = heatmap.run_heatmaps(heatmap.HeatmapConfig(out=str(tmp_path / "i"), scheduler="inline",
                                                        **common))
    assert {r["tf_threads"] for r in dask.values()} == {max(1, (os.cpu_count() or 1) // 2)}
    for name in ("a", "b"):
        np.testing.assert_allclose(io.read_heatmap(tmp_path / "d" / f"{name}.heatmap.tif")[0],
                                   io.read_heatmap(tmp_path / "i" / f"{name}.heatmap.tif")[0], atol=1e-5)
        assert dask[name]["score"] == pytest.approx(inline[name]["score"], abs=1e-5)
