"""The notebook and the demo hook run end to end on tiny settings, and what they report is what they wrote.

Both tests recompute the scores from the volumes the run left behind and compare them with the
numbers the notebook printed / the demo returned, so a table that does not come from the
segmentation, a baseline scored with other settings, or a segmentation missing its objects fails.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest


def _recompute(gt_spec: str, seg_spec: str, image_spec: str, min_overlap: int) -> tuple[dict, dict, float]:
    """(segmentation scores, watershed-baseline scores, VI of an empty segmentation) from the files."""
    from deepsci.apps.connectomics.baseline import watershed_baseline
    from deepsci.apps.connectomics.evaluate import evaluate_segmentation, variation_of_information
    from deepsci.apps.connectomics.io import open_volume

    gt_vol = open_volume(gt_spec, kind="labels")
    gt, vs = gt_vol.read(), gt_vol.voxel_size
    seg = open_volume(seg_spec, kind="labels").read()
    ws = watershed_baseline(open_volume(image_spec).read(), voxel_size=vs)
    ffn = evaluate_segmentation(gt, seg, voxel_size=vs, min_overlap=min_overlap).as_dict()
    base = evaluate_segmentation(gt, ws, voxel_size=vs, min_overlap=min_overlap).as_dict()
    empty = sum(variation_of_information(gt, np.zeros_like(gt), ignore_labels=(0,)))
    return ffn, base, empty


def _row(table: str, name: str) -> dict:
    """One row of a printed Markdown scores table as {column: float}."""
    lines = [ln for ln in table.splitlines() if ln.startswith("|")]
    cols = [c.strip() for c in lines[0].strip("|").split("|")]
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if cells[0] == name:
            return {c: float(v) for c, v in zip(cols[1:], cells[1:], strict=True)}
    raise AssertionError(f"no row {name!r} in {table}")


@pytest.mark.slow
def test_notebook_executes(run_notebook, tmp_path, monkeypatch):
    work = tmp_path / "nb-work"
    monkeypatch.setenv("DEEPSCI_NOTEBOOK_WORK", str(work))
    outputs, figures = run_notebook("connectomics", timeout=180)
    assert figures == 1 and (work / "slices.png").stat().st_size > 5000
    ffn, base, empty = _recompute(f"{work}/test.zarr:labels", f"{work}/segment/segmentation.zarr:labels",
                                  f"{work}/test.zarr:image", min_overlap=30)
    table = outputs[outputs.index("| segmentation"):]
    for name, want in (("FFN", ffn), ("watershed baseline", base)):
        got = _row(table, name)
        for key in ("vi_split", "vi_merge", "adapted_rand_error", "erl", "merges", "splits", "n_segments"):
            # The table prints four significant digits.
            assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-6), (name, key, got, want)
    # The stitched segmentation holds at most the objects the segment summary printed (one may lie
    # wholly in an overlap a neighbour owns), in the four blocks asked for, and shares information
    # with the ground truth: H(gt) - H(gt | seg) > 0 (the quick FFN is too short-trained to beat an
    # empty segmentation's total VI, H(gt)).
    summary = re.search(r"'objects': (\d+),\s*'blocks': (\d+)", outputs)
    assert int(summary.group(1)) >= ffn["n_segments"] >= 1 and int(summary.group(2)) == 4
    assert empty - ffn["vi_merge"] > 0.05, (ffn, empty)


@pytest.mark.slow
def test_demo_quick_train(tmp_path):
    """The train-from-scratch demo (``deepsci demo --train``); the shipped-model demo is in test_release."""
    from deepsci.apps.connectomics.demo import run_demo

    result = run_demo(tmp_path, quick=True, train=True)
    assert result.app == "connectomics"
    ffn, base, empty = _recompute(f"{tmp_path}/test.zarr:labels", f"{tmp_path}/segment/segmentation.zarr:labels",
                                  f"{tmp_path}/test.zarr:image", min_overlap=50)
    m = result.metrics
    assert m["ffn_vi_total"] == pytest.approx(ffn["vi_total"], abs=1e-9)
    assert m["ffn_adapted_rand"] == pytest.approx(ffn["adapted_rand_error"], abs=1e-9)
    assert m["ffn_erl"] == pytest.approx(ffn["erl"], abs=1e-9) and m["max_erl"] == pytest.approx(ffn["max_erl"])
    assert m["baseline_vi_total"] == pytest.approx(base["vi_total"], abs=1e-9)
    assert m["objects"] == ffn["n_segments"] and empty - ffn["vi_merge"] > 0.05, (ffn, empty)
    assert m["fov_evals"] > 0 and np.isfinite(m["train_loss"])
    assert [Path(f).name for f in result.figures] == ["slices.png"] and Path(result.figures[0]).stat().st_size > 5000
    assert "| FFN |" in result.text
