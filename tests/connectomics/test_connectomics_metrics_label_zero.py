"""The one label-0 rule of every connectomics metric, against skimage and hand-counted cases.

Rule: ground-truth 0 is not scored; predicted 0 inside scored ground truth is one segment
per voxel. The skimage references here are computed on arrays the test relabels itself.
"""
from __future__ import annotations

import numpy as np
import pytest

DTYPES = [np.uint8, np.uint16, np.uint32, np.uint64]
SHAPES = [(5, 6, 7), (2, 17, 9), (12, 8, 3)]


def _own_singletons(gt: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """The test's own relabelling: each predicted-0 voxel with truth != 0 gets a fresh id."""
    out = seg.astype(np.int64)
    z = (seg == 0) & (gt != 0)
    out[z] = out.max() + 1 + np.arange(int(z.sum()))
    return out


def _volumes(shape, dtype, zeros: str, seed: int):
    rng = np.random.default_rng(seed)
    top = min(np.iinfo(dtype).max, 200_000)  # ids across the dtype's range, small enough for skimage's dense tables
    ids = np.unique(rng.integers(1, top, 9))
    gt = np.where(rng.random(shape) < 0.15, 0, ids[rng.integers(0, len(ids), shape)]).astype(dtype)
    seg = gt.copy()
    noisy = rng.random(shape) < 0.3
    seg[noisy] = ids[rng.integers(0, len(ids), int(noisy.sum()))]
    if zeros == "many":
        seg[rng.random(shape) < 0.4] = 0
    elif zeros == "none":
        seg[seg == 0] = ids[0]
    else:
        seg[:] = 0
    return gt, seg


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("zeros", ["many", "none", "all"])
def test_vi_and_rand_match_skimage_on_singleton_relabelled_arrays(dtype, shape, zeros):
    import skimage.metrics as skm

    from deepsci.apps.connectomics.evaluate import (
        adapted_rand_error,
        evaluate_segmentation,
        variation_of_information,
    )

    gt, seg = _volumes(shape, dtype, zeros, seed=SHAPES.index(shape) * 10 + DTYPES.index(dtype))
    before = seg.copy()
    own = _own_singletons(gt, seg)
    ref_vi = skm.variation_of_information(gt.astype(np.int64), own, ignore_labels=(0,))
    vi = variation_of_information(gt, seg)
    np.testing.assert_allclose(vi, ref_vi, rtol=1e-10, atol=1e-12)
    are = adapted_rand_error(gt, seg)
    if zeros == "all":
        # No two voxels share a segment: skimage's recall is 0/0; ours is the vacuous 1, the error 1.
        assert are == pytest.approx((1.0, 0.0, 1.0))
    else:
        np.testing.assert_allclose(are, skm.adapted_rand_error(gt.astype(np.int64), own, ignore_labels=(0,)),
                                   rtol=1e-10, atol=1e-12)
    s = evaluate_segmentation(gt, seg, voxel_size=(10.0, 10.0, 10.0), min_overlap=1)
    assert (s.vi_split, s.vi_merge) == pytest.approx(vi) and s.adapted_rand_error == pytest.approx(are[0])
    assert s.unclaimed_voxels == int(((seg == 0) & (gt != 0)).sum())
    np.testing.assert_array_equal(seg, before)  # the caller's array is not relabelled in place
    if zeros == "none":
        # Without unclaimed voxels the rule changes nothing: plain skimage on the raw arrays.
        np.testing.assert_allclose(vi, skm.variation_of_information(gt, seg, ignore_labels=(0,)), atol=1e-12)


def test_relabel_unclaimed_gives_fresh_ids_and_keeps_background():
    from deepsci.apps.connectomics.evaluate import relabel_unclaimed

    gt = np.array([[[0, 1, 1, 2, 2, 0]]], np.uint8)
    seg = np.array([[[0, 0, 5, 0, 0, 7]]], np.uint8)
    out = relabel_unclaimed(gt, seg)
    assert out.dtype == np.uint64
    np.testing.assert_array_equal(out, [[[0, 8, 5, 9, 10, 7]]])  # ids after the largest, truth-0 voxel kept 0
    # Near the top of uint64 the ids are compacted (in order) first instead of wrapping around.
    big = np.array([[[0, 0, 2 ** 64 - 1, 0, 0, 3]]], np.uint64)
    out = relabel_unclaimed(gt, big)
    np.testing.assert_array_equal(out, [[[0, 3, 2, 4, 5, 1]]])
    with pytest.raises(ValueError, match="non-negative"):
        relabel_unclaimed(gt, -np.ones(gt.shape, np.int8))
    with pytest.raises(TypeError, match="integer"):
        relabel_unclaimed(gt, np.zeros(gt.shape, np.float32))


def test_scores_do_not_depend_on_id_values_up_to_uint64():
    from deepsci.apps.connectomics.evaluate import evaluate_segmentation

    gt, seg = _volumes((6, 10, 12), np.uint16, "many", seed=3)
    ids = np.unique(seg)
    huge = np.zeros(int(ids.max()) + 1, np.uint64)
    huge[ids[ids > 0]] = np.uint64(2 ** 63) + np.arange(1, (ids > 0).sum() + 1, dtype=np.uint64) * np.uint64(7919)
    a = evaluate_segmentation(gt, seg, min_overlap=2).as_dict()
    b = evaluate_segmentation(gt, huge[seg], min_overlap=2).as_dict()
    assert a == pytest.approx(b)


def _two_bodies():
    """Body 1 (y < 3) and body 2 (3 <= y) over x < 10; x >= 10 is ground-truth background."""
    gt = np.zeros((4, 6, 12), np.uint16)
    gt[:, :3, :10], gt[:, 3:, :10] = 1, 2
    return gt


def test_merges_and_splits_follow_the_rule():
    from deepsci.apps.connectomics.evaluate import count_merges_splits, variation_of_information

    gt = _two_bodies()
    band = gt.copy()
    band[(gt == 1) & (np.arange(12) >= 4) & (np.arange(12) < 6)] = 0  # 4 * 3 * 2 = 24 unclaimed voxels
    assert count_merges_splits(gt, band, min_overlap=1) == {"merges": 0, "splits": 24}
    assert count_merges_splits(gt, band, min_overlap=2) == {"merges": 0, "splits": 0}
    # Unclaimed voxels across both bodies never merge them (as one segment 0 they would).
    across = gt.copy()
    across[:, 2:4, :] = 0
    assert count_merges_splits(gt, across, min_overlap=1) == {"merges": 0, "splits": 2 * 4 * 10}
    assert variation_of_information(gt, across)[1] == pytest.approx(0.0, abs=1e-12)
    # Nothing claimed: every scored voxel its own segment, n - 1 splits per body.
    n1, n2 = int((gt == 1).sum()), int((gt == 2).sum())
    none = np.zeros_like(gt)
    assert count_merges_splits(gt, none, min_overlap=1) == {"merges": 0, "splits": n1 - 1 + n2 - 1}
    split, merge = variation_of_information(gt, none)
    assert merge == pytest.approx(0.0, abs=1e-12)
    assert split == pytest.approx((n1 * np.log2(n1) + n2 * np.log2(n2)) / (n1 + n2))
    # Ground-truth background is not scored: a segment flooding it merges nothing.
    flood = gt.copy()
    flood[gt == 0] = 1
    assert count_merges_splits(gt, flood, min_overlap=1) == {"merges": 0, "splits": 0}
    assert variation_of_information(gt, flood) == pytest.approx((0.0, 0.0), abs=1e-12)


def test_erl_follows_the_rule_on_lines():
    from deepsci.apps.connectomics.evaluate import expected_run_length, skeleton_graph
    from deepsci.apps.connectomics.skeleton import TeasarParams

    gt = np.zeros((3, 5, 14), np.uint32)
    gt[1, 1, 1:13] = 1   # 12 voxels: 11 edges of 5 nm
    gt[1, 3, 1:13] = 2
    graph = skeleton_graph(gt, voxel_size=(40.0, 30.0, 5.0), params=TeasarParams(dust_voxels=1, tip_clearance=0))
    assert graph["length"].sum() == pytest.approx(2 * 55.0)
    seg = gt.copy()
    seg[1, 1, 6] = 0     # one unclaimed node (x = 6) cuts two edges: runs x 1-5 and 7-12, 4 and 5 edges
    r = expected_run_length(graph, seg)
    assert r["erl"] == pytest.approx((20.0 ** 2 + 25.0 ** 2 + 55.0 ** 2) / 110.0)
    assert r["merged_segments"] == 0
    # All unclaimed: no correct edge and no merge (as one segment 0 it would be a merge of both).
    r = expected_run_length(graph, np.zeros_like(gt))
    assert r["erl"] == 0.0 and r["merged_segments"] == 0 and r["merged_skeleton_fraction"] == 0.0
    assert r["max_erl"] == pytest.approx(2 * 55.0 ** 2 / 110.0)
