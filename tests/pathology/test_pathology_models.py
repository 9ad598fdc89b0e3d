"""Core Inception models as the pathology app builds them: single/multi-scale, save/load, TTA heatmap."""
import numpy as np
import pytest

from deepsci.apps.pathology import heatmap, io, patches, synth
from deepsci.apps.pathology.train import PathologyTrainConfig, build_model, precise_batchnorm


@pytest.mark.parametrize("mags", [(20.0,), (40.0, 20.0, 10.0)])
def test_build_save_load_predict(tmp_path, mags):
    from deepsci.core.models.serialization import load_model, save_model

    cfg = PathologyTrainConfig(slides=".", out_dir=".", width=4,
                               patch=patches.PatchConfig(patch_size=32, magnifications=mags, center_size=8))
    model = build_model(cfg)
    x = [np.random.default_rng(i).uniform(-1, 1, (2, 32, 32, 3)).astype("float32") for i in range(len(mags))]
    inp = x[0] if len(mags) == 1 else x
    y = model(inp, training=False)["tumor"].numpy()
    assert y.shape == (2, 1)
    save_model(model, tmp_path / "m.keras", sidecar={"app": "pathology"})
    back, meta = load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(back(inp, training=False)["tumor"].numpy(), y, rtol=1e-5, atol=1e-5)
    assert meta["app"] == "pathology"


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
    cfg = PathologyTrainConfig(slides=".", out_dir=".", width=4,
                               patch=patches.PatchConfig(patch_size=32, magnifications=mags, center_size=32))
    save_model(build_model(cfg), tmp_path / "m.keras", sidecar={"app": "pathology", "input_spec": {
        "patch_size": 32, "magnifications": list(mags), "center_size": 32}})
    hc = heatmap.HeatmapConfig(model=str(tmp_path / "m.keras"), slides=str(tmp_path / "s.tif"),
                               out_dir=str(tmp_path / "h"), stride=128, batch_size=8, tta=True,
                               scheduler="inline")
    heat, info = heatmap.heatmap_slide(tmp_path / "s.tif", hc.model, hc)
    assert heat.shape == (4, 4) and info["stride"] == 128 and info["tta"]
    on = heat[heat > 0]
    assert on.size == info["tiles"] and ((on > 0) & (on < 1)).all()
    res = heatmap.run_heatmaps(hc)
    assert res["s"]["tiles"] == info["tiles"]
    np.testing.assert_allclose(io.read_heatmap(tmp_path / "h" / "s.heatmap.tif")[0], heat, rtol=1e-5)
