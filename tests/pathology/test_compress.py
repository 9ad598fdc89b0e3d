"""``pathology export`` (LiteRT) and ``pathology distill`` through the CLI, on tiny models and slides.

Everything is made once for the module (:func:`lab`): two untrained width-4 teachers and a
two-tower model, a student distilled from the teachers (1 epoch, 2 steps), an int8 export of a
teacher and a float16 export of the two towers. Each quantisation is converted once: int8 on a
one-scale model, float16 on the two towers with the 8-orientation TTA (``none`` is covered by
tests/core/test_compress.py).

Tolerances (heatmap tumour probabilities, LiteRT against the same Keras model): ``int8`` 5e-3
largest, 5e-4 mean (measured 3e-4, 3e-5); ``float16`` with TTA 2e-5 largest, 5e-6 mean
(measured 1.8e-6, 7e-7); float16 without TTA on random tiles 5e-5 (measured 1.2e-5), where
TTA itself moves the probabilities by 2.3e-3.
"""
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from deepsci.apps.cli import main
from deepsci.apps.pathology import compress, io

PATCHES, VAL_PATCHES, CHUNK = 32, 16, 16  # the transfer set: 2 + 1 teacher-cache shards
SAMPLES, CHECK = 32, 16  # export: int8 calibration and held-out check patches


def _save(path, mags=(20.0,), seed=0):
    """An untrained width-4 model with its card -> (path, the Keras model)."""
    import keras

    from deepsci.apps.pathology import patches
    from deepsci.apps.pathology.model import build_model, model_card
    from deepsci.apps.pathology.train import PathologyTrainConfig
    from deepsci.core.models.serialization import save_model

    keras.utils.set_random_seed(seed)
    cfg = PathologyTrainConfig(slides=".", out=".", width=4, patch=patches.PatchConfig(
        patch_size=32, magnifications=mags, center_size=16))
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg)
    save_model(model, path, card=model_card(cfg))
    return path, model


def _heatmap(model, slides, out, *extra):
    """``pathology heatmap`` (inline) -> {slide name: heatmap}."""
    assert main(["pathology", "heatmap", "--model", str(model), "--slides", str(slides), "--out", str(out),
                 "--stride", "32", "--batch-size", "24", "--scheduler", "inline", *extra]) == 0
    return {p.name.split(".")[0]: io.read_heatmap(p)[0] for p in out.glob("*.heatmap.tif")}


def _export(model, out, quantize, slides):
    assert main(["pathology", "export", str(model), "--out", str(out), "--quantize", quantize,
                 "--inputs", str(slides), "--samples", str(SAMPLES), "--check", str(CHECK),
                 "--batch-size", "8"]) == 0
    return out, json.loads(out.with_name(out.stem + ".card.json").read_text())


@pytest.fixture(scope="module")
def lab(slide_dir, tmp_path_factory):
    """Teachers, two towers, the distilled student, Keras heatmaps of the student and teacher a, two exports."""
    work = tmp_path_factory.mktemp("pathology_compress")
    lab = SimpleNamespace(work=work, slides=slide_dir)
    lab.a, lab.ma = _save(work / "ta" / "model.keras", seed=1)
    lab.b, lab.mb = _save(work / "tb" / "model.keras", seed=2)
    lab.towers, lab.mtowers = _save(work / "ms" / "model.keras", mags=(20.0, 10.0), seed=3)
    lab.cache = work / "tcache"
    distill = ["pathology", "distill", "--teacher", f"{lab.a},{lab.b}", "--slides", str(slide_dir),
               "--temperature", "2", "--alpha", "0.6", "--width", "4", "--patches", str(PATCHES),
               "--val-patches", str(VAL_PATCHES), "--epochs", "1", "--batch-size", "16",
               "--bn-batches", "1", "--teacher-cache", str(lab.cache)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compress, "_CHUNK", CHUNK)  # several shards from a tiny transfer set
        assert main([*distill, "--out", str(work / "s1")]) == 0
    lab.student = work / "s1" / "model.keras"
    lab.student_heat = _heatmap(lab.student, slide_dir, work / "h-student")
    lab.heat_a = _heatmap(lab.a, slide_dir, work / "h-a")
    lab.int8, lab.int8_card = _export(lab.a, work / "a_int8.tflite", "int8", slide_dir)
    lab.f16, lab.f16_card = _export(lab.towers, work / "towers_f16.tflite", "float16", slide_dir)
    return lab


