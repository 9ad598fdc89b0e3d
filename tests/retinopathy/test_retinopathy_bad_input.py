"""Every way a user's file or option reaches retinopathy fails in one line (issue #19).

Each case runs ``deepsci retinopathy ...`` through the shared ``bad_input`` fixture:
exit 2, one ``error:`` line, no traceback, and nothing under the watched folders
changed (no output, no temporary file, no cache entry, no input touched). The
inputs are built once per module from the session's tiny synthetic set
(``tests/retinopathy/conftest.py::tiny``); the good photographs are graded once
first, so that their cache entries exist and a refused run has nothing to add.
"""
from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepsci.apps.cli import main


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares ``width`` x ``height`` pixels but holds one empty data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def world(tiny, tmp_path_factory):
    """Photographs good and bad, label files, models good and bad, under one folder."""
    root = tmp_path_factory.mktemp("retino-bad")
    model = root / "model"
    shutil.copytree(tiny.teacher, model)
    good = [root / "photos" / p.name for p in tiny.photos[:2]]
    good[0].parent.mkdir()
    for src, dst in zip(tiny.photos, good, strict=False):
        shutil.copy(src, dst)
    bad = root / "bad"
    bad.mkdir()
    data = good[0].read_bytes()
    (bad / "truncated.jpeg").write_bytes(data[: len(data) // 3])
    (bad / "empty.png").write_bytes(b"")
    (bad / "junk.tif").write_bytes(np.random.default_rng(0).bytes(3000))
    _png_header_only(bad / "bomb.png", 30000, 30000)
    (bad / "folder.jpeg").mkdir()
    (bad / "a_file").write_text("I am a file")
    # A labelled set of four photographs (two patients, both eyes).
    ds = root / "ds"
    (ds / "train").mkdir(parents=True)
    for p in tiny.photos[:4]:
        shutil.copy(p, ds / "train" / p.name)
    ids = [p.stem for p in tiny.photos[:4]]
    rows = "".join(f"{i},{g}\n" for i, g in zip(ids, [0, 2, 1, 3], strict=True))
    labels = {
        "good.csv": "image,level\n" + rows,
        "text_grade.csv": "image,level\n" + rows.replace(",2\n", ",moderate\n"),
        "grade_5.csv": "image,level\n" + rows.replace(",3\n", ",5\n"),
        "grade_float.csv": "image,level\n" + rows.replace(",1\n", ",1.5\n"),
        "no_level.csv": "image,grade\n" + rows,
        "empty_id.csv": "image,level\n" + rows + ",1\n",
        "dup_column.csv": "image,level,level\n" + rows.replace("\n", ",0\n"),
        "header_only.csv": "image,level\n",
        "empty.csv": "",
        "binary.csv": "\x00\xff\xfe\x89PNG\x00\x00\n\x81\x82",
        "missing_photo.csv": "image,level\n" + rows + "99_left,0\n",
        "aptos_bad.csv": "id_code,diagnosis\nabc,-1\n",
        "messidor_bad.csv": "image_id,adjudicated_dr_grade,adjudicated_gradable\na.png,1,2\n",
    }
    for name, text in labels.items():
        (ds / name).write_bytes(text.encode("latin-1"))
    zero = root / "zero"
    shutil.copytree(ds / "train", zero / "train")
    (zero / "train" / f"{ids[1]}.jpeg").write_bytes(b"")
    (zero / "trainLabels.csv").write_text("image,level\n" + rows)
    # Models that are not this app's, or not whole.
    other = root / "other_model"
    shutil.copytree(model / "member_0", other)
    card = json.loads((other / "model.card.json").read_text())
    card["app"] = "molecules"
    (other / "model.card.json").write_text(json.dumps(card))
    nocard = root / "nocard"
    nocard.mkdir()
    shutil.copy(model / "member_0" / "model.keras", nocard / "model.keras")
    (root / "corrupt.keras").write_bytes(b"PK\x03\x04 not really a zip")
    shutil.copy(model / "member_0" / "model.card.json", root / "corrupt.card.json")
    nopoints = root / "nopoints"
    shutil.copytree(model, nopoints)
    info = json.loads((nopoints / "ensemble.json").read_text())
    info["operating_points"] = {"high_sensitivity": {"threshold": "high"}}
    (nopoints / "ensemble.json").write_text(json.dumps(info))
    # Another command's finished run.
    (root / "trained").mkdir()
    (root / "trained" / "run.json").write_text(json.dumps({"schema": "deepsci.run/1",
                                                           "command": "retinopathy train",
                                                           "status": "done"}))
    # A finished predict run, and the good photographs' cache entries.
    done = root / "done"
    assert main(["retinopathy", "predict", "--model", str(model), *map(str, good), "--out",
                 str(done), "--no-html"]) == 0
    return root


def _argv(world: Path, argv: list[str]) -> list[str]:
    """``argv`` with ``W/...`` made paths under ``world`` and ``GOOD`` the good photographs."""
    out = []
    for a in argv:
        if a == "GOOD":
            out += sorted(str(p) for p in (world / "photos").iterdir())
        elif a.startswith("W/"):
            out.append(str(world / a[2:]))
        else:
            out.append(a)
    return out


PREDICT = ["retinopathy", "predict", "--model", "W/model", "--out", "W/new"]
EXPLAIN = ["retinopathy", "explain", "--model", "W/model", "--out", "W/new", "--steps", "1"]
TRAIN = ["retinopathy", "train", "--out", "W/new", "--size", "32", "--epochs", "1"]
EVAL = ["retinopathy", "evaluate", "--model", "W/model", "--out", "W/new"]
PREP = ["retinopathy", "preprocess", "--out", "W/new", "--size", "32"]

CASES = [
    # photographs given to predict / explain
    (PREDICT + ["GOOD", "W/bad/truncated.jpeg"], r"corrupt or truncated.*truncated\.jpeg"),
    (PREDICT + ["W/bad/empty.png"], r"found an empty file.*empty\.png"),
    (PREDICT + ["W/bad/junk.tif"], r"not an image.*junk\.tif"),
    (PREDICT + ["W/bad/bomb.png"], r"decompression bomb.*bomb\.png"),
    (PREDICT + ["W/bad/folder.jpeg"], r"found a folder.*folder\.jpeg"),
    (PREDICT + ["W/bad/missing.jpeg"], r"found no file.*missing\.jpeg"),
    (PREDICT + ["--skip-invalid", "W/bad/empty.png", "W/bad/junk.tif"],
     r"at least one readable photograph, found none \(2 unreadable"),
    (EXPLAIN + ["W/bad/truncated.jpeg"], r"corrupt or truncated.*truncated\.jpeg"),
    (EXPLAIN + ["--skip-invalid", "W/bad/bomb.png"], r"found none.*bomb\.png"),
    (EXPLAIN + ["GOOD", "--masks", "W/bad/a_file"], r"folder of lesion masks, found a file"),
    (PREDICT, r"expected image files or --labels, found neither"),
    # label files
    (EVAL + ["--labels", "W/ds/text_grade.csv"],
     r"ICDR grade in 0-4, found 'moderate' in column 'level' on data row 2.*text_grade"),
    (EVAL + ["--labels", "W/ds/grade_5.csv"], r"found '5' in column 'level' on data row 4"),
    (EVAL + ["--labels", "W/ds/grade_float.csv"], r"found '1.5' in column 'level' on data row 3"),
    (EVAL + ["--labels", "W/ds/no_level.csv"], r"known label header"),
    (EVAL + ["--labels", "W/ds/good.csv", "--format", "eyepacs", "--patient-col", "pid"],
     r"missing \['pid'\]"),
    (EVAL + ["--labels", "W/ds/empty_id.csv"], r"image ids in column 'image', found an empty "
                                               r"cell on data row 5"),
    (EVAL + ["--labels", "W/ds/dup_column.csv"], r"unique column names, found 'level' twice"),
    (EVAL + ["--labels", "W/ds/header_only.csv"], r"at least one labelled image"),
    (EVAL + ["--labels", "W/ds/empty.csv"], r"CSV label file, found an empty file"),
    (EVAL + ["--labels", "W/ds/binary.csv"], r"binary\.csv"),
    (EVAL + ["--labels", "W/ds/missing_photo.csv"], r"found no file.*99_left\.jpeg"),
    (EVAL + ["--labels", "W/ds/aptos_bad.csv"], r"found '-1' in column 'diagnosis'"),
    (EVAL + ["--labels", "W/ds/messidor_bad.csv"], r"gradable flag in 0-1, found '2'"),
    (EVAL + ["--labels", "W/ds"], r"CSV label file, found a folder"),
    (EVAL + ["--labels", "W/ds/good.csv", "--format", "generic"], r"--image-col and --grade-col"),
    (TRAIN + ["--labels", "W/zero/trainLabels.csv"], r"empty file.*zero/train/.*\.jpeg"),
    (PREP + ["--labels", "W/zero/trainLabels.csv"], r"empty file.*zero/train/.*\.jpeg"),
    # models
    (PREDICT[:3] + ["W/other_model/model.keras", "--out", "W/new", "GOOD"],
     r"expected a retinopathy model, found a molecules model"),
    (PREDICT[:3] + ["W/nocard/model.keras", "--out", "W/new", "GOOD"], r"card"),
    (PREDICT[:3] + ["W/corrupt.keras", "--out", "W/new", "GOOD"], r"corrupt\.keras"),
    (PREDICT[:3] + ["W/nopoints", "--out", "W/new", "GOOD"],
     r"operating points with thresholds in \[0, 1\]"),
    (PREDICT[:3] + ["W/photos", "--out", "W/new", "GOOD"], r"expected a model directory"),
    (EXPLAIN[:3] + ["W/model/member_0/model.tflite", "--out", "W/new", "GOOD"], r"\.keras model"),
    # output locations
    (PREDICT[:4] + ["--out", "W/bad/a_file", "GOOD"], r"output folder, found a file"),
    (PREDICT[:4] + ["--out", "W/bad/a_file/sub", "GOOD"], r"folder on the output path, found a file"),
    (PREDICT[:4] + ["--out", "W/model", "GOOD"], r"found a model folder"),
    (PREDICT[:4] + ["--out", "W/model", "--overwrite", "GOOD"], r"found a model folder"),
    (EVAL + ["--labels", "W/ds/good.csv", "--out", "W/trained"], r"found a 'retinopathy train' run"),
    (PREDICT[:4] + ["--out", "W/done", "GOOD"], r"finished run \(pass --overwrite"),
    (PREDICT + ["GOOD", "--cache", "W/bad/a_file"], r"cache, found a file"),
    # numeric options and choices
    (PREDICT + ["GOOD", "--batch-size", "0"], r"expected --batch-size >= 1, found 0"),
    (PREDICT + ["GOOD", "--workers", "-1"], r"expected --workers >= 1, found -1"),
    (PREDICT + ["GOOD", "--operating-point", "1.5"], r"threshold in \[0, 1\], found 1.5"),
    (PREDICT + ["GOOD", "--operating-point", "nan"], r"threshold in \[0, 1\], found nan"),
    (PREDICT + ["GOOD", "--operating-point", "loose"], r"operating point"),
    (EXPLAIN + ["GOOD", "--steps", "0"], r"expected --steps >= 1, found 0"),
    (EXPLAIN + ["GOOD", "--limit", "0"], r"expected --limit >= 1, found 0"),
    (EVAL + ["--labels", "W/ds/good.csv", "--n-boot", "0"], r"expected --n-boot >= 1"),
    (EVAL + ["--labels", "W/ds/good.csv", "--format", "kaggle"], r"--format"),
    (TRAIN + ["--labels", "W/ds/good.csv", "--val-frac", "0"], r"expected --val-frac > 0"),
    (TRAIN + ["--labels", "W/ds/good.csv", "--target-sensitivity", "1.5"],
     r"expected --target-sensitivity <= 1"),
    (TRAIN + ["--labels", "W/ds/good.csv", "--width", "0"], r"expected --width >= 1"),
    (PREP + ["--labels", "W/ds/good.csv", "--min-brightness", "1"], r"--min-brightness < 1"),
    (PREP + ["--labels", "W/ds/good.csv", "--max-pixels", "0"], r"--max-pixels >= 1"),
    (PREP + ["--labels", "W/ds/good.csv", "--size", "0"], r"--size >= 32, found 0"),
    (["retinopathy", "synth", "W/new", "--patients", "0"], r"--patients"),
]


@pytest.mark.parametrize("argv, match", CASES, ids=[f"{i:02d}" for i in range(len(CASES))])
def test_bad_input(world, bad_input, argv, match):
    bad_input(_argv(world, argv), watch=[world], match=match)


def test_skip_invalid_lists_the_unreadable(world, tmp_path):
    """--skip-invalid grades the readable photographs and names each skipped one."""
    out = tmp_path / "pred"
    bad = [world / "bad" / "truncated.jpeg", world / "bad" / "bomb.png"]
    argv = _argv(world, PREDICT[:4] + ["--out", str(out), "GOOD", *map(str, bad),
                                       "--skip-invalid", "--cache", str(tmp_path / "c")])
    assert main(argv) == 0
    df = pd.read_csv(out / "predictions.csv", dtype={"skipped": str}, keep_default_na=False)
    assert list(df["image"]) == [p.stem for p in sorted((world / "photos").iterdir())] + [
        "truncated", "bomb"]
    assert (df["skipped"].iloc[:2] == "").all()
    assert "truncated" in df["skipped"].iloc[2] and "decompression bomb" in df["skipped"].iloc[3]
    # No grade, decision, probability or gradability for a photograph never read.
    for col in ("grade", "referable", "gradable", "p_referable", "referable_high_sensitivity"):
        assert (df[col].iloc[2:] == "").all(), col
        assert (df[col].iloc[:2] != "").all(), col
    rec = json.loads((out / "run.json").read_text())["results"]
    assert [s["image"] for s in rec["skipped"]] == ["truncated", "bomb"]
    assert rec["images"] == 4 and rec["gradable"] == 2
    assert "2 unreadable photograph(s) skipped" in (out / "report.html").read_text()


def test_preprocess_and_train_split_list_skipped(world, tmp_path):
    """A zero-byte training photograph is skipped and named in quality.csv / splits.csv."""
    from deepsci.apps.retinopathy.io import DatasetSpec
    from deepsci.apps.retinopathy.train import RetinopathyConfig, prepare

    labels = world / "zero" / "trainLabels.csv"
    out = tmp_path / "prep"
    assert main(["retinopathy", "preprocess", "--labels", str(labels), "--out", str(out),
                 "--size", "32", "--skip-invalid"]) == 0
    q = pd.read_csv(out / "quality.csv", dtype=str, keep_default_na=False)
    assert (q["skipped"] != "").sum() == 1 and "empty file" in q.loc[q["skipped"] != "",
                                                                     "skipped"].iloc[0]
    rec = json.loads((out / "run.json").read_text())["results"]
    assert len(rec["skipped"]) == 1 and rec["ungradable"] == int(
        ((q["gradable"] != "1") & (q["skipped"] == "")).sum())
    cfg = RetinopathyConfig(out=tmp_path / "m", data=DatasetSpec(labels=labels),
                            skip_invalid=True)
    cfg.preprocess.size = 32
    df = prepare(cfg, tmp_path / "m")
    splits = pd.read_csv(tmp_path / "m" / "splits.csv", dtype=str, keep_default_na=False)
    assert list(splits["skipped"] != "") == list(df["skipped"] != "")
    assert (splits["skipped"] != "").sum() == 1 and (splits.loc[splits["skipped"] != "",
                                                                "cache"] == "").all()
