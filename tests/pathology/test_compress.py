"""``pathology export`` (LiteRT) and ``pathology distill`` through the CLI, on tiny models and slides.

Tolerances (heatmap tumour probabilities, LiteRT against the same Keras model, tiny untrained
width-4 Inceptions): ``none`` 1e-5; ``float16`` 1e-4 largest, 2e-5 mean; ``int8`` 5e-3 largest,
5e-4 mean (measured 9e-4 and 8e-5).
"""
import json

import numpy as np
import pytest

from deepsci.apps.cli import main
from deepsci.apps.pathology import compress, io


def _save(path, mags=(20.0,), width=4, seed=0, patch=32):
    import keras

    from deepsci.apps.pathology import patches
    from deepsci.apps.pathology.model import build_model, model_card
    from deepsci.apps.pathology.train import PathologyTrainConfig
    from deepsci.core.models.serialization import save_model

    keras.utils.set_random_seed(seed)
    cfg = PathologyTrainConfig(slides=".", out=".", width=width, patch=patches.PatchConfig(
        patch_size=patch, magnifications=mags, center_size=16))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(build_model(cfg), path, card=model_card(cfg))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("pathology_compress")


@pytest.fixture(scope="module")
def keras_model(work):
    return _save(work / "m" / "model.keras")


def _heat(out, name="tumor_001"):
    return io.read_heatmap(out / f"{name}.heatmap.tif")[0]


def _heatmap(model, slides, out, *extra):
    assert main(["pathology", "heatmap", "--model", str(model), "--slides", str(slides), "--out", str(out),
                 "--stride", "32", "--batch-size", "24", *extra]) == 0
    return {p.name.split(".")[0]: _heat(out, p.name.split(".")[0]) for p in out.glob("*.heatmap.tif")}


@pytest.fixture(scope="module")
def keras_heat(keras_model, slide_dir, work):
    return _heatmap(keras_model, slide_dir, work / "h-keras", "--scheduler", "inline")


def _export(model, out, quantize, slides, *extra):
    assert main(["pathology", "export", str(model), "--out", str(out), "--quantize", quantize,
                 "--inputs", str(slides), "--samples", "48", "--check", "32", "--batch-size", "8",
                 *extra]) == 0
    return json.loads(out.with_name(out.stem + ".card.json").read_text())


@pytest.fixture(scope="module")
def exports(keras_model, slide_dir, work):
    return {q: (work / f"m_{q}.tflite", _export(keras_model, work / f"m_{q}.tflite", q, slide_dir))
            for q in ("int8", "float16")}


@pytest.mark.parametrize("quantize,atol,mean_tol", [("int8", 5e-3, 5e-4), ("float16", 1e-4, 2e-5)])
def test_exported_model_runs_in_heatmap_like_keras(exports, keras_heat, slide_dir, work, quantize, atol,
                                                   mean_tol):
    out, card = exports[quantize]
    lite = card["extra"]["litert"]
    assert (card["app"], lite["quantize"], lite["batch_size"]) == ("pathology", quantize, 8)
    run = json.loads(out.with_name(out.name + ".run.json").read_text())["results"]
    assert run["check_rows"] == 32 and run["measure"] == compress.EXPORT.measure
    assert run["calibration_rows"] == (48 if quantize == "int8" else 0)
    assert lite["difference"] == run["difference"] <= compress.TOLERANCE
    got = _heatmap(out, slide_dir, work / f"h-{quantize}", "--scheduler", "inline")
    assert got.keys() == keras_heat.keys() == {"tumor_001", "normal_001"}
    for name, want in keras_heat.items():
        tissue = want > 0
        d = np.abs(got[name] - want)[tissue]
        assert tissue.sum() > 100 and d.max() <= atol and d.mean() <= mean_tol, (name, d.max(), d.mean())
        assert (got[name][~tissue] == 0).all()
    if quantize == "float16":
        # a local Dask cluster: the worker loads the .tflite by path itself
        dask = _heatmap(out, slide_dir, work / "h-f16-dask", "--scheduler", "local", "--workers", "1",
                        "--threads", "1")
        for name in got:
            np.testing.assert_allclose(dask[name], got[name], atol=1e-6)
        assert json.loads((work / "h-f16-dask" / "run.json").read_text())["config"]["model"] == str(out)


