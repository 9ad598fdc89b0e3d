"""Arbitrary bytes and text through retinopathy's readers: an InputError or a valid result.

Label CSVs in every layout the app accepts (EyePACS, APTOS, IDRiD, Messidor-2,
generic columns) and image files (random bytes named .jpg/.png/.tif, and real
image headers with damaged bodies) must never raise anything but deepsci's
InputError; what they return must satisfy the documented table (issue #19).
"""
from __future__ import annotations

import io as _io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from deepsci.apps.retinopathy.io import COLUMNS, DatasetSpec, load_image, read_dataset
from deepsci.core.errors import InputError

HEADERS = ["image,level", "image,level,dme", "id_code,diagnosis",
           "Image name,Retinopathy grade,Risk of macular edema ,,",
           "image_id,adjudicated_dr_grade,adjudicated_dme,adjudicated_gradable", "file,dr,pid"]
SPECS = {"file,dr,pid": dict(fmt="generic", image_col="file", grade_col="dr", patient_col="pid")}
CELLS = st.one_of(st.sampled_from(["0", "1", "2", "4", "5", "-1", "1.0", "2.5", "", " 3", "nan",
                                   "x_left", "7_right", "a", "\"", "1e3"]),
                  st.text(alphabet=st.characters(codec="utf-8"), max_size=6))
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _check_table(df) -> None:
    """The documented table: columns, grades 0-4 (or -1), DME/gradable 0/1 (or -1), ids unique."""
    assert list(df.columns) == COLUMNS and len(df) >= 1
    assert df["grade"].isin([-1, 0, 1, 2, 3, 4]).all()
    assert df["dme"].isin([-1, 0, 1]).all() and df["gradable"].isin([-1, 0, 1]).all()
    assert df["image"].is_unique and (df["image"] != "").all()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("retino-fuzz")


@FUZZ
@given(header=st.sampled_from(HEADERS),
       rows=st.lists(st.lists(CELLS, min_size=0, max_size=5), max_size=5))
def test_label_csv_text(folder, header, rows):
    """Structured CSV text: known headers, odd cells, short and long rows."""
    path = folder / "labels.csv"
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    try:
        df = read_dataset(DatasetSpec(labels=path, **SPECS.get(header, {})), check_files=False)
    except InputError:
        return
    _check_table(df)


@FUZZ
@given(data=st.binary(max_size=400), header=st.sampled_from(["", *HEADERS]))
def test_label_csv_bytes(folder, data, header):
    """Any bytes after (or instead of) a header."""
    path = folder / "raw.csv"
    path.write_bytes((header + "\n").encode() * bool(header) + data)
    try:
        df = read_dataset(DatasetSpec(labels=path, **SPECS.get(header, {})), check_files=False)
    except InputError:
        return
    _check_table(df)


def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = _io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


REAL = {ext: _encoded(fmt) for ext, fmt in ((".jpg", "JPEG"), (".png", "PNG"), (".tif", "TIFF"))}


@FUZZ
@given(ext=st.sampled_from(sorted(REAL)), data=st.binary(max_size=2000),
       cut=st.integers(0, 4000), mode=st.sampled_from(["raw", "header", "flip"]))
def test_image_bytes(folder, ext, data, cut, mode):
    """Random bytes, a real header with a random body, or a real file with flipped bytes."""
    real = REAL[ext]
    if mode == "raw":
        blob = data
    elif mode == "header":
        blob = real[: min(cut, len(real))] + data
    else:
        arr = bytearray(real)
        for i, b in enumerate(data[:16]):
            arr[(cut + 97 * i) % len(arr)] ^= b or 0xFF
        blob = bytes(arr)
    path = folder / f"photo{ext}"
    path.write_bytes(blob)
    try:
        rgb = load_image(path)
    except InputError as e:
        assert e.path == str(path)
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and min(rgb.shape) >= 1
