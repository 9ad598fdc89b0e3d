"""Which slides the Camelyon16 evaluation treats as tumour slides, and how it names its pixel size.

A tumour slide (by ``reference.csv`` or, without one, by a name other than
``normal_*``) without its mask or annotation is an error, never a normal slide.
"""
import json

import numpy as np
import pytest

from deepsci.apps.cli import main
from deepsci.apps.pathology import evaluate
from deepsci.apps.pathology.io import write_pyramid_tiff
from deepsci.core.errors import InputError

# One lesion of 28 x 28 level-5 pixels (counted at either pixel size), detected at 0.8; a false
# positive at 0.7 on its slide; a normal slide's false positives at 0.9 and 0.6.
LESION_CSV = "0.800000,512,512\n0.700000,1800,160\n"
NORMAL_CSV = "0.900000,40,40\n0.600000,900,900\n"
# by hand: thresholds 0.7, float32(0.8), 0.9 (0.6 skipped) over 2 slides ->
# FPs/slide 1, 0.5, 0.5, 0 and sensitivity 1, 1, 0, 0: interpolated 0 at 1/4, 1 from 1/2 on
FROC_TWO_SLIDES = 5 / 6


def _mask(path, *, size: int = 2048, mpp: float = 0.5, tumour: bool = True):
    level5 = np.zeros((size // 32, size // 32), np.uint8)
    if tumour:
        level5[4:32, 4:32] = 255
    write_pyramid_tiff(path, np.kron(level5, np.ones((32, 32), np.uint8)), mpp=mpp, tile=256,
                       min_size=64, mode="max")


def _folders(tmp_path, tumour: str = "tumor_001", normal: str = "normal_001"):
    truth, det = tmp_path / "truth", tmp_path / "det"
    truth.mkdir()
    det.mkdir()
    _mask(truth / f"{tumour}_Mask.tif")
    (det / f"{tumour}.csv").write_text(LESION_CSV)
    (det / f"{normal}.csv").write_text(NORMAL_CSV)
    return truth, det


def _run(truth, det, out, **kw) -> dict:
    return evaluate.run_evaluate(evaluate.EvaluateConfig(detections=str(det), truth=str(truth), out=str(out),
                                                         **kw))


def test_names_decide_without_reference(tmp_path):
    truth, det = _folders(tmp_path)
    (det / "test_normal_002.csv").write_text("")  # a prefixed normal_* name, nothing detected
    m = _run(truth, det, tmp_path / "eval")
    assert (m["slides"], m["tumour_slides"], m["lesions"]) == (3, 1, 1)
    assert m["froc"] == pytest.approx(FROC_TWO_SLIDES, abs=1e-12)
    # the empty normal slide counts in the average: 2, 1, 1, 0 false positives over 3 slides
    curve = np.loadtxt(tmp_path / "eval" / "froc_curve.csv", delimiter=",", skiprows=1, ndmin=2)
    np.testing.assert_allclose(curve, [[2 / 3, 1], [1 / 3, 1], [1 / 3, 0], [0, 0]], atol=1e-6)
    assert m["slide_auc"] == 0.5  # the tumour slide's 0.8: below normal_001's 0.9, above 0 (no detection)
    rows = {r["image"]: r["tumour"] for r in json.loads((tmp_path / "eval" / "per_slide.json").read_text())}
    assert rows == {"tumor_001": True, "normal_001": False, "test_normal_002": False}


def test_tumour_slide_without_annotation_is_an_error(tmp_path, one_line_error):
    truth, det = _folders(tmp_path)
    (det / "tumor_002.csv").write_text("0.500000,10,10\n")
    with pytest.raises(InputError) as e:
        _run(truth, det, tmp_path / "eval")
    msg = str(e.value)
    assert "tumor_002_Mask.tif, tumor_002.xml" in msg and "'tumor_002'" in msg and "found none" in msg
    assert "not named normal_*" in msg and str(truth) in msg
    assert not (tmp_path / "eval").exists()
    line = one_line_error(["pathology", "evaluate", "--detections", str(det), "--truth", str(truth),
                                    "--out", str(tmp_path / "eval")])
    assert "tumor_002" in line and "expected" in line and "found none" in line


def test_normal_named_slide_with_tumour_truth_is_an_error(tmp_path):
    truth, det = _folders(tmp_path)
    _mask(truth / "normal_001_Mask.tif")
    with pytest.raises(InputError, match=r"expected no tumour in the truth of slide 'normal_001' "
                                         r"\(a normal slide by its name normal_\*\), found 784 tumour pixels"):
        _run(truth, det, tmp_path / "eval")
    _mask(truth / "normal_001_Mask.tif", tumour=False)  # an empty mask agrees with the name
    assert _run(truth, det, tmp_path / "eval")["froc"] == pytest.approx(FROC_TWO_SLIDES, abs=1e-12)


def test_reference_csv_decides(tmp_path):
    truth, det = _folders(tmp_path, tumour="test_001", normal="test_002")
    ref = tmp_path / "reference.csv"
    ref.write_text("image,type,lesion\nTest_001.tif,Tumor,Macro\nTest_002,Normal\n")
    m = _run(truth, det, tmp_path / "eval", reference=str(ref))
    assert (m["tumour_slides"], m["lesions"]) == (1, 1)
    assert m["froc"] == pytest.approx(FROC_TWO_SLIDES, abs=1e-12)
    assert m["slide_auc"] == 0.0  # tumour slide's maximum 0.8 < the normal slide's 0.9
    # names alone would make test_002 a tumour slide without truth
    with pytest.raises(InputError, match="'test_002'.*not named normal_"):
        _run(truth, det, tmp_path / "eval2")
    (det / "test_003.csv").write_text("0.500000,10,10\n")
    with pytest.raises(InputError, match=r"expected a row for slide 'test_003' in the reference, found none"):
        _run(truth, det, tmp_path / "eval3", reference=str(ref))
    ref.write_text("Test_001,Tumor,Macro\nTest_002,Normal\nTest_003,Tumor,Micro\n")
    with pytest.raises(InputError, match=r"test_003_Mask.tif.*\(Tumor in reference.csv\), found none"):
        _run(truth, det, tmp_path / "eval4", reference=str(ref))
    ref.write_text("Test_001,Tumor\nTest_002,Normal\nTest_003,Normal\n")
    assert _run(truth, det, tmp_path / "eval5", reference=str(ref))["slides"] == 3
    ref.write_text("Test_001,Tumor\nTest_002,maybe\n")
    with pytest.raises(InputError, match=r"expected 'image,Tumor\|Normal' on line 2, found 'Test_002,maybe'"):
        _run(truth, det, tmp_path / "eval6", reference=str(ref))


@pytest.mark.parametrize("pixel_size, shown", [
    ("official", "1 lesions; pixel size official 0.243 um/px"),
    ("slide", "1 lesions; pixel size each slide's own (0.5 um/px)"),
])
def test_cli_names_the_pixel_size(pixel_size, shown, tmp_path, capsys):
    truth, det = _folders(tmp_path)
    out = tmp_path / "eval"
    capsys.readouterr()
    assert main(["pathology", "evaluate", "--detections", str(det), "--truth", str(truth), "--out", str(out),
                 "--pixel-size", pixel_size]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"FROC {FROC_TWO_SLIDES:.4f} over 2 slides ({shown})"), line
    m = json.loads((out / "metrics.json").read_text())
    assert m["pixel_size"] == pixel_size and m["pixel_size_um"] == [0.243 if pixel_size == "official" else 0.5]


def test_cli_refuses_an_unknown_pixel_size(tmp_path, one_line_error):
    truth, det = _folders(tmp_path)
    line = one_line_error(["pathology", "evaluate", "--detections", str(det), "--truth", str(truth),
                                    "--out", str(tmp_path / "eval"), "--pixel-size", "scanner"])
    assert "expected --pixel-size official|slide, found 'scanner'" in line


def test_only_itc_at_the_official_size_names_the_slides_own(tmp_path):
    truth, det = tmp_path / "truth", tmp_path / "det"
    truth.mkdir()
    det.mkdir()
    level5 = np.zeros((64, 64), np.uint8)
    level5[20:32, 20:32] = 255  # 192 um at the slide's 0.5 um/px, 93 um at the official 0.243
    write_pyramid_tiff(truth / "tumor_001_Mask.tif", np.kron(level5, np.ones((32, 32), np.uint8)), mpp=0.5,
                       tile=256, min_size=64, mode="max")
    (det / "tumor_001.csv").write_text("0.800000,832,832\n")
    (det / "normal_001.csv").write_text(NORMAL_CSV)
    with pytest.raises(InputError, match=r"found only 1 isolated-tumour-cell region\(s\) at the official "
                                         r"0.243 um/px; the slides are at 0.5 um/px \(--pixel-size slide"):
        _run(truth, det, tmp_path / "eval")
    m = _run(truth, det, tmp_path / "eval", pixel_size="slide")
    # normal_001's 0.9 comes before the lesion's 0.8: sensitivity 0 at 1/4 FP, 1 from 1/2 on
    assert m["lesions"] == 1 and m["froc"] == pytest.approx(5 / 6, abs=1e-12)
