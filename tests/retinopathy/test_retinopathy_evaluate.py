"""Operating points on hand-made scores; kappa and AUC against scikit-learn."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from deepsci.apps.retinopathy.evaluate import (
    bootstrap_auc,
    choose_operating_points,
    confusion,
    plot_roc,
    quadratic_kappa,
    screening_report,
    sens_spec,
    weighted_auc,
)
from deepsci.core.errors import InputError


def test_operating_points_hand_made():
    # 40 referable, 60 not. Scores chosen so the answers can be read off:
    y = np.array([1] * 40 + [0] * 60)
    pos = np.linspace(0.40, 0.99, 40)          # referable: 0.40 .. 0.99
    neg = np.linspace(0.0, 0.60, 60)           # non-referable: 0.0 .. 0.60
    s = np.concatenate([pos, neg])
    pts = choose_operating_points(y, s, target_sensitivity=0.975, target_specificity=0.98)
    hs, hp = pts["high_sensitivity"], pts["high_specificity"]
    # 97.5 % of 40 positives = 39: the threshold is the 39th highest positive score.
    assert hs.threshold == pytest.approx(pos[1])
    assert hs.sensitivity == pytest.approx(39 / 40)
    assert hs.specificity == pytest.approx(sens_spec(y, s, hs.threshold)[1])
    # 98 % of 60 negatives = 58.8 -> 59 must be below: the lowest threshold above the 59th.
    assert hp.specificity >= 0.98
    assert (neg >= hp.threshold).sum() <= 1
    assert hp.sensitivity == pytest.approx((pos >= hp.threshold).mean())
    # No other threshold meeting a target does better on the other measure.
    for t in np.unique(s):
        se, sp = sens_spec(y, s, t)
        if se >= 0.975:
            assert sp <= hs.specificity
        if sp >= 0.98:
            assert se <= hp.sensitivity
    assert hs.threshold <= hp.threshold


def test_operating_points_on_separable_validation():
    # Every threshold in (0.3, 0.7] separates perfectly: the high-sensitivity
    # point must take the lowest such threshold, the high-specificity the highest.
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    pts = choose_operating_points(y, s)
    assert pts["high_sensitivity"].threshold == 0.7
    assert pts["high_specificity"].threshold == 0.7
    s2 = np.array([0.1, 0.2, 0.3, 0.6, 0.8, 0.9])
    y2 = np.array([0, 0, 0, 1, 1, 1])
    p2 = choose_operating_points(y2, s2, target_sensitivity=0.6, target_specificity=0.6)
    # sens >= 0.6 and spec 1.0 hold for thresholds 0.6 and 0.8: the lower is chosen.
    assert p2["high_sensitivity"].threshold == 0.6
    # spec >= 0.6 with best sensitivity (1.0): thresholds 0.6 (and below, worse spec
    # but still >= 0.6 at 0.3: spec 2/3). Best sensitivity ties -> highest threshold.
    assert p2["high_specificity"].threshold == 0.6


def test_crossed_operating_points_are_swapped():
    # One negative at 0.75 among positives: the sensitivity rule alone picks 0.8
    # (sens 4/5 >= 0.75, spec 1.0) and the specificity rule alone picks 0.5
    # (spec 4/5 >= 0.75, sens 1.0); both meet both targets, so the
    # high-sensitivity point must be the lower threshold.
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.75, 0.5, 0.8, 0.85, 0.9, 0.95])
    pts = choose_operating_points(y, s, target_sensitivity=0.75, target_specificity=0.75)
    hs, hp = pts["high_sensitivity"], pts["high_specificity"]
    assert hs.threshold == 0.5 and hs.sensitivity == 1.0 and hs.specificity == 0.8
    assert hp.threshold == 0.8 and hp.sensitivity == 0.8 and hp.specificity == 1.0


def test_operating_points_applied_unchanged():
    rng = np.random.default_rng(1)
    yv = rng.integers(0, 2, 300)
    sv = np.clip(yv * 0.4 + rng.normal(0.3, 0.2, 300), 0, 1)
    pts = choose_operating_points(yv, sv)
    yt = rng.integers(0, 2, 200)
    st_ = np.clip(yt * 0.4 + rng.normal(0.3, 0.2, 200), 0, 1)
    rep = screening_report(yt, st_, yt * 2, np.eye(5)[yt * 2], pts, n_boot=100)
    for name, op in pts.items():
        assert rep[name]["threshold"] == op.threshold
        assert rep[name]["sensitivity"] == pytest.approx(sens_spec(yt, st_, op.threshold)[0])
    assert rep["kappa"] == pytest.approx(1.0)


def test_operating_points_perfect_and_degenerate():
    y = np.array([0, 0, 1, 1])
    pts = choose_operating_points(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert pts["high_sensitivity"].sensitivity == 1 and pts["high_sensitivity"].specificity == 1
    pts = choose_operating_points(y, np.array([0.95, 0.2, 0.8, 0.9]))
    assert pts["high_specificity"].specificity == 1.0
    with pytest.raises(InputError, match="both"):
        choose_operating_points(np.zeros(5), np.arange(5))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=2, max_size=60))
def test_kappa_matches_sklearn(pairs):
    a, b = np.array(pairs).T
    ours = quadratic_kappa(a, b)
    ref = cohen_kappa_score(a, b, weights="quadratic", labels=range(5))
    assert ours == pytest.approx(ref, abs=1e-10, nan_ok=True)


def test_kappa_full_icdr_scale_with_absent_grade():
    # Grade 3 absent: weighting only the grades present would give another value.
    a = np.array([0, 0, 1, 2, 4, 4, 2, 1])
    b = np.array([0, 1, 1, 2, 4, 2, 2, 0])
    full = cohen_kappa_score(a, b, weights="quadratic", labels=range(5))
    assert quadratic_kappa(a, b) == pytest.approx(full, abs=1e-12)
    assert abs(full - cohen_kappa_score(a, b, weights="quadratic")) > 1e-3


def test_weighted_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.normal(y * 0.5, 1.0), 1)  # many ties
    w = rng.integers(0, 4, (5, 60))
    ours = weighted_auc(y, s, w)
    for row, v in zip(w, ours, strict=True):
        assert v == pytest.approx(roc_auc_score(y, s, sample_weight=row), abs=1e-12)


def test_patient_bootstrap_equals_naive_transcription():
    rng = np.random.default_rng(5)
    patients = np.repeat([f"p{i}" for i in range(30)], 2)
    y = np.repeat(rng.integers(0, 2, 30), 2)
    s = np.round(y + rng.normal(0, 1, 60), 1)
    auc, lo, hi = bootstrap_auc(y, s, patients=patients, n_boot=200, seed=9)
    ids, unit = np.unique(patients, return_inverse=True)
    r, boots = np.random.default_rng(9), []
    while len(boots) < 200:
        take = np.concatenate([np.nonzero(unit == k)[0] for k in r.integers(0, len(ids), len(ids))])
        if y[take].min() == y[take].max():
            continue
        boots.append(roc_auc_score(y[take], s[take]))
    assert (lo, hi) == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])), abs=1e-12)


def test_patient_bootstrap_coverage_with_correlated_eyes():
    # Binormal scores, both eyes of a patient share the label and a patient
    # effect (correlation 0.8): true AUC = Phi(mu / sqrt(2)).
    from scipy.stats import norm

    mu, rho, n_pat, reps = 1.0, 0.8, 60, 300
    true_auc = norm.cdf(mu / np.sqrt(2))
    rng = np.random.default_rng(0)
    cover = {"patient": 0, "image": 0}
    for r in range(reps):
        lab = np.repeat(rng.random(n_pat) < 0.4, 2).astype(int)
        if lab.min() == lab.max():
            lab[:2] = 1 - lab[2]
        u = np.repeat(rng.normal(0, np.sqrt(rho), n_pat), 2)
        s = mu * lab + u + rng.normal(0, np.sqrt(1 - rho), 2 * n_pat)
        pats = np.repeat(np.arange(n_pat), 2)
        for how, p in (("patient", pats), ("image", None)):
            _, lo, hi = bootstrap_auc(lab, s, patients=p, n_boot=300, seed=r)
            cover[how] += lo <= true_auc <= hi
    assert 0.90 <= cover["patient"] / reps <= 0.99
    assert cover["image"] / reps < cover["patient"] / reps - 0.04


def test_auc_and_bootstrap_against_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = y * 0.3 + rng.normal(0, 0.3, 400)
    auc, lo, hi = bootstrap_auc(y, s, n_boot=300, seed=1)
    assert auc == pytest.approx(roc_auc_score(y, s))
    assert lo < auc < hi and hi - lo < 0.15


def test_confusion_and_plot(tmp_path):
    cm = confusion([0, 1, 2, 2, 4], [0, 1, 2, 3, 4])
    assert cm.shape == (5, 5) and cm[2, 3] == 1 and cm.trace() == 4
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    path = plot_roc(y, s, choose_operating_points(y, s), tmp_path / "roc.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
