"""Field of view, scale normalisation, gradability and the preprocessing cache."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage as ndi
from skimage import data

from deepsci.apps.retinopathy.preprocess import (
    PreprocessConfig,
    crop_to_fov,
    find_fov,
    local_contrast,
    preprocess_image,
    preprocess_table,
)

RETINA = data.retina()  # (1411, 1411, 3): full circular field of view on black


def test_fov_on_retina():
    fov = find_fov(RETINA)
    assert fov.found
    assert abs(fov.cy - 702) < 6 and abs(fov.cx - 704) < 6
    assert abs(fov.radius - 698) < 8


@pytest.mark.parametrize("scale, dx, dy, canvas", [
    (0.5, 100, 30, (760, 1000)),     # small, shifted right and down
    (0.8, 0, -80, (1000, 1300)),     # clipped at the top, as many EyePACS photographs
    (0.6, 250, 0, (700, 1200)),      # clipped top and bottom, off-centre
])
def test_fov_on_shifted_scaled_copies(scale, dx, dy, canvas):
    side = round(1411 * scale)
    small = np.asarray(Image.fromarray(RETINA).resize((side, side), Image.BILINEAR))
    h, w = canvas
    img = np.zeros((h, w, 3), np.uint8)
    top, left = (h - side) // 2 + dy, (w - side) // 2 + dx
    ys, xs = max(0, -top), max(0, -left)
    yd, xd = max(0, top), max(0, left)
    n, m = min(side - ys, h - yd), min(side - xs, w - xd)
    img[yd:yd + n, xd:xd + m] = small[ys:ys + n, xs:xs + m]
    fov = find_fov(img)
    assert fov.found
    # Expected: the retina's own circle, scaled and moved.
    assert abs(fov.radius - 698.3 * scale) < 0.02 * 698.3 * scale + 2
    assert abs(fov.cx - (left + 703.7 * scale)) < 6
    assert abs(fov.cy - (top + 702.4 * scale)) < 6


@pytest.mark.parametrize("size", [64, 299])
def test_scale_normalisation(size):
    out = crop_to_fov(RETINA, find_fov(RETINA), size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    # The fundus fills the square: its diameter is `size` along the middle row and column.
    bright = out.max(-1) > 20
    assert bright[size // 2].sum() >= 0.95 * size
    assert bright[:, size // 2].sum() >= 0.95 * size
    assert not bright[0, 0] and not bright[-1, -1]  # corners are outside the circle
    # A half-size copy gives the same normalised image.
    half = np.asarray(Image.fromarray(RETINA).resize((706, 706), Image.BILINEAR))
    out2 = crop_to_fov(half, find_fov(half), size)
    assert np.abs(out.astype(int) - out2.astype(int)).mean() < 8


def test_local_contrast_and_dtype():
    scaled = crop_to_fov(RETINA, find_fov(RETINA), 128)
    lc = local_contrast(scaled)
    assert lc.shape == scaled.shape and lc.dtype == np.uint8
    inside = lc[40:88, 40:88]
    assert abs(inside.mean() - 128) < 20  # the slow background is removed


def test_gradability_flags():
    cfg = PreprocessConfig(size=128)
    out, q, _ = preprocess_image(RETINA, cfg)
    assert q.gradable and out.shape == (128, 128, 3)
    blurred = np.stack([ndi.gaussian_filter(RETINA[..., c], 12) for c in range(3)], -1)
    _, q, _ = preprocess_image(blurred, cfg)
    assert not q.gradable and q.reasons == ["too blurred"]
    _, q, _ = preprocess_image((RETINA * 0.05).astype(np.uint8), cfg)
    assert not q.gradable and "too dark" in q.reasons
    out, q, fov = preprocess_image(np.zeros((300, 400, 3), np.uint8), cfg)
    assert out is None and not fov.found and "no field of view" in q.reasons[0]
    # A uniformly bright frame has no circular edge: not a fundus.
    out, q, fov = preprocess_image(np.full((300, 400, 3), 180, np.uint8), cfg)
    assert out is None and not q.gradable
    sq = np.zeros((300, 400, 3), np.uint8)
    sq[50:250, 100:300] = 200
    assert not find_fov(sq).found


def test_cache_resumes_and_flags_unreadable(tmp_path):
    good = tmp_path / "good.jpeg"
    Image.fromarray(RETINA[::4, ::4]).save(good)
    bad = tmp_path / "bad.jpeg"
    bad.write_bytes(good.read_bytes()[:500])
    df = pd.DataFrame({"image": ["good", "bad"], "path": [str(good), str(bad)]})
    cfg = PreprocessConfig(size=64)
    res = preprocess_table(df, cfg, tmp_path / "cache", workers=1)
    assert list(res["gradable"]) == [1, 0]
    assert "unreadable" in res["reasons"].iloc[1]
    cached = res["cache"].iloc[0]
    assert np.asarray(Image.open(cached)).shape == (64, 64, 3)
    mtime = (tmp_path / "cache").stat().st_mtime_ns
    before = sorted(p.name for p in (tmp_path / "cache").iterdir())
    res2 = preprocess_table(df, cfg, tmp_path / "cache", workers=1)
    assert res2["cache"].iloc[0] == cached
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == before
    assert (tmp_path / "cache").stat().st_mtime_ns == mtime
    # A different size is a different cache entry.
    res3 = preprocess_table(df, PreprocessConfig(size=96), tmp_path / "cache", workers=1)
    assert res3["cache"].iloc[0] != cached
