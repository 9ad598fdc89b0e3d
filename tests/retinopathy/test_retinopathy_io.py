"""Dataset readers on small files the tests write, and bad inputs."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepsci.apps.retinopathy.io import (
    DatasetSpec,
    detect_format,
    load_image,
    patient_split,
    read_dataset,
    referable,
)
from deepsci.core.errors import ConfigError, InputError


def _img(path, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 120, np.uint8)).save(path)
    return path


def test_eyepacs(tmp_path):
    for name in ("10_left", "10_right", "13_left"):
        _img(tmp_path / "train" / f"{name}.jpeg")
    (tmp_path / "trainLabels.csv").write_text("image,level\n10_left,0\n10_right,2\n13_left,4\n")
    df = read_dataset(DatasetSpec(tmp_path / "trainLabels.csv"))
    assert list(df["grade"]) == [0, 2, 4]
    assert list(df["patient"]) == ["10", "10", "13"]
    assert list(df["eye"]) == ["left", "right", "left"]
    assert df["path"].iloc[0].endswith("train/10_left.jpeg")
    assert (df["dme"] == -1).all()


def test_aptos(tmp_path):
    _img(tmp_path / "train_images" / "000c1434d8d7.png")
    _img(tmp_path / "train_images" / "001639a390f0.png")
    (tmp_path / "train.csv").write_text("id_code,diagnosis\n000c1434d8d7,2\n001639a390f0,4\n")
    df = read_dataset(DatasetSpec(tmp_path / "train.csv"))
    assert list(df["grade"]) == [2, 4]
    assert df["path"].iloc[1].endswith("train_images/001639a390f0.png")


def test_idrid_trailing_space_and_empty_columns(tmp_path):
    for i in (1, 2, 3):
        _img(tmp_path / "imgs" / f"IDRiD_00{i}.jpg")
    # As shipped: trailing space in the last header and empty unnamed columns.
    (tmp_path / "grading.csv").write_text(
        "Image name,Retinopathy grade,Risk of macular edema ,,,\n"
        "IDRiD_001,3,2,,,\nIDRiD_002,0,0,,,\nIDRiD_003,2,1,,,\n")
    df = read_dataset(DatasetSpec(tmp_path / "grading.csv", images=tmp_path / "imgs"))
    assert list(df["grade"]) == [3, 0, 2]
    assert list(df["dme"]) == [1, 0, 0]  # referable DME = risk 2 (within 1 DD of the macula)
    assert list(referable(df["grade"], df["dme"])) == [1, 0, 1]


def test_messidor2_ungradable_rows(tmp_path):
    for name in ("20051019_38557_0100_PP.png", "IM002385.JPG"):
        _img(tmp_path / "IMAGES" / name)
    (tmp_path / "messidor_data.csv").write_text(
        "image_id,adjudicated_dr_grade,adjudicated_dme,adjudicated_gradable\n"
        "20051019_38557_0100_PP.png,1,1,1\nIM002385.JPG,,,0\n")
    df = read_dataset(DatasetSpec(tmp_path / "messidor_data.csv"))
    assert list(df["grade"]) == [1, -1]
    assert list(df["gradable"]) == [1, 0]
    assert list(referable(df["grade"], df["dme"])) == [1, 0]  # DME alone makes it referable


def test_generic_named_columns(tmp_path):
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    (tmp_path / "l.csv").write_text("file,dr,pid,edema\na.png,1,p1,0\nb.png,3,p1,1\n")
    spec = DatasetSpec(tmp_path / "l.csv", fmt="generic", image_col="file", grade_col="dr",
                       patient_col="pid", dme_col="edema")
    df = read_dataset(spec)
    assert list(df["grade"]) == [1, 3] and list(df["patient"]) == ["p1", "p1"]
    assert list(df["dme"]) == [0, 1]


def test_detect_format():
    assert detect_format(["image", "level"]) == "eyepacs"
    assert detect_format(["id_code", "diagnosis"]) == "aptos"
    assert detect_format(["Image name", "Retinopathy grade"]) == "idrid"
    assert detect_format(["image_id", "adjudicated_dr_grade"]) == "messidor2"
    assert detect_format(["x", "y"]) == "generic"


@pytest.mark.parametrize("csv, match", [
    ("image,level\n10_left,5\n", "ICDR grade in 0-4, found '5'"),
    ("image,level\n10_left,-1\n", "ICDR grade"),
    ("image,level\n10_left,two\n", "found 'two'"),
    ("image,grade\n10_left,1\n", "known label header"),
    ("image,level\n10_left,1\n10_left,2\n", "unique image ids"),
])
def test_bad_label_files(tmp_path, csv, match):
    _img(tmp_path / "train" / "10_left.jpeg")
    (tmp_path / "trainLabels.csv").write_text(csv)
    with pytest.raises(InputError, match=match):
        read_dataset(DatasetSpec(tmp_path / "trainLabels.csv"))


def test_missing_image_is_named(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "trainLabels.csv").write_text("image,level\n99_left,0\n")
    with pytest.raises(InputError) as e:
        read_dataset(DatasetSpec(tmp_path / "trainLabels.csv"))
    assert "99_left.jpeg" in str(e.value)


def test_generic_requires_columns(tmp_path):
    (tmp_path / "l.csv").write_text("file,dr\na.png,1\n")
    with pytest.raises(ConfigError):
        read_dataset(DatasetSpec(tmp_path / "l.csv", fmt="generic"))
    with pytest.raises(InputError, match="missing"):
        read_dataset(DatasetSpec(tmp_path / "l.csv", fmt="generic", image_col="file",
                                 grade_col="level"))


def test_truncated_jpeg_and_bomb(tmp_path):
    p = tmp_path / "x.jpeg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(p)
    good = load_image(p)
    assert good.shape == (200, 200, 3) and good.dtype == np.uint8
    data = p.read_bytes()
    (tmp_path / "t.jpeg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image(tmp_path / "t.jpeg")
    (tmp_path / "junk.jpeg").write_bytes(b"not an image at all")
    with pytest.raises(InputError):
        load_image(tmp_path / "junk.jpeg")
    with pytest.raises(InputError, match="decompression bomb"):
        load_image(p, max_pixels=100 * 100)


def test_patient_split_keeps_eyes_together():
    rng = np.random.default_rng(0)
    rows = [{"image": f"{p}_{e}", "patient": str(p), "grade": int(rng.integers(0, 5))}
            for p in range(200) for e in ("left", "right")]
    df = pd.DataFrame(rows)
    split = patient_split(df, val_frac=0.2, test_frac=0.2, seed=3)
    per_patient = split.groupby(df["patient"]).nunique()
    assert (per_patient == 1).all()
    frac = split.value_counts(normalize=True)
    assert abs(frac["test"] - 0.2) < 0.05 and abs(frac["val"] - 0.2) < 0.05
    assert (split == patient_split(df, val_frac=0.2, test_frac=0.2, seed=3)).all()