def _close(got, want, atol, mean_tol):
    assert got.keys() == want.keys() == {"tumor_001", "normal_001"}
    for name, w in want.items():
        tissue = w > 0
        d = np.abs(got[name] - w)[tissue]
        assert tissue.sum() > 100 and d.max() <= atol and d.mean() <= mean_tol, (name, d.max(), d.mean())
        assert (got[name][~tissue] == 0).all()


def _export_record(out, card, quantize, n_inputs):
    lite = card["extra"]["litert"]
    assert (card["app"], lite["quantize"], lite["batch_size"], lite["n_inputs"]) == ("pathology", quantize, 8,
                                                                                     n_inputs)
    run = json.loads(out.with_name(out.name + ".run.json").read_text())["results"]
    assert run["check_rows"] == CHECK and run["measure"] == compress.EXPORT.measure
    assert run["calibration_rows"] == (SAMPLES if quantize == "int8" else 0)
    assert lite["difference"] == run["difference"] <= compress.TOLERANCE
    return lite


def test_int8_export_runs_in_heatmap_like_keras(lab):
    _export_record(lab.int8, lab.int8_card, "int8", 1)
    _close(_heatmap(lab.int8, lab.slides, lab.work / "h-int8"), lab.heat_a, 5e-3, 5e-4)


def test_two_tower_float16_export_with_tta_in_a_dask_worker_like_keras(lab):
    """Two towers (dict inputs scale0/scale1), the 8-orientation TTA in NumPy around LiteRT, and a
    local Dask worker that loads the .tflite by path itself, against Keras' TTA in the graph."""
    from deepsci.apps.pathology import predict
    from deepsci.apps.pathology.heatmap import HeatmapConfig, run_heatmaps

    assert _export_record(lab.f16, lab.f16_card, "float16", 2)["difference"] < 1e-4
    want = _heatmap(lab.towers, lab.slides, lab.work / "h-towers", "--tta")
    out = lab.work / "h-f16-dask"
    results = run_heatmaps(HeatmapConfig(slides=str(lab.slides), out=str(out), model=str(lab.f16), stride=32,
                                         batch_size=24, tta=True, scheduler="local", workers=1, threads=1))
    assert all(r["worker_pid"] != os.getpid() for r in results.values())  # ran in the worker
    assert json.loads((out / "run.json").read_text())["config"]["model"] == str(lab.f16)
    _close({p.name.split(".")[0]: io.read_heatmap(p)[0] for p in out.glob("*.heatmap.tif")}, want, 2e-5, 5e-6)

    # TTA changed the result (the check above says something), and without it LiteRT's
    # plain step gives the Keras model's own probabilities
    rng = np.random.default_rng(0)
    xs = [rng.integers(0, 256, (13, 32, 32, 3), dtype=np.uint8) for _ in range(2)]
    plain = predict.engine(str(lab.f16), 8, False, None)[0].predict(xs)
    tta = predict.engine(str(lab.f16), 8, True, None)[0].predict(xs)
    logits = lab.mtowers({f"scale{i}": predict.scale_tiles(x) for i, x in enumerate(xs)}, training=False)
    np.testing.assert_allclose(plain, _sigmoid(logits["tumor"])[:, 0], atol=5e-5)
    assert plain.shape == tta.shape == (13,) and np.abs(plain - tta).max() > 5e-4
    predict.drop_cached_models()


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def test_distill_from_two_members_and_the_teacher_cache_resumes(lab):
    s1 = lab.work / "s1"
    card = json.loads((s1 / "model.card.json").read_text())
    entry = card["training"]["distillation"]
    assert entry["teacher"] == [str(lab.a), str(lab.b)] and (entry["temperature"], entry["alpha"]) == (2.0, 0.6)
    assert card["extra"]["width"] == 4 and card["input_spec"]["patch_size"] == 32
    run = json.loads((s1 / "run.json").read_text())
    assert run["command"] == "pathology distill" and run["results"]["teacher_shards_computed"] == 3

    # the cached targets are the members' mean probability at T on the transfer set's patches
    pool = np.concatenate([np.load(p) for p in sorted((s1 / "patch-cache").glob("patches-*.npy"),
                                                       key=lambda p: -len(np.load(p, mmap_mode="r")))])
    assert len(pool) == PATCHES + VAL_PATCHES
    x = pool[:, 0].astype(np.float32) / 255.0 * 2.0 - 1.0
    want = (_sigmoid(lab.ma(x, training=False)["tumor"] / 2.0) + _sigmoid(lab.mb(x, training=False)["tumor"] / 2.0)) / 2
    shards = sorted(lab.cache.glob("shard-*.npz"))
    got = np.concatenate([np.load(s)["tumor"] for s in shards])
    np.testing.assert_allclose(got, want, atol=1e-5)

    # resume: only the missing shard is computed again (the chunks distill feeds), and it comes back the same
    from deepsci.core.compress import DistillSettings, teacher_targets

    kept = {s.name: s.stat().st_mtime_ns for s in shards}
    shards[1].unlink()
    settings = DistillSettings(teacher=f"{lab.a},{lab.b}", temperature=2.0, alpha=0.6)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compress, "_CHUNK", CHUNK)
        chunks = list(compress._chunks([pool[:PATCHES], pool[PATCHES:]]))
    again, _ = teacher_targets(settings, chunks, app="pathology", task="patch-tumour", cache_dir=lab.cache,
                               heads=compress.HEADS)
    assert {s.name: s.stat().st_mtime_ns for s in sorted(lab.cache.glob("shard-*.npz"))
            if s.name != shards[1].name} == {n: t for n, t in kept.items() if n != shards[1].name}
    np.testing.assert_allclose(again["tumor"], got, atol=1e-5)

    # the student is a normal model: heatmap takes it, and its probabilities are the model's own
    heat = lab.student_heat["tumor_001"]
    _, meta = io.read_heatmap(lab.work / "h-student" / "tumor_001.heatmap.tif")
    probe = heat[heat > 0]
    assert meta["tiles"] == probe.size and meta["tiles"] > 100
    assert np.all(probe < 1) and not np.allclose(probe, probe[0])


