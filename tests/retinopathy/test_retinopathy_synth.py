"""The synthetic generator follows the ICDR rules and writes an EyePACS folder."""
import dataclasses

import numpy as np
import pytest

from deepsci.apps.retinopathy.io import DatasetSpec, read_dataset
from deepsci.apps.retinopathy.synth import (
    _DD,
    _FOVEA,
    SynthConfig,
    _base,
    paint_lesions,
    run_synth,
    synth_image,
)
from deepsci.core.errors import ConfigError

S = 256


def _paint(grade, dme=False, seed=0):
    rgb = _base(S)[0].copy()
    mask, counts = paint_lesions(rgb, grade, dme, np.random.default_rng(seed), _base(S)[2])
    return rgb, mask, counts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_icdr_rules(seed):
    _, m0, _ = _paint(0, seed=seed)
    assert m0.max() == 0
    _, m1, c1 = _paint(1, seed=seed)
    assert set(np.unique(m1)) == {0, 1} and c1["microaneurysm"] >= 1
    _, m2, c2 = _paint(2, seed=seed)
    assert not np.isin(m2, (5, 6, 7)).any()
    assert c2["haemorrhage"] + c2["hard_exudate"] + c2["cotton_wool_spot"] >= 1
    _, m3, c3 = _paint(3, seed=seed)
    assert not np.isin(m3, (6, 7)).any()
    # Haemorrhages in all four quadrants (about the field-of-view centre).
    ys, xs = np.nonzero(m3 == 2)
    quads = {(int(y > S / 2), int(x > S / 2)) for y, x in zip(ys, xs, strict=True)}
    assert len(quads) == 4 and c3["haemorrhage"] >= 20
    _, m4, c4 = _paint(4, seed=seed)
    assert np.isin(m4, (6, 7)).any() and c4["neovascularisation"] >= 1


def test_dme_exudates_near_fovea():
    fy, fx = _FOVEA[0] * S, _FOVEA[1] * S
    yy, xx = np.mgrid[:S, :S]
    near = np.hypot(yy - fy, xx - fx) <= _DD * S  # within one disc diameter
    for seed in range(4):
        _, m, _ = _paint(2, dme=True, seed=seed)
        assert ((m == 3) & near).any()
        _, m, _ = _paint(3, dme=False, seed=seed)
        assert not ((m == 3) & near).any()
    with pytest.raises(ConfigError):
        _paint(1, dme=True)


def test_painted_lesions_change_pixels():
    base = _base(S)[0]
    rgb, mask, _ = _paint(3)
    diff = np.abs(rgb - base).sum(-1)
    assert diff[mask == 2].mean() > 10 * max(diff[mask == 0].mean(), 1e-6)


def test_synth_image_variants():
    rng = np.random.default_rng(0)
    a, ma, _ = synth_image(2, size=S, rng=rng, eye="left")
    b, mb, _ = synth_image(2, size=S, rng=rng, eye="right")
    assert a.dtype == np.uint8 and a.shape[:2] == ma.shape
    assert a.shape[1] >= S  # a wider camera frame around the fundus
    # Warped/recoloured/re-lit: two draws differ.
    assert a.shape != b.shape or np.abs(a.astype(int) - b.astype(int)).mean() > 3


def test_make_dataset_eyepacs_layout(tmp_path):
    cfg = SynthConfig(out=tmp_path, n_patients=4, size=128, seed=5, ungradable_frac=0.5)
    table = run_synth(cfg)
    df = read_dataset(DatasetSpec(tmp_path / "trainLabels.csv"))
    assert len(df) == 8 and set(df["eye"]) == {"left", "right"}
    assert (df.groupby("patient").size() == 2).all()
    assert (tmp_path / "masks" / f"{df['image'].iloc[0]}.png").is_file()
    assert ((df["dme"] == 1) <= (df["grade"] >= 2)).all()
    assert list(table["level"]) == list(df["grade"])
    first = (tmp_path / "train" / f"{df['image'].iloc[0]}.jpeg").read_bytes()
    run_synth(dataclasses.replace(cfg, out=tmp_path / "again"))
    assert (tmp_path / "again" / "train" / f"{df['image'].iloc[0]}.jpeg").read_bytes() == first
