"""NMS, the Camelyon16 FROC (hand-computed and vs. the official algorithm), slide AUC."""
import numpy as np
import pytest
from skimage import measure

from deepsci.apps.pathology import detect, evaluate
from deepsci.core.errors import InputError


def test_nms_on_hand_made_heatmap():
    hm = np.zeros((20, 20))
    hm[5, 5], hm[5, 6], hm[6, 5] = 0.9, 0.85, 0.8   # one blob
    hm[15, 15] = 0.7                                  # a second lesion
    hm[15, 18] = 0.6                                  # within radius of the second
    hm[0, 19] = 0.3                                   # below threshold
    out = detect.nms(hm, radius=4, threshold=0.5)
    assert out == [(0.9, 5, 5), (0.7, 15, 15)]
    assert [p for p, *_ in detect.nms(hm, radius=1, threshold=0.5)] == [0.9, 0.7, 0.6]
    assert detect.nms(hm, radius=4, threshold=0.95) == []


def test_froc_hand_computed():
    # slide 1: two lesions; detections hit lesion 1 twice (0.9, 0.4), lesion 2 once
    # (0.6) and glass once (0.5). slide 2: normal, one detection (0.7).
    mask = np.zeros((40, 40), bool)
    mask[5:15, 5:15] = True
    mask[25:35, 25:35] = True
    labels = measure.label(mask, connectivity=2)
    h1 = evaluate.slide_hits([0.9, 0.4, 0.6, 0.5], [8, 10, 30, 20], [8, 10, 30, 2], labels, set(), 0)
    h2 = evaluate.slide_hits([0.7], [1], [1], None, set(), 0)
    assert list(h1.tp_probs) == pytest.approx([0.9, 0.6]) and list(h1.fp_probs) == [0.5]
    fps, sens = evaluate.froc_curve([h1, h2])
    # thresholds 0.6, 0.7, 0.9 (the lowest distinct value 0.5 is skipped, as in the script)
    np.testing.assert_allclose(fps, [0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(sens, [1.0, 0.5, 0.5, 0.0])
    score, at = evaluate.froc_score(fps, sens)
    assert at[0.25] == pytest.approx(0.5) and at[0.5] == 1.0 and at[8.0] == 1.0
    assert score == pytest.approx((0.5 + 1 + 1 + 1 + 1 + 1) / 6)


def test_evaluation_mask_growth_and_itc():
    mpp, level = 0.243, 5
    px = mpp * 2 ** level  # 7.776 um per mask pixel
    mask = np.zeros((200, 200), bool)
    mask[20:60, 20:60] = True          # 311 um lesion: counted
    mask[100:105, 100:105] = True      # ~39 um: isolated tumour cells
    mask[62:64, 20:60] = True          # 2 px gap < 2 * 37.5 um growth: merged with the first
    lab = evaluate.evaluation_mask(mask, mpp, level)
    assert lab.max() == 2
    itc = evaluate.itc_labels(lab, mpp, level)
    assert itc == {lab[102, 102]}
    assert lab[61, 30] == lab[30, 30]
    assert 275 / px == pytest.approx(35.36, abs=0.01)


def _froc_in_exact_order(froc_data):
    """The script's computeFROC with its thresholds sorted by exact value.

    ``sorted(set(fps + tps))`` meets a float and a float32 of nearly the same value; NumPy 2
    compares those two in float32, finds them equal and leaves them in set order, so p can
    come after float32(p) > p and the false positives rise with the threshold. NumPy 1, which
    the script was written for, compares them exactly.
    """
    fps = [p for sub in froc_data[1] for p in sub]
    tps = [t for sub in froc_data[2] for t in sub]
    n_fp, n_tp = [], []
    for thresh in sorted(set(fps + tps), key=float)[1:]:
        n_fp.append((np.asarray(fps) >= thresh).sum())
        n_tp.append((np.asarray(tps) >= thresh).sum())
    return (np.asarray(n_fp + [0]) / float(len(froc_data[0])),
            np.asarray(n_tp + [0]) / float(sum(froc_data[3])))


@pytest.mark.parametrize("seed", range(6))
def test_froc_matches_official_algorithm_on_random_detections(seed, official):
    rng = np.random.default_rng(seed)
    level, mpp = 3, 0.5
    names, fp_l, tp_l, n_l, ours = [], [], [], [], []
    for s in range(4):
        is_tumour = s < 3
        mask = np.zeros((96, 96), bool)
        if is_tumour:
            for _ in range(rng.integers(1, 5)):
                r, c, rad = rng.integers(5, 90), rng.integers(5, 90), rng.integers(1, 12)
                rr, cc = np.ogrid[:96, :96]
                mask |= (rr - r) ** 2 + (cc - c) ** 2 <= rad ** 2
        n = int(rng.integers(0, 40))
        # probabilities on a coarse grid so ties happen, as with real heatmaps, and as Python
        # floats parsed from the %.6f text detect writes (what the script reads): NumPy compares
        # a float64 scalar with the script's float32 lesion array in float64, a float in float32
        probs = [float(f"{p:.6f}") for p in np.round(rng.random(n), 2)]
        xs = list(rng.integers(0, 96 * 8, n))
        ys = list(rng.integers(0, 96 * 8, n))
        if is_tumour and mask.any():
            off = official.mask(mask, mpp, level)
            itc = official.itc(off, mpp, level)
            fp, tp, nt = official.fp_tp(ys, xs, probs, True, off, itc, level)
            lab = evaluate.evaluation_mask(mask, mpp, level)
            np.testing.assert_array_equal(lab, off)
            assert evaluate.itc_labels(lab, mpp, level) == set(itc)
            ours.append(evaluate.slide_hits(probs, xs, ys, lab, set(itc), level))
        else:
            fp, tp, nt = official.fp_tp(ys, xs, probs, False, None, [], level)
            ours.append(evaluate.slide_hits(probs, xs, ys, None, set(), level))
        names.append(s)
        fp_l.append(fp)
        tp_l.append(tp)
        n_l.append(nt)
        np.testing.assert_allclose(np.sort(ours[-1].fp_probs), np.sort(fp))
        np.testing.assert_allclose(ours[-1].tp_probs, tp)
    if sum(n_l) == 0:
        with pytest.raises(InputError):
            evaluate.froc_curve(ours)
        return
    want_fps, want_sens = _froc_in_exact_order([names, fp_l, tp_l, n_l])
    # the fixture's sweep visits the same thresholds, only perhaps in another order
    fixture = official.froc([names, fp_l, tp_l, n_l])
    assert sorted(zip(*fixture, strict=True)) == sorted(zip(want_fps, want_sens, strict=True))
    got_fps, got_sens = evaluate.froc_curve(ours)
    np.testing.assert_allclose(got_fps, want_fps)
    np.testing.assert_allclose(got_sens, want_sens)
    want = np.mean([np.interp(t, want_fps[::-1], want_sens[::-1]) for t in evaluate.FROC_POINTS])
    assert evaluate.froc_score(got_fps, got_sens)[0] == pytest.approx(want)


def test_slide_auc():
    assert evaluate.slide_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    with pytest.raises(InputError, match="both tumour and normal"):
        evaluate.slide_auc([1, 1], [0.2, 0.3])
