"""Issue #19: every way a user's file or option reaches ``deepsci connectomics`` fails in one line.

Each case runs the CLI in-process through the ``bad_input`` fixture (tests/conftest.py):
exit 2, one ``error:`` line, no traceback, and the data folder (inputs and would-be outputs)
exactly as it was. The inputs are built once per module, tiny; the model is a copy of the
shipped synthetic FFN (no training).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Small volumes, models and JSON files, good and bad, in one folder."""
    import h5py

    from deepsci.apps.connectomics.io import write_n5, write_volume
    from deepsci.core.models.registry import resolve_model

    d = tmp_path_factory.mktemp("cx_bad")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (20, 24, 24), dtype=np.uint8)
    lab = (np.arange(20 * 24 * 24).reshape(20, 24, 24) // 1000).astype(np.uint32)
    write_volume(d / "vol.zarr", {"image": img, "labels": lab}, voxel_size=(8, 8, 8))
    write_volume(d / "neg.zarr", {"image": img, "labels": lab.astype(np.int32) - 3})
    write_volume(d / "flt.zarr", {"image": img, "labels": lab.astype(np.float32)})
    write_volume(d / "trunc.zarr", {"image": img}, chunks=(8, 8, 8))
    chunk = sorted(p for p in (d / "trunc.zarr" / "image").rglob("*") if p.is_file() and p.name != "zarr.json")[0]
    chunk.write_bytes(chunk.read_bytes()[: len(chunk.read_bytes()) // 2])
    write_volume(d / "badvs.zarr", {"image": img}, voxel_size=(8, 8, 8))
    meta = json.loads((d / "badvs.zarr" / "image" / "zarr.json").read_text())
    meta["attributes"]["voxel_size"] = [0, 8, 8]
    (d / "badvs.zarr" / "image" / "zarr.json").write_text(json.dumps(meta))
    (d / "junk.zarr").mkdir()
    (d / "junk.zarr" / "zarr.json").write_text("{not json")
    with h5py.File(d / "v.h5", "w") as f:
        f["img"] = img
        f["flat"] = img[0]
    (d / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    (d / "slices").mkdir()
    (d / "slices" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (d / "stack.tif").write_bytes(b"II*\0 garbage")
    (d / "file.txt").write_text("a user's file\n")
    (d / "userdir").mkdir()
    (d / "userdir" / "notes.txt").write_text("the user's own folder\n")
    # Models: the shipped FFN, a copy without its card, a corrupt one with a card, another app's.
    ffn = Path(resolve_model("connectomics-synthetic-ffn", app="connectomics", task="ffn", say=None))
    (d / "ffn").mkdir()
    shutil.copy(ffn, d / "ffn" / "model.keras")
    card = json.loads((ffn.parent / "model.card.json").read_text())
    (d / "ffn" / "model.card.json").write_text(json.dumps(card))
    (d / "nocard").mkdir()
    shutil.copy(ffn, d / "nocard" / "model.keras")
    (d / "corrupt").mkdir()
    (d / "corrupt" / "model.keras").write_bytes(b"PK\x03\x04 this is not a zip archive")
    (d / "corrupt" / "model.card.json").write_text(json.dumps(card))
    (d / "other").mkdir()
    shutil.copy(ffn, d / "other" / "model.keras")
    (d / "other" / "model.card.json").write_text(json.dumps({**card, "app": "molecules", "task": "property"}))
    (d / "textmodel").mkdir()
    (d / "textmodel" / "model.keras").write_text("just text\n")
    (d / "textmodel" / "model.card.json").write_text(json.dumps({**card, "extra": {}}))
    (d / "badcard").mkdir()
    shutil.copy(ffn, d / "badcard" / "model.keras")
    (d / "badcard" / "model.card.json").write_text("{\"app\": ")
    # Pair classifiers: not JSON, wrong shape, a forest whose trees point nowhere.
    (d / "clf_text.json").write_text("not json at all")
    (d / "clf_list.json").write_text("[1, 2, 3]")
    (d / "clf_trees.json").write_text(json.dumps({"features": ["bmap_mean"], "kind": "forest",
                                                  "params": {"trees": [{"left": [5], "right": [1],
                                                                        "feature": [0], "threshold": [0.5],
                                                                        "p": [0.5]}]}}))
    # OME-Zarr metadata of the wrong shape; an N5 dataset with an unknown codec; an HDF5 table that is no table.
    write_volume(d / "ome.zarr", {"0": img})
    meta = json.loads((d / "ome.zarr" / "zarr.json").read_text())
    meta["attributes"]["ome"] = {"multiscales": [{"datasets": "0"}]}
    (d / "ome.zarr" / "zarr.json").write_text(json.dumps(meta))
    write_n5(d / "v.n5", "img", img, block=(8, 8, 8), compression="raw")
    n5meta = json.loads((d / "v.n5" / "img" / "attributes.json").read_text())
    (d / "v.n5" / "img" / "attributes.json").write_text(json.dumps({**n5meta, "compression": {"type": "lz9"}}))
    write_n5(d / "w.n5", "img", img, block=(8, 8, 8), compression="raw")
    (d / "w.n5" / "img" / "attributes.json").write_text(json.dumps({**n5meta, "dimensions": "many"}))
    with h5py.File(d / "gt.h5", "w") as f:
        f["stack"] = lab
        f["transforms"] = np.zeros((3, 3), np.uint32)
    (d / "mixed").mkdir()
    from PIL import Image

    Image.fromarray(img[0]).save(d / "mixed" / "0.png")
    Image.fromarray(img[0, :10]).save(d / "mixed" / "1.png")
    # A recorded run of another command, for --config.
    (d / "molrun.json").write_text(json.dumps({"schema": "deepsci.run/1", "command": "molecules train",
                                               "config_class": "x:MoleculesTrainRun", "config": {}}))
    return d


def _seg(d, *extra, model=None):
    return ["connectomics", "segment", "--preset", "ffn", "--model", model or d / "ffn" / "model.keras",
            "--image", f"{d}/vol.zarr:image", "--scheduler", "inline", "--out", d / "out", *extra]


def _synth(out, *extra):
    return ["connectomics", "synth", out, "--shape", "8,12,12", "--neurites", "2", *extra]


def _base(d, image, *extra):
    return ["connectomics", "baseline", "--image", image, "--out", d / "out", *extra]


def _eval(d, labels, seg, *extra):
    return ["connectomics", "evaluate", "--labels", labels, "--seg", seg, "--out", d / "out", *extra]


def _agglo(d, image, labels, *extra):
    return ["connectomics", "train-agglo", "--image", image, "--labels", labels, "--out", d / "out", *extra]


def _train(d, image, labels, *extra):
    return ["connectomics", "train", "--image", image, "--labels", labels, "--out", d / "out",
            "--preset", "tiny", "--epochs", "1", "--steps-per-epoch", "1", "--no-tensorboard", *extra]


# (id, argv builder taking the data folder, regex the error line must match)
CASES = [
    # -- output locations: a user's file or folder is never replaced, impossible locations refused
    ("synth-out-is-file", lambda d: _synth(d / "file.txt"), r"found a file"),
    ("synth-out-under-file", lambda d: _synth(d / "file.txt" / "v.zarr"), r"found a file"),
    ("synth-out-user-folder", lambda d: _synth(d / "userdir"), r"userdir"),
    ("synth-out-existing-zarr", lambda d: _synth(d / "vol.zarr"), r"--overwrite"),
    ("synth-out-user-folder-overwrite", lambda d: _synth(d / "userdir", "--overwrite"), r"other files"),
    ("baseline-out-is-file", lambda d: [*_base(d, f"{d}/vol.zarr:image")[:-1], d / "file.txt"], r"found a file"),
    ("segment-out-under-file", lambda d: [*_seg(d)[:-1], d / "file.txt" / "o"], r"found a file"),
    # -- numbers out of range
    ("synth-shape-0", lambda d: _synth(d / "s.zarr", "--shape", "0,12,12"), r"--shape"),
    ("synth-neurites-0", lambda d: _synth(d / "s.zarr", "--neurites", "0"), r"--neurites"),
    ("synth-radius-neg", lambda d: _synth(d / "s.zarr", "--radius", "-1,2"), r"--radius"),
    ("synth-voxel-size-0", lambda d: _synth(d / "s.zarr", "--voxel-size", "0,1,1"), r"--voxel-size"),
    ("synth-gap-neg", lambda d: _synth(d / "s.zarr", "--gap", "-1"), r"--gap"),
    ("synth-shape-text", lambda d: _synth(d / "s.zarr", "--shape", "a,b,c"), r"--shape"),
    ("segment-batch-size-0", lambda d: _seg(d, "--batch-size", "0"), r"--batch-size >= 1"),
    ("segment-block-size-0", lambda d: _seg(d, "--block-size", "0,16,16"), r"--block-size"),
    ("segment-workers-0", lambda d: _seg(d, "--workers", "0"), r"--workers"),
    ("segment-voxel-size-neg", lambda d: _seg(d, "--voxel-size", "-8,8,8"), r"--voxel-size"),
    ("segment-threshold-1", lambda d: _seg(d, "--segment-threshold", "1"), r"--segment-threshold"),
    ("segment-overlap-neg", lambda d: _seg(d, "--overlap", "-1,0,0"), r"--overlap"),
    ("segment-preset-unknown", lambda d: _seg(d, "--preset", "magic"), r"--preset"),
    ("baseline-voxel-size-0", lambda d: _base(d, f"{d}/vol.zarr:image", "--voxel-size", "0,8,8"), r"--voxel-size"),
    ("baseline-sigma-neg", lambda d: _base(d, f"{d}/vol.zarr:image", "--sigma", "-1"), r"--sigma"),
    ("baseline-min-distance-0", lambda d: _base(d, f"{d}/vol.zarr:image", "--min-distance", "0"),
     r"--min-distance"),
    ("evaluate-voxel-size-0", lambda d: _eval(d, f"{d}/vol.zarr:labels", f"{d}/vol.zarr:labels",
                                              "--voxel-size", "1,0,1"), r"--voxel-size"),
    ("evaluate-min-overlap-0", lambda d: _eval(d, f"{d}/vol.zarr:labels", f"{d}/vol.zarr:labels",
                                               "--min-overlap", "0"), r"--min-overlap"),
    ("train-agglo-voxel-size-0", lambda d: _agglo(d, f"{d}/vol.zarr:image", f"{d}/vol.zarr:labels",
                                                  "--voxel-size", "0,0,0"), r"--voxel-size"),
    ("train-batch-size-0", lambda d: _train(d, f"{d}/vol.zarr:image", f"{d}/vol.zarr:labels",
                                            "--batch-size", "0"), r"batch"),
    ("train-voxel-size-0", lambda d: _train(d, f"{d}/vol.zarr:image", f"{d}/vol.zarr:labels",
                                            "--voxel-size", "0,8,8"), r"--voxel-size"),
    ("train-fov-even", lambda d: _train(d, f"{d}/vol.zarr:image", f"{d}/vol.zarr:labels",
                                        "--fov-size", "10,11,11"), r"--fov-size of 3 odd"),
    ("train-depth-0", lambda d: _train(d, f"{d}/vol.zarr:image", f"{d}/vol.zarr:labels", "--depth", "0"),
     r"--depth >= 1"),
    ("train-moves-0", lambda d: _train(d, f"{d}/vol.zarr:image", f"{d}/vol.zarr:labels", "--moves", "0"),
     r"--moves >= 1"),
    ("train-lr-0", lambda d: _train(d, f"{d}/vol.zarr:image", f"{d}/vol.zarr:labels", "--lr", "0"), r"--lr > 0"),
    ("train-preset-unknown", lambda d: _train(d, f"{d}/vol.zarr:image", f"{d}/vol.zarr:labels", "--preset", "huge"),
     r"--preset"),
    ("train-agglo-kind", lambda d: _agglo(d, f"{d}/vol.zarr:image", f"{d}/vol.zarr:labels", "--kind", "svm"),
     r"--kind"),
    ("segment-agglo-min-contact-0", lambda d: _seg(d, "--agglo-min-contact", "0"), r"--agglo-min-contact"),
    ("distill-examples-neg", lambda d: ["connectomics", "distill", "--teacher", d / "ffn" / "model.keras",
                                        "--image", f"{d}/vol.zarr:image", "--labels", f"{d}/vol.zarr:labels",
                                        "--examples", "-1", "--out", d / "out"], r"--examples >= 0"),
    ("distill-teacher-corrupt", lambda d: ["connectomics", "distill", "--teacher", d / "corrupt" / "model.keras",
                                           "--image", f"{d}/vol.zarr:image", "--labels", f"{d}/vol.zarr:labels",
                                           "--out", d / "out"], r"corrupt"),
    ("export-model-other-app", lambda d: ["connectomics", "export", d / "other" / "model.keras",
                                          "--out", d / "m.tflite"], r"molecules"),
    ("export-out-is-folder", lambda d: ["connectomics", "export", d / "ffn" / "model.keras",
                                        "--out", d / "userdir"], r"userdir"),
    ("import-ffn-missing", lambda d: ["connectomics", "import-ffn", d / "nockpt", "--out", d / "i.keras"],
     r"nockpt"),
    ("import-ffn-out-suffix", lambda d: ["connectomics", "import-ffn", d / "file.txt", "--out", d / "i.h5"],
     r"--out ending in .keras"),
    # -- models: missing card, corrupt, another app's, a text file with a card, a bad card
    ("model-missing", lambda d: _seg(d, model=d / "none.keras"), r"no file"),
    ("model-no-card", lambda d: _seg(d, model=d / "nocard" / "model.keras"), r"card"),
    ("model-corrupt", lambda d: _seg(d, model=d / "corrupt" / "model.keras"), r"does not load|damaged|zip"),
    ("model-other-app", lambda d: _seg(d, model=d / "other" / "model.keras"), r"molecules"),
    ("model-text-with-card", lambda d: _seg(d, model=d / "textmodel" / "model.keras"), r"model"),
    ("model-card-not-json", lambda d: _seg(d, model=d / "badcard" / "model.keras"), r"JSON"),
    ("model-folder", lambda d: _seg(d, model=d / "ffn"), r"folder"),
    ("train-agglo-model-other-app", lambda d: _agglo(d, f"{d}/vol.zarr:image", f"{d}/vol.zarr:labels",
                                                     "--model", d / "other" / "model.keras"), r"molecules"),
    ("train-init-model-corrupt", lambda d: _train(d, f"{d}/vol.zarr:image", f"{d}/vol.zarr:labels",
                                                  "--init-model", d / "corrupt" / "model.keras"), r"model"),
    # -- pair classifiers
    ("classifier-missing", lambda d: _seg(d, "--preset", "learned", "--agglo-classifier", d / "no.json"),
     r"no file|not found|no such"),
    ("classifier-not-json", lambda d: _seg(d, "--preset", "learned", "--agglo-classifier", d / "clf_text.json"),
     r"clf_text"),
    ("classifier-list", lambda d: _seg(d, "--preset", "learned", "--agglo-classifier", d / "clf_list.json"),
     r"clf_list"),
    ("classifier-bad-tree", lambda d: _seg(d, "--preset", "learned", "--agglo-classifier",
                                           d / "clf_trees.json"), r"clf_trees"),
    # -- volumes: paths, inner names, damaged stores and files, bad data
    ("image-missing", lambda d: _base(d, d / "nothing.zarr"), r"no such path"),
    ("image-inner-missing", lambda d: _base(d, f"{d}/vol.zarr:nope"), r"nope"),
    ("image-truncated-chunk", lambda d: _base(d, f"{d}/trunc.zarr:image"), r"trunc.zarr"),
    ("segment-truncated-chunk", lambda d: _seg(d, "--image", f"{d}/trunc.zarr:image"), r"trunc.zarr"),
    ("image-zarr-json-broken", lambda d: _base(d, d / "junk.zarr"), r"junk.zarr"),
    ("image-h5-broken", lambda d: _base(d, f"{d}/broken.h5:img"), r"broken.h5"),
    ("image-h5-2d", lambda d: _base(d, f"{d}/v.h5:flat"), r"3-D"),
    ("image-h5-no-dataset", lambda d: _base(d, f"{d}/v.h5"), r"DATASET"),
    ("image-png-broken", lambda d: _base(d, d / "slices"), r"0.png"),
    ("image-tif-broken", lambda d: _base(d, d / "stack.tif"), r"stack.tif"),
    ("image-unknown-type", lambda d: _base(d, d / "file.txt"), r"unknown file type"),
    ("image-bad-voxel-size-attr", lambda d: _base(d, f"{d}/badvs.zarr:image"), r"voxel size"),
    ("image-ome-metadata-malformed", lambda d: _base(d, d / "ome.zarr"), r"ome.zarr"),
    ("image-n5-unknown-codec", lambda d: _base(d, f"{d}/v.n5:img"), r"lz9"),
    ("image-n5-bad-dimensions", lambda d: _base(d, f"{d}/w.n5:img"), r"w.n5"),
    ("labels-h5-table-not-pairs", lambda d: _eval(d, f"{d}/gt.h5:stack@transforms", f"{d}/vol.zarr:labels"),
     r"\(N, 2\) table"),
    ("image-slices-of-two-sizes", lambda d: _base(d, d / "mixed"), r"1.png"),
    ("evaluate-skip-invalid-none-left", lambda d: _eval(d, f"{d}/vol.zarr:labels", f"{d}/none.zarr,{d}/flt.zarr:labels",
                                                        "--skip-invalid"), r"none \(2 skipped\)"),
    ("evaluate-seg-same-name", lambda d: _eval(d, f"{d}/vol.zarr:labels", f"a={d}/vol.zarr:labels,a={d}/neg.zarr:labels"),
     r"distinct --seg names"),
    ("evaluate-seg-missing", lambda d: _eval(d, f"{d}/vol.zarr:labels", d / "none.zarr"), r"none.zarr"),
    ("labels-negative-ids", lambda d: _eval(d, f"{d}/neg.zarr:labels", f"{d}/vol.zarr:labels"), r"negative"),
    ("train-labels-negative-ids", lambda d: _train(d, f"{d}/neg.zarr:image", f"{d}/neg.zarr:labels"),
     r"negative"),
    ("train-agglo-labels-negative", lambda d: _agglo(d, f"{d}/neg.zarr:image", f"{d}/neg.zarr:labels"),
     r"negative"),
    ("labels-float", lambda d: _eval(d, f"{d}/flt.zarr:labels", f"{d}/vol.zarr:labels"), r"integer"),
    ("evaluate-shape-mismatch", lambda d: _eval(d, f"{d}/vol.zarr:labels", f"{d}/v.h5:flat"), r"3-D|shape"),
    ("segment-volume-smaller-than-fov", lambda d: _seg(d, "--image", f"{d}/vol.zarr:image", "--block-size",
                                                       "4,4,4"), r"FOV"),
    # -- run records
    ("config-another-command", lambda d: [*_base(d, f"{d}/vol.zarr:image"), "--config", d / "molrun.json"],
     r"molrun.json"),
    ("config-missing", lambda d: [*_base(d, f"{d}/vol.zarr:image"), "--config", d / "none.json"], r"none.json"),
]


@pytest.mark.parametrize("make, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(data, bad_input, make, match):
    bad_input(make(data), watch=[data], match=match)


def test_evaluate_skip_invalid_names_the_skipped(data, tmp_path):
    """--skip-invalid: the unreadable --seg is skipped and named, the readable one scored as without it."""
    from deepsci.apps.cli import main

    lab = f"{data}/vol.zarr:labels"
    args = ["connectomics", "evaluate", "--labels", lab, "--min-overlap", "1", "--no-baseline"]
    assert main([*args, "--seg", f"good={lab}", "--out", str(tmp_path / "ref")]) == 0
    assert main([*args, "--seg", f"good={lab},bad={data}/trunc.zarr:image", "--out", str(tmp_path / "o")]) == 2
    assert main([*args, "--seg", f"good={lab},bad={data}/trunc.zarr:image", "--skip-invalid",
                 "--out", str(tmp_path / "o")]) == 0
    got, ref = (json.loads((tmp_path / n / "run.json").read_text())["results"] for n in ("o", "ref"))
    assert list(got["skipped"]) == ["bad"] and "trunc.zarr" in got["skipped"]["bad"]
    assert got["scores"] == ref["scores"] and ref["skipped"] == {}
    assert got["scores"]["good"]["vi_split"] == 0 and got["scores"]["good"]["vi_merge"] == 0
