"""The Camelyon16 FROC against an independent transcription of the official algorithm.

The transcription below is written from the rules of ``Evaluation_FROC.py``
(not from deepsci's code): per slide, detections in decreasing probability;
a detection on a lesion label is that lesion's true positive if it is the
first to reach it, and ignored after; on an isolated-tumour-cell label it is
ignored; anywhere else (or on a normal slide) it is a false positive. As in the
script, lesion probabilities live in a float32 array and false positives stay
Python floats read from the CSV text, and the thresholds are the distinct
values of both, the lowest skipped. It is fed what ``detect`` writes: ``%.6f``
strings parsed with ``float``.
"""
import json

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import measure

from deepsci.apps.pathology import evaluate
from deepsci.apps.pathology.io import read_detections_csv, write_detections_csv, write_pyramid_tiff

POINTS = (0.25, 0.5, 1, 2, 4, 8)
# 6-decimal probabilities that float32 rounds down (0.7, 0.9, 0.55), up (0.3, 0.1), or keeps
# (0.5, 1, 0): a lesion and a false positive drawn from these tie often.
POOL = ("0.700000", "0.300000", "0.900000", "0.100000", "0.550000", "0.123457", "0.999999",
        "0.000001", "0.500000", "1.000000", "0.000000")


# --------------------------------------------------------------------------- the transcription
def ref_mask(tumour: np.ndarray, mpp: float, level: int) -> np.ndarray:
    """Grow the tumour by 37.5 um, fill holes, label 8-connected regions."""
    grow_px = 75.0 / 2 / (mpp * 2 ** level)
    inside = ndi.distance_transform_edt(np.where(tumour, 0, 1)) < grow_px
    return measure.label(ndi.binary_fill_holes(inside), connectivity=2)


def ref_itc(labels: np.ndarray, mpp: float, level: int) -> list[int]:
    """Labels whose major axis is below 275 um (200 um + the growth)."""
    limit = 275.0 / (mpp * 2 ** level)
    return [r.label for r in measure.regionprops(labels) if r.axis_major_length < limit]