def test_multiscale_towers_export_and_tta_match_keras(slide_dir, work):
    """Two towers (dict inputs scale0/scale1) and the 8-orientation TTA in NumPy around LiteRT."""
    from deepsci.apps.pathology import predict

    model = _save(work / "ms" / "model.keras", mags=(20.0, 10.0), seed=3)
    out = work / "ms.tflite"
    card = _export(model, out, "none", slide_dir)
    assert card["extra"]["litert"]["n_inputs"] == 2 and card["extra"]["litert"]["difference"] < 1e-5
    rng = np.random.default_rng(0)
    xs = [rng.integers(0, 256, (13, 32, 32, 3), dtype=np.uint8) for _ in range(2)]
    for tta in (False, True):
        want = predict.engine(str(model), 8, tta, None)[0].predict(xs)
        got = predict.engine(str(out), 8, tta, None)[0].predict(xs)
        assert got.shape == (13,)
        np.testing.assert_allclose(got, want, atol=1e-5)
    plain = predict.engine(str(out), 8, False, None)[0].predict(xs)
    assert np.abs(plain - got).max() > 1e-4  # TTA changed the result: the check above says something
    predict.drop_cached_models()


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def test_distill_from_two_members_and_the_teacher_cache_resumes(slide_dir, work, monkeypatch):
    import keras

    monkeypatch.setattr(compress, "_CHUNK", 32)  # several shards from a tiny transfer set
    a, b = _save(work / "ta" / "model.keras", seed=1), _save(work / "tb" / "model.keras", seed=2)
    cache = work / "tcache"
    args = ["pathology", "distill", "--teacher", f"{a},{b}", "--slides", str(slide_dir),
            "--temperature", "2", "--alpha", "0.6", "--width", "4", "--patches", "64", "--val-patches", "32",
            "--epochs", "1", "--batch-size", "16", "--bn-batches", "1", "--teacher-cache", str(cache)]
    assert main([*args, "--out", str(work / "s1")]) == 0
    student = work / "s1" / "model.keras"
    card = json.loads((work / "s1" / "model.card.json").read_text())
    entry = card["training"]["distillation"]
    assert entry["teacher"] == [str(a), str(b)] and (entry["temperature"], entry["alpha"]) == (2.0, 0.6)
    assert card["extra"]["width"] == 4 and card["input_spec"]["patch_size"] == 32
    run = json.loads((work / "s1" / "run.json").read_text())
    assert run["command"] == "pathology distill" and run["results"]["teacher_shards_computed"] == 3

    # the cached targets are the members' mean probability at T on the transfer set's patches
    pool = np.concatenate([np.load(p) for p in sorted((work / "s1" / "patch-cache").glob("patches-*.npy"),
                                                       key=lambda p: -len(np.load(p, mmap_mode="r")))])
    x = pool[:, 0].astype(np.float32) / 255.0 * 2.0 - 1.0
    ma, mb = keras.saving.load_model(a), keras.saving.load_model(b)
    want = (_sigmoid(ma(x, training=False)["tumor"] / 2.0) + _sigmoid(mb(x, training=False)["tumor"] / 2.0)) / 2
    shards = sorted(cache.glob("shard-*.npz"))
    got = np.concatenate([np.load(s)["tumor"] for s in shards])
    np.testing.assert_allclose(got, want, atol=1e-5)

    # resume: only the missing shard is computed again (the chunks distill feeds), and it comes back the same
    from deepsci.core.compress import DistillSettings, teacher_targets

    kept = {s.name: s.stat().st_mtime_ns for s in shards}
    shards[1].unlink()
    settings = DistillSettings(teacher=f"{a},{b}", temperature=2.0, alpha=0.6)
    again, _ = teacher_targets(settings, list(compress._chunks([pool[:64], pool[64:]])),
                               app="pathology", task="patch-tumour", cache_dir=cache, heads=compress.HEADS)
    assert {s.name: s.stat().st_mtime_ns for s in sorted(cache.glob("shard-*.npz"))
            if s.name != shards[1].name} == {n: t for n, t in kept.items() if n != shards[1].name}
    np.testing.assert_allclose(again["tumor"], got, atol=1e-6)

    # the student is a normal model: heatmap takes it, and its probabilities are the model's own
    heat = _heatmap(student, slide_dir, work / "h-student", "--scheduler", "inline")
    sm = keras.saving.load_model(student)
    hm, meta = io.read_heatmap(work / "h-student" / "tumor_001.heatmap.tif")
    assert meta["tiles"] == int((heat["tumor_001"] > 0).sum()) and meta["tiles"] > 100
    probe = _sigmoid(sm(x[:4], training=False)["tumor"])[:, 0]
    assert np.all((probe > 0) & (probe < 1)) and not np.allclose(probe, probe[0])


def test_bad_tflite_files_and_other_apps_are_one_line_errors(exports, slide_dir, work, tmp_path,
                                                           one_line_error):
    src, card = exports["int8"]
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 64)
    (tmp_path / "bad.card.json").write_text(json.dumps(card))
    heat = ["pathology", "heatmap", "--slides", str(slide_dir), "--scheduler", "inline"]
    msg = one_line_error([*heat, "--model", str(bad), "--out", str(tmp_path / "h1")])
    assert "LiteRT model" in msg and "bad.tflite" in msg
    foreign = tmp_path / "mol.tflite"
    foreign.write_bytes(src.read_bytes())
    (tmp_path / "mol.card.json").write_text(json.dumps({**card, "app": "molecules", "task": "qm9-properties"}))
    msg = one_line_error([*heat, "--model", str(foreign), "--out", str(tmp_path / "h2")])
    assert "expected a pathology model, found a molecules model" in msg
    assert not (tmp_path / "h1").exists() and not (tmp_path / "h2").exists()
    # export and distill refuse another app's model the same way, and a .tflite as a source
    mol_keras = _save(tmp_path / "k" / "model.keras")
    kcard = json.loads((tmp_path / "k" / "model.card.json").read_text())
    (tmp_path / "k" / "model.card.json").write_text(json.dumps({**kcard, "app": "molecules"}))
    assert "molecules" in one_line_error(["pathology", "export", str(mol_keras), "--out",
                                          str(tmp_path / "x.tflite"), "--inputs", str(slide_dir)])
    assert ".keras" in one_line_error(["pathology", "export", str(src), "--out", str(tmp_path / "y.tflite")])
    assert "molecules" in one_line_error(["pathology", "distill", "--teacher", str(mol_keras), "--slides",
                                          str(slide_dir), "--out", str(tmp_path / "d")])
