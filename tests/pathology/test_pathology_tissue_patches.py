"""Tissue detection, patch sampling balance and multi-scale centring."""
import numpy as np
import pytest

from deepsci.apps.pathology import io, patches, synth, tissue


def test_tissue_on_synthetic_slide(slide_dir):
    rgb, _, truth, _ = synth.render_slide(
        synth.SynthConfig(width=1024, height=1024, mpp=0.5, n_tumours=0), seed=3)
    mask = tissue.tissue_mask(rgb[::8, ::8], mpp=4.0)
    t = truth[::8, ::8]
    assert (mask & t).sum() / (mask | t).sum() > 0.9
    with io.Slide(slide_dir / "normal_001.tif") as s:
        m, down = tissue.slide_tissue(s)
        assert 0.1 < m.mean() < 0.9 and down == pytest.approx(16, rel=0.01)


def test_tissue_on_tiny_crop_written_in_test(tmp_path):
    rgb, _, truth, _ = synth.render_slide(
        synth.SynthConfig(width=512, height=512, mpp=0.5, n_tumours=0), seed=4)
    crop = rgb.copy()
    crop[:, :200] = 243  # make the left side glass
    crop[300:310, 300:310] = 243  # a small tear inside tissue: filled as a hole
    crop[20:23, 20:23] = (150, 60, 160)  # a speck on the glass: removed
    io.write_pyramid_tiff(tmp_path / "crop.tif", crop, mpp=0.5, tile=64, min_size=32)
    with io.Slide(tmp_path / "crop.tif") as s:
        m, down = tissue.slide_tissue(s, tissue.TissueConfig(mpp=2.0, min_object_um2=500,
                                                             min_hole_um2=500))
    want = truth.copy()
    want[:, :200] = False
    w = want[::4, ::4]
    assert m.shape == w.shape
    assert (m & w).sum() / (m | w).sum() > 0.85
    assert not m[:10, :10].any()
    assert m[76, 76] == want[305, 305]


def test_tissue_all_glass_is_empty():
    glass = np.full((64, 64, 3), 240, np.uint8) + np.random.default_rng(0).integers(0, 3, (64, 64, 3),
                                                                                    dtype=np.uint8)
    assert not tissue.tissue_mask(glass, mpp=8.0).any()


def test_tissue_channel_axis():
    rgb, *_ = synth.render_slide(synth.SynthConfig(width=256, height=256, n_tumours=0), seed=1)
    a = tissue.tissue_mask(rgb, mpp=0.5)
    b = tissue.tissue_mask(np.moveaxis(rgb, -1, 0), mpp=0.5, channel_axis=0)
    np.testing.assert_array_equal(a, b)


def test_sampling_balance_and_labels(slide_dir):
    cfg = patches.PatchConfig(patch_size=32, magnifications=(20.0,), center_size=16)
    idx = [patches.index_slide(slide_dir / "tumor_001.tif", slide_dir / "tumor_001.xml", cfg),
           patches.index_slide(slide_dir / "normal_001.tif", None, cfg)]
    assert idx[0].is_tumour and not idx[1].is_tumour
    draws = patches.sample_positions(idx, 4000, np.random.default_rng(0))
    labels = np.array([d[3] for d in draws])
    assert abs(labels.mean() - 0.5) < 0.03
    # tumour examples come only from the tumour slide; normal ones from both
    assert all(d[0] == 0 for d in draws if d[3] == 1)
    slides_of_normal = np.array([d[0] for d in draws if d[3] == 0])
    assert 0.3 < slides_of_normal.mean() < 0.7
    # labels agree with the annotation: tumour positions lie within centre-size of tumour
    polys = io.read_asap_xml(slide_dir / "tumor_001.xml")
    full = io.rasterize(polys, (1024, 1024), 1.0)
    for si, x, y, lab in draws[:300]:
        if si != 0:
            continue
        r0, c0 = int(y), int(x)
        near = full[max(0, r0 - 24):r0 + 24, max(0, c0 - 24):c0 + 24].any()
        if lab:
            assert near