def test_bad_tflite_files_and_other_apps_are_one_line_errors(lab, tmp_path, one_line_error):
    src, card = lab.int8, lab.int8_card
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 64)
    (tmp_path / "bad.card.json").write_text(json.dumps(card))
    heat = ["pathology", "heatmap", "--slides", str(lab.slides), "--scheduler", "inline"]
    msg = one_line_error([*heat, "--model", str(bad), "--out", str(tmp_path / "h1")])
    assert "LiteRT model" in msg and "bad.tflite" in msg
    foreign = tmp_path / "mol.tflite"
    foreign.write_bytes(src.read_bytes())
    (tmp_path / "mol.card.json").write_text(json.dumps({**card, "app": "molecules", "task": "qm9-properties"}))
    msg = one_line_error([*heat, "--model", str(foreign), "--out", str(tmp_path / "h2")])
    assert "expected a pathology model, found a molecules model" in msg
    assert not (tmp_path / "h1").exists() and not (tmp_path / "h2").exists()
    # export and distill refuse another app's model the same way, and a .tflite as a source
    mol_keras = tmp_path / "k" / "model.keras"
    mol_keras.parent.mkdir()
    shutil.copy(lab.a, mol_keras)
    kcard = json.loads(lab.a.with_name("model.card.json").read_text())
    (tmp_path / "k" / "model.card.json").write_text(json.dumps({**kcard, "app": "molecules"}))
    assert "molecules" in one_line_error(["pathology", "export", str(mol_keras), "--out",
                                          str(tmp_path / "x.tflite"), "--inputs", str(lab.slides)])
    assert ".keras" in one_line_error(["pathology", "export", str(src), "--out", str(tmp_path / "y.tflite")])
    assert "molecules" in one_line_error(["pathology", "distill", "--teacher", str(mol_keras), "--slides",
                                          str(lab.slides), "--out", str(tmp_path / "d")])
