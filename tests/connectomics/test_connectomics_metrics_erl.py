"""ERL on TEASAR skeletons: hand-computed runs in nm, skeleton geometry, robustness, the evaluate outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

PLUS = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
#: (z, y, x) nm: every axis its own step, so a length in the wrong units fails.
VS = (30.0, 20.0, 8.0)


def _tube(vol, label, axis, centre, lo, hi, needle):
    """A tube of plus-shaped cross-section along ``axis`` over [lo, hi), with one-voxel needles
    of ``needle`` voxels beyond both ends: its extremal voxels lie on the axis."""
    for d in PLUS:
        idx = [centre[0] + d[0], centre[1] + d[1]]
        idx.insert(axis, slice(lo, hi))
        vol[tuple(idx)] = label
    for a, b in ((lo - needle, lo), (hi, hi + needle)):
        idx = list(centre)
        idx.insert(axis, slice(a, b))
        vol[tuple(idx)] = label


def _two_tubes():
    """Tube 1 along x (axis x = 2..53: 51 edges of 8 nm = 408 nm), tube 2 along y (y = 6..34: 28 x 20 = 560 nm)."""
    gt = np.zeros((7, 40, 60), np.uint32)
    _tube(gt, 1, 2, (3, 5), 8, 48, 6)
    _tube(gt, 2, 1, (3, 52), 8, 33, 2)
    return gt


def _graph(gt, **kw):
    from deepsci.apps.connectomics.evaluate import skeleton_graph
    from deepsci.apps.connectomics.skeleton import TeasarParams

    return skeleton_graph(gt, voxel_size=VS, params=TeasarParams(dust_voxels=10, tip_clearance=0, **kw))


def test_erl_of_two_tubes_by_hand():
    from deepsci.apps.connectomics.evaluate import evaluate_segmentation, expected_run_length

    gt = _two_tubes()
    graph = _graph(gt)
    on_1 = graph["nodes"][graph["label"] == 1]
    on_2 = graph["nodes"][graph["label"] == 2]
    # TEASAR keeps to the centre line (the plus's arms are boundary voxels) from needle tip to needle tip.
    np.testing.assert_array_equal(np.unique(on_1[:, :2], axis=0), [[3, 5]])
    np.testing.assert_array_equal(np.unique(on_2[:, [0, 2]], axis=0), [[3, 52]])
    assert (on_1[:, 2].min(), on_1[:, 2].max(), on_2[:, 1].min(), on_2[:, 1].max()) == (2, 53, 6, 34)
    la, lb = 51 * 8.0, 28 * 20.0
    total = la + lb
    full = (la ** 2 + lb ** 2) / total
    r = expected_run_length(graph, gt)
    assert r["erl"] == pytest.approx(full) and r["max_erl"] == pytest.approx(full)
    assert r["skeleton_length"] == pytest.approx(total) and r["merged_skeleton_fraction"] == 0.0
    # Tube 1 split in half at x = 28: the edge 27-28 is lost, runs of 25 edges each.
    half = gt.copy()
    half[(gt == 1) & (np.arange(60) >= 28)] = 3
    r = expected_run_length(graph, half)
    assert r["erl"] == pytest.approx(((25 * 8.0) ** 2 * 2 + lb ** 2) / total)
    # Both tubes one segment: a merge, zero for both, all of the skeleton in merged segments.
    r = expected_run_length(graph, (gt > 0).astype(np.uint8))
    assert (r["erl"], r["merged_segments"], r["merged_skeleton_fraction"]) == (0.0, 1, pytest.approx(1.0))
    # A third tube merged into tube 2 leaves tube 1's run and puts tube 2's length in a merger.
    three = gt.copy()
    three[3, 20:23, 10:40] = 9  # a separate body touching neither tube
    g3 = _graph(three)
    merged = three.copy()
    merged[three == 9] = 2
    r = expected_run_length(g3, merged)
    l9 = g3["length"][g3["label"][g3["edges"][:, 0]] == 9].sum()
    assert r["erl"] == pytest.approx(la ** 2 / (total + l9))
    assert r["merged_skeleton_fraction"] == pytest.approx((lb + l9) / (total + l9))
    # Unclaimed voxels of tube 1 for x in [20, 30) are singletons: runs x 2..19 and 30..53.
    hole = gt.copy()
    hole[(gt == 1) & (np.arange(60) >= 20) & (np.arange(60) < 30)] = 0
    s = evaluate_segmentation(gt, hole, voxel_size=VS, graph=graph, min_overlap=1)
    assert s.erl == pytest.approx(((17 * 8.0) ** 2 + (23 * 8.0) ** 2 + lb ** 2) / total)
    assert s.splits == 50 and s.merges == 0 and s.unclaimed_voxels == 50


def test_teasar_keeps_branches_and_drops_spurs():
    from deepsci.apps.connectomics.skeleton import TeasarParams, teasar_graph

    zz, yy, xx = np.mgrid[:21, :60, :100]
    gt = np.zeros((21, 60, 100), np.uint16)
    gt[((zz - 10) ** 2 + (yy - 10) ** 2 <= 9) & (xx >= 5) & (xx < 95)] = 7    # trunk along x
    gt[((zz - 10) ** 2 + (xx - 50) ** 2 <= 4) & (yy >= 10) & (yy < 46)] = 7   # 350 nm branch
    gt[((zz - 10) ** 2 + (xx - 25) ** 2 <= 4) & (yy >= 1) & (yy < 10)] = 7    # 90 nm bump
    gt[2:5, 50:53, 2:5] = 8                                                    # 27 voxels of dust
    shapes = {}
    for spur in (150.0, 0.0):
        g = teasar_graph(gt, voxel_size=(10.0, 10.0, 10.0), params=TeasarParams(const=20.0, spur_length=spur))
        deg = np.bincount(g["edges"].ravel(), minlength=len(g["nodes"]))
        shapes[spur] = (sorted(map(tuple, g["nodes"][deg == 1].tolist())), g["nodes"][deg >= 3].tolist())
        assert set(g["label"].tolist()) == {7}  # the dust body has no skeleton
        x = g["nodes"][:, 2]
        trunk = g["nodes"][(np.abs(x - 50) > 3) & (np.abs(x - 25) > 3)]
        np.testing.assert_array_equal(np.unique(trunk[:, :2], axis=0), [[10, 10]])  # on the axis
        assert np.all(g["radius"][deg == 1] > 10.0)  # tips pulled off the surface
    tips, branch = shapes[150.0]
    assert branch == [[10, 10, 50]] and len(tips) == 3 and tips[0][1] == 10 and tips[2][1] >= 40
    tips, branch = shapes[0.0]
    assert len(branch) == 2 and len(tips) == 4 and min(t[1] for t in tips) <= 4  # the bump is traced too


def test_erl_survives_a_one_voxel_boundary_shift():
    """Dense labels: two touching bars, the prediction moves their interface by one voxel."""
    from deepsci.apps.connectomics.evaluate import expected_run_length, skeleton_graph
    from deepsci.apps.connectomics.skeleton import TeasarParams

    gt = np.zeros((12, 24, 80), np.uint8)
    gt[2:10, 4:12, 5:75] = 1
    gt[2:10, 12:20, 5:75] = 2
    shifted = gt.copy()
    shifted[2:10, 12, 5:75] = 1
    vs = (10.0, 10.0, 10.0)
    r = expected_run_length(skeleton_graph(gt, voxel_size=vs), shifted)
    assert r["merged_segments"] == 0 and r["erl"] == pytest.approx(r["max_erl"])
    # TEASAR's raw tips lie on the surface, here on the interface: untrimmed, the shift is a merge.
    raw = expected_run_length(skeleton_graph(gt, voxel_size=vs, params=TeasarParams(tip_clearance=0)), shifted)
    assert raw["merged_segments"] == 1 and raw["erl"] < 0.6 * raw["max_erl"]


def test_evaluate_writes_conventions_and_prints_the_rule(tmp_path):
    from deepsci.apps.connectomics.config import EvaluateRun
    from deepsci.apps.connectomics.evaluate import CONVENTIONS, LABEL_ZERO_RULE
    from deepsci.apps.connectomics.io import write_volume
    from deepsci.apps.connectomics.scoring import run_evaluation

    gt = _two_tubes()
    hole = gt.copy()
    hole[(gt == 1) & (np.arange(60) >= 20) & (np.arange(60) < 30)] = 0
    write_volume(tmp_path / "v.zarr", {"gt": gt, "hole": hole}, voxel_size=VS)
    scores = run_evaluation(EvaluateRun(labels=f"{tmp_path}/v.zarr:gt", seg=[f"hole={tmp_path}/v.zarr:hole"],
                                        out=str(tmp_path / "eval"), baseline=False, min_overlap=1).validate())
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["conventions"] == CONVENTIONS and m["scores"] == scores
    assert set(json.loads((tmp_path / "eval" / "scores.json").read_text())) == {"hole"}
    md = (tmp_path / "eval" / "scores.md").read_text()
    assert LABEL_ZERO_RULE in md and "max_erl" in md and "merged_skeleton_fraction" in md
    assert scores["hole"]["unclaimed_voxels"] == 50 and scores["hole"]["erl"] < scores["hole"]["max_erl"]