def ref_slide(lines: list[str], labels, itc: list[int], level: int):
    """(false-positive probabilities, per-label float32 lesion probabilities, lesions to find)."""
    rows = [line.split(",") for line in lines if line.strip()]
    dets = sorted(((float(p), int(x), int(y)) for p, x, y in rows), key=lambda d: -d[0])
    n_labels = 0 if labels is None else int(labels.max())
    found: dict[int, np.float32] = {}
    fps: list[float] = []
    for prob, x, y in dets:
        label = 0 if labels is None else int(labels[y // 2 ** level, x // 2 ** level])
        if label == 0:
            fps.append(prob)
        elif label not in itc and label not in found:
            found[label] = np.float32(prob)
    tps = np.array([found.get(k, 0.0) for k in range(1, n_labels + 1)], dtype=np.float32)
    return fps, tps, n_labels - len(itc)


def ref_froc(slides) -> tuple[np.ndarray, np.ndarray, float]:
    """(FPs per slide, sensitivity, score) over ``[(fps, tps, n_tumours), ...]``."""
    fps = [p for s in slides for p in s[0]]
    tps = [t for s in slides for t in s[1]]  # np.float32 items, as the script iterates its arrays
    # sorted by exact value: NumPy 2 would compare a float with a float32 in float32 and could
    # swap p and float32(p); the script was written for NumPy 1, which compares them exactly.
    thresholds = sorted(set(fps + tps), key=float)[1:]
    fp_arr, tp_arr = np.asarray(fps, dtype=np.float64), np.asarray(tps, dtype=np.float32)
    # each threshold in its own type: a Python float meets the float32 array in float32
    n_fp = [int((fp_arr >= t).sum()) for t in thresholds] + [0]
    n_tp = [int((tp_arr >= t).sum()) for t in thresholds] + [0]
    total_fps = np.asarray(n_fp) / float(len(slides))
    sens = np.asarray(n_tp) / float(sum(s[2] for s in slides))
    score = float(np.mean([np.interp(p, total_fps[::-1], sens[::-1]) for p in POINTS]))
    return total_fps, sens, score


# --------------------------------------------------------------------------- helpers
def _deepsci(path, mask, mpp, level) -> evaluate.SlideHits:
    probs, xs, ys = read_detections_csv(path)
    if mask is None:
        return evaluate.slide_hits(probs, xs, ys, None, set(), level)
    lab = evaluate.evaluation_mask(mask, mpp, level)
    return evaluate.slide_hits(probs, xs, ys, lab, evaluate.itc_labels(lab, mpp, level), level)


def _reference(path, mask, mpp, level):
    lines = path.read_text().splitlines()
    if mask is None:
        return ref_slide(lines, None, [], level)
    lab = ref_mask(mask, mpp, level)
    return ref_slide(lines, lab, ref_itc(lab, mpp, level), level)


def _compare(slides, tmp_path, mpp, level) -> float:
    """Write each ``(name, mask, [(prob str, x, y)])`` as detect does; deepsci == transcription."""
    ours, want = [], []
    for name, mask, dets in slides:
        path = write_detections_csv(tmp_path / f"{name}.csv", [float(p) for p, _, _ in dets],
                                    [x for _, x, _ in dets], [y for _, _, y in dets])
        ours.append(_deepsci(path, mask, mpp, level))
        want.append(_reference(path, mask, mpp, level))
    want_fps, want_sens, want_score = ref_froc(want)
    got_fps, got_sens = evaluate.froc_curve(ours)
    np.testing.assert_array_equal(got_fps, want_fps)
    np.testing.assert_array_equal(got_sens, want_sens)
    score, at = evaluate.froc_score(got_fps, got_sens)
    assert score == pytest.approx(want_score, abs=1e-12)
    return score


# --------------------------------------------------------------------------- tests
def _one_lesion_slides(tp: str, fp: str):
    mask = np.zeros((16, 16), bool)
    mask[4:10, 4:10] = True  # level 0: a square lesion, no growth at mpp 1000 (75 um < 1 px)
    return [("tumor_001", mask, [(tp, 6, 6), (fp, 14, 14)]), ("normal_001", None, [("0.200000", 1, 1)])]


@pytest.mark.parametrize("tie, want", [
    ("0.700000", 11 / 12),  # float32(0.7) < 0.7: the lesion stays found at threshold 0.7
    ("0.300000", 1.0),      # float32(0.3) > 0.3: a threshold drops the false positive first
])
def test_lesion_tied_with_false_positive_at_six_decimals(tie, want, tmp_path):
    slides = _one_lesion_slides(tie, tie)
    score = _compare(slides, tmp_path, mpp=1000.0, level=0)
    # by hand for 0.7: thresholds float32(0.7) and 0.7 both keep the lesion and the FP
    # (1 FP over 2 slides), then (0, 0): sensitivity 1/2 at 1/4 FP and 1 from 1/2 FP on.
    assert score == pytest.approx(want, abs=1e-12)
    fps, sens = evaluate.froc_curve([_deepsci(tmp_path / f"{n}.csv", m, 1000.0, 0) for n, m, _ in slides])
    if tie == "0.700000":
        np.testing.assert_array_equal(fps, [0.5, 0.5, 0.0])
        np.testing.assert_array_equal(sens, [1.0, 1.0, 0.0])


def test_ties_itc_border_and_empty_slides_match_the_transcription(tmp_path):
    """One hand-built set: every adversarial case at once, on an 8x-downsampled mask."""
    level, mpp = 3, 1.0  # 8 um per mask pixel: growth 4.7 px, ITC below 34.4 px major axis
    big = np.zeros((48, 64), bool)
    big[8:34, 8:34] = True           # a lesion (major axis ~ 41 px grown)
    big[40:42, 50:52] = True         # isolated tumour cells
    lab = ref_mask(big, mpp, level)
    assert len(ref_itc(lab, mpp, level)) == 1 and lab.max() == 2
    rim = np.argwhere((lab == lab[10, 10]) & ~ndi.binary_erosion(lab == lab[10, 10]))[0]
    on_rim = (int(rim[1]) * 8 + 7, int(rim[0]) * 8 + 7)  # last level-0 pixel of a rim mask pixel
    slides = [
        ("tumor_001", big, [("0.700000", 100, 100), ("0.700000", 500, 20),       # tie TP / FP
                            ("0.900000", *on_rim), ("0.300000", 150, 150),      # 2nd hit: ignored
                            ("0.999999", 50 * 8 + 3, 40 * 8 + 4),               # on the ITC
                            ("0.550000", 64 * 8 - 1, 48 * 8 - 1)]),             # last mask pixel
        ("tumor_002", big.copy(), []),                                           # nothing detected
        ("normal_001", None, [("0.550000", 3, 3), ("0.900000", 9, 9), ("0.300000", 0, 0)]),
        ("normal_002", None, []),                                                # nothing detected
    ]
    score = _compare(slides, tmp_path, mpp, level)
    hits = _deepsci(tmp_path / "tumor_001.csv", big, mpp, level)
    assert list(hits.tp_probs) == [np.float32(0.9), 0.0] and sorted(hits.fp_probs) == [0.55, 0.7]
    assert 0.0 < score < 1.0


@pytest.mark.parametrize("seed", range(30))
def test_random_adversarial_sets_match_the_transcription(seed, tmp_path):
    rng = np.random.default_rng(seed)
    level = int(rng.integers(0, 4))
    # 6-16 um per mask pixel: growth 2-6 px, ITC below 17-46 px, so both kinds occur
    mpp = float(rng.choice([6.0, 8.0, 16.0])) / 2 ** level
    h, w = 40, 56
    slides = []
    for s in range(int(rng.integers(2, 7))):
        tumour = s == 0 or rng.random() < 0.5
        mask = np.zeros((h, w), bool)
        if tumour:
            rr, cc = np.ogrid[:h, :w]
            for _ in range(int(rng.integers(1, 5))):  # small: ITC, larger: lesions
                r, c, rad = rng.integers(0, h), rng.integers(0, w), rng.integers(0, 15)
                mask |= (rr - r) ** 2 + (cc - c) ** 2 <= rad ** 2
        lab = ref_mask(mask, mpp, level) if tumour else np.zeros((h, w), int)
        dets = []
        for _ in range(int(rng.choice([0, rng.integers(1, 30)]))):
            kind = rng.integers(0, 4)
            on = np.argwhere(lab > 0)
            if kind == 0 and len(on):   # somewhere on a lesion (or an ITC)
                r, c = on[rng.integers(len(on))]
            elif kind == 1:             # the mask's last row or column
                r, c = (h - 1, rng.integers(0, w)) if rng.random() < 0.5 else (rng.integers(0, h), w - 1)
            else:
                r, c = rng.integers(0, h), rng.integers(0, w)
            sub = 2 ** level - 1 if rng.random() < 0.5 else rng.integers(0, 2 ** level)
            p = POOL[rng.integers(len(POOL))] if rng.random() < 0.7 else f"{rng.random():.6f}"
            dets.append((p, int(c) * 2 ** level + int(sub), int(r) * 2 ** level + int(sub)))
        slides.append((f"{'tumor' if tumour else 'normal'}_{s:03d}", mask if tumour else None, dets))
    n_tumours = sum(_reference_counts(m, mpp, level) for _, m, _ in slides)
    if n_tumours == 0:
        slides[0][1][5:35, 5:45] = True  # one sure lesion, so the sensitivity is defined
    _compare(slides, tmp_path, mpp, level)


def _reference_counts(mask, mpp, level) -> int:
    if mask is None:
        return 0
    lab = ref_mask(mask, mpp, level)
    return int(lab.max()) - len(ref_itc(lab, mpp, level))


# --------------------------------------------------------------------------- files, pixel size
def _write_mask(path, blocks, *, size: int = 2048, mpp: float = 0.5):
    """A ``_Mask.tif`` with tumour on whole 32-px blocks ``(r0, r1, c0, c1)`` (level-5 pixels)."""
    mask = np.zeros((size // 32, size // 32), np.uint8)
    for r0, r1, c0, c1 in blocks:
        mask[r0:r1, c0:c1] = 255
    write_pyramid_tiff(path, np.kron(mask, np.ones((32, 32), np.uint8)), mpp=mpp, tile=256,
                       min_size=64, mode="max")
    return mask > 0


@pytest.mark.parametrize("pixel_size", ["official", "slide"])
def test_run_evaluate_pixel_size_matches_the_transcription(pixel_size, tmp_path):
    truth, det = tmp_path / "truth", tmp_path / "det"
    truth.mkdir()
    det.mkdir()
    # a 28-px lesion (counted either way) and a 12-px one: 192 um at the slide's 0.5 um/px, a
    # lesion; 93 um at the official 0.243 um/px, isolated tumour cells.
    mask = _write_mask(truth / "tumor_001_Mask.tif", [(4, 32, 4, 32), (44, 56, 44, 56)])
    (det / "tumor_001.csv").write_text("0.800000,512,512\n0.600000,1600,1600\n0.700000,1285,160\n"
                                       "0.300000,2047,2047\n")
    (det / "normal_001.csv").write_text("0.900000,40,40\n0.600000,900,900\n0.100000,5,5\n")
    m = evaluate.run_evaluate(evaluate.EvaluateConfig(detections=str(det), truth=str(truth),
                                                      out=str(tmp_path / "eval"), pixel_size=pixel_size))
    mpp = 0.243 if pixel_size == "official" else 0.5
    want = [_reference(det / "tumor_001.csv", mask, mpp, 5), _reference(det / "normal_001.csv", None, mpp, 5)]
    want_fps, want_sens, want_score = ref_froc(want)
    assert m["froc"] == pytest.approx(want_score, abs=1e-12)
    assert m["lesions"] == (1 if pixel_size == "official" else 2)
    assert m["pixel_size"] == pixel_size and m["pixel_size_um"] == [mpp]
    curve = np.loadtxt(tmp_path / "eval" / "froc_curve.csv", delimiter=",", skiprows=1, ndmin=2)
    np.testing.assert_allclose(curve, np.column_stack([want_fps, want_sens]), atol=1e-6)
    rows = {r["image"]: r for r in json.loads((tmp_path / "eval" / "per_slide.json").read_text())}
    assert rows["tumor_001"]["itc"] == (1 if pixel_size == "official" else 0)
    assert rows["tumor_001"]["pixel_size_um"] == mpp and rows["normal_001"]["pixel_size_um"] is None
    run = json.loads((tmp_path / "eval" / "run.json").read_text())
    assert run["config"]["pixel_size"] == pixel_size