def test_multiscale_patches_share_centre(tmp_path):
    img = np.full((1024, 1024, 3), 240, np.uint8)
    cy, cx = 400, 600
    img[cy - 6:cy + 6, cx - 6:cx + 6] = (20, 20, 20)  # a dark marker
    io.write_pyramid_tiff(tmp_path / "m.tif", img, mpp=0.25, tile=64, min_size=64)
    cfg = patches.PatchConfig(patch_size=64, magnifications=(40.0, 20.0, 10.0))
    with io.Slide(tmp_path / "m.tif") as s:
        views = patches.read_example(s, cx, cy, cfg)
    masses = []
    for v, m in zip(views, (40, 20, 10), strict=True):
        ink = np.clip(240.0 - v.mean(axis=-1), 0, None)  # darkness as mass
        rr, cc = np.mgrid[:64, :64]
        assert ink.sum() > 0, m
        assert (ink * rr).sum() / ink.sum() == pytest.approx(31.5, abs=0.75), m
        assert (ink * cc).sum() / ink.sum() == pytest.approx(31.5, abs=0.75), m
        masses.append(ink.sum())
    # the 12x12 level-0 marker covers 4x fewer pixels per halving of magnification
    assert masses[0] / masses[1] == pytest.approx(4, rel=0.2)
    assert masses[1] / masses[2] == pytest.approx(4, rel=0.2)


def test_batched_multiscale_reading_matches_per_patch_reading(tmp_path, monkeypatch):
    rgb, _, _, _ = synth.render_slide(synth.SynthConfig(width=512, height=512, mpp=0.25), seed=2)
    io.write_pyramid_tiff(tmp_path / "s.tif", rgb, mpp=0.25, tile=64, min_size=32)
    cfg = patches.PatchConfig(patch_size=24, magnifications=(40.0, 20.0, 10.0))
    # a heatmap-like grid (stride 16 px, two rows) plus odd centres, one off the slide's edge
    grid = [(8 + 16 * c + 0.5, 8 + 16 * r + 0.5) for r in (3, 4) for c in range(6)]
    centres = np.array(grid + [(101.3, 333.7), (507.0, 3.0), (250.0, 250.0)])
    with io.Slide(tmp_path / "s.tif") as s:
        calls = []
        read = s.read_region
        monkeypatch.setattr(s, "read_region", lambda *a: calls.append(a) or read(*a))
        batched = patches.read_examples(s, centres, cfg)
        n_batched = len(calls)
        single = [patches.read_example(s, x, y, cfg) for x, y in centres]
    assert [b.shape for b in batched] == [(len(centres), 24, 24, 3)] * 3
    for k in range(3):
        np.testing.assert_array_equal(batched[k], np.stack([v[k] for v in single]))
    # every scale reads each grid row once (2 rows) plus the 3 loose centres
    assert n_batched <= 3 * (2 + 3) < len(calls) - n_batched


def test_augmentation_same_for_all_scales():
    tf = pytest.importorskip("tensorflow")
    x = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    a, b = patches.augment([tf.constant(x), tf.constant(x)], tf.constant([3, 4], tf.int64))
    np.testing.assert_allclose(a.numpy(), b.numpy())
    c, = patches.augment([tf.constant(x)], tf.constant([3, 5], tf.int64))
    assert not np.allclose(a.numpy(), c.numpy())
    assert a.numpy().min() >= 0 and a.numpy().max() <= 1


def test_patch_cache_reads_once_and_reaugments(slide_dir, tmp_path):
    cfg = patches.PatchConfig(patch_size=24, magnifications=(20.0, 10.0), center_size=8)
    idx = [patches.index_slide(slide_dir / "tumor_001.tif", slide_dir / "tumor_001.xml", cfg)]
    x1, y1 = patches.cached_pool(idx, cfg, n=20, seed=1, shard=0, cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and not any(".tmp" in f for f in files)
    x2, y2 = patches.cached_pool(idx, cfg, n=20, seed=1, shard=0, cache_dir=tmp_path)
    np.testing.assert_array_equal(x1, x2)
    assert x1.shape == (20, 2, 24, 24, 3) and set(np.unique(y1)) <= {0.0, 1.0}
    # the cached raw patches are what the slide gives at those magnifications
    e0 = [b for b, _ in patches.make_dataset(idx, cfg, n=20, batch_size=20, seed=1, epoch=0,
                                             cache_dir=tmp_path)]
    e1 = [b for b, _ in patches.make_dataset(idx, cfg, n=20, batch_size=20, seed=1, epoch=1,
                                             cache_dir=tmp_path)]
    assert len(sorted(tmp_path.iterdir())) == 2  # no new reads
    assert not np.allclose(e0[0][0].numpy(), e1[0][0].numpy())  # new augmentation per epoch
