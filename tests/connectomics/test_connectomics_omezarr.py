"""OME-Zarr segmentation stores (NGFF 0.5 on zarr v3) and evaluate's per-segment table.

``baseline`` (watershed, no TensorFlow) and ``segment`` (the shipped synthetic FFN, no training)
write the store; ome-zarr-py's reader and ome-zarr-models' validator read it back at every
level; the pyramids are checked against hand downsampling of small hand-made volumes, and the
per-segment CSV against a table worked out by hand.
"""
from __future__ import annotations

import csv
import itertools
import json
from collections import Counter

import numpy as np
import pytest

from deepsci.apps.cli import main

VS = (30.0, 8.0, 8.0)  # z much coarser than y and x: only y and x are halved here


@pytest.fixture(scope="module")
def em(tmp_path_factory):
    from deepsci.apps.connectomics.io import write_volume
    from deepsci.apps.connectomics.synth import synthetic_volume

    d = tmp_path_factory.mktemp("omezarr")
    img, lab = synthetic_volume(shape=(16, 130, 134), n_neurites=8, radius=(3.0, 6.0), seed=5)
    write_volume(d / "em.zarr", {"image": img, "labels": lab}, voxel_size=VS)
    assert main(["connectomics", "baseline", "--image", f"{d}/em.zarr:image", "--out", str(d / "ws")]) == 0
    return d, img


def _hand_mode(block: np.ndarray) -> int:
    counts = Counter(block.ravel().tolist())
    top = max(counts.values())
    tied = [v for v, n in counts.items() if n == top]
    nonzero = [v for v in tied if v != 0]
    return min(nonzero) if nonzero else 0


def _hand_down(a: np.ndarray, step, fn) -> np.ndarray:
    """``fn`` of every block of the existing voxels (partial blocks at odd edges), by loops."""
    out = np.zeros([-(-n // s) for n, s in zip(a.shape, step, strict=True)], a.dtype)
    for idx in itertools.product(*(range(n) for n in out.shape)):
        box = tuple(slice(i * s, (i + 1) * s) for i, s in zip(idx, step, strict=True))
        out[idx] = fn(a[box])
    return out


def test_baseline_store_reads_with_ome_zarr_at_every_level(em):
    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v05 import Image

    d, img = em
    store = d / "ws" / "segmentation.zarr"
    Image.from_zarr(zarr.open_group(str(store), mode="r"))  # the NGFF 0.5 validator (image, labels, dtypes)
    nodes = list(Reader(parse_url(str(store)))())
    image = next(n for n in nodes if n.zarr.path.rstrip("/").endswith("segmentation.zarr"))
    label = next(n for n in nodes if n.zarr.path.rstrip("/").endswith("labels/segmentation"))
    # 130 x 134 -> 65 x 67 -> 33 x 34 (ceil); z (16 voxels, 30 nm) is never halved.
    shapes = [(16, 130, 134), (16, 65, 67), (16, 33, 34)]
    factors = [(1, 1, 1), (1, 2, 2), (1, 4, 4)]
    for node in (image, label):
        assert [tuple(a.shape) for a in node.data] == shapes
        assert [a["name"] for a in node.metadata["axes"]] == ["z", "y", "x"]
        assert {a["unit"] for a in node.metadata["axes"]} == {"nanometer"}
        for level, (tr, f) in enumerate(zip(node.metadata["coordinateTransformations"], factors, strict=True)):
            assert tr[0] == {"type": "scale", "scale": [v * k for v, k in zip(VS, f, strict=True)]}, level
            if level:  # coarse voxel centres over the centres of the fine voxels they cover
                assert tr[1] == {"type": "translation", "translation": [(k - 1) / 2 * v for v, k in
                                                                        zip(VS, f, strict=True)]}
    np.testing.assert_array_equal(np.asarray(image.data[0]), img)  # the EM image, copied in
    ids = np.unique(np.asarray(label.data[0]))
    assert sorted(label.metadata["color"]) == ids[ids > 0].tolist()  # a colour for every segment
    attrs = json.loads((store / "labels" / "segmentation" / "zarr.json").read_text())["attributes"]["ome"]
    assert attrs["version"] == "0.5" and attrs["image-label"]["source"] == {"image": "../../"}
    assert json.loads((d / "ws" / "run.json").read_text())["results"]["segmentation"] == str(store)


def test_level0_is_the_segmentation_and_plain_zarr_finds_it(em):
    import zarr

    from deepsci.apps.connectomics.baseline import watershed_baseline
    from deepsci.apps.connectomics.io import open_volume

    d, img = em
    want = watershed_baseline(img, voxel_size=VS)
    root = zarr.open(str(d / "ws" / "segmentation.zarr"), mode="r")
    np.testing.assert_array_equal(root["labels/segmentation/0"][...], want)  # the documented path
    old = open_volume(f"{d}/ws/segmentation.zarr:labels", kind="labels")  # what every reader passes
    assert old.voxel_size == VS and old.shape == want.shape
    np.testing.assert_array_equal(old.read(), want)
    one = open_volume(f"{d}/ws/segmentation.zarr:labels/segmentation/1", kind="labels")
    assert one.voxel_size == (30.0, 16.0, 16.0)
    np.testing.assert_array_equal(one.read(), _hand_down(want, (1, 2, 2), _hand_mode))


def test_pyramids_equal_hand_mode_and_block_means():
    import tempfile
    from pathlib import Path

    import zarr

    from deepsci.apps.connectomics.omezarr import write_segmentation

    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, (5, 6, 7)).astype(np.uint32)
    lab[0:2, 0:2, 0:2] = [[[0, 0], [0, 0]], [[6, 6], [6, 6]]]  # 0 and 6 tie: the nonzero id
    lab[0:2, 2:4, 0:2] = [[[3, 3], [2, 2]], [[0, 0], [1, 1]]]  # 3, 2, 0, 1 tie: the smallest nonzero
    lab[2:4, 0:2, 0:2] = [[[0, 0], [0, 0]], [[0, 5], [5, 5]]]  # 0 outnumbers 5
    img = rng.random((5, 6, 7), dtype=np.float32)
    img8 = rng.integers(0, 256, (5, 6, 7)).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        for image in (img, img8):
            path = write_segmentation(Path(tmp) / "s.zarr", lab, image=image, voxel_size=(4, 4, 4), min_size=2)
            root = zarr.open(str(path), mode="r")
            # (5, 6, 7) -> (3, 3, 4); then only x keeps >= 2 * 2 voxels -> (3, 3, 2).
            steps = [(2, 2, 2), (1, 1, 2)]
            want_lab, want_img = lab, image
            for level, step in enumerate(steps, start=1):
                want_lab = _hand_down(want_lab, step, _hand_mode)
                mean = (lambda b: b.astype(np.float64).mean()) if image.dtype == np.float32 else \
                    (lambda b: np.rint(b.astype(np.float64).mean()))
                want_img = _hand_down(want_img, step, mean).astype(image.dtype)
                np.testing.assert_array_equal(root[f"labels/segmentation/{level}"][...], want_lab)
                np.testing.assert_array_equal(root[str(level)][...], want_img)
            assert root["labels/segmentation/1"][0, 0, 0] == 6 and root["labels/segmentation/1"][0, 1, 0] == 1
            assert root["labels/segmentation/1"][1, 0, 0] == 0
            assert str(len(steps) + 1) not in root
            ms = root.attrs["ome"]["multiscales"][0]
            assert [ds["coordinateTransformations"][0]["scale"] for ds in ms["datasets"]] == \
                [[4.0, 4.0, 4.0], [8.0, 8.0, 8.0], [8.0, 8.0, 16.0]]


def test_segment_writes_the_store_beside_probability(tmp_path):
    import zarr
    from ome_zarr_models.v05 import Image

    from deepsci.apps.connectomics.io import open_volume, write_volume
    from deepsci.apps.connectomics.synth import synthetic_volume

    img, _ = synthetic_volume(shape=(12, 66, 36), n_neurites=3, radius=(3.0, 5.0), seed=2)
    write_volume(tmp_path / "em.zarr", {"image": img}, voxel_size=(8, 8, 8))
    assert main(["connectomics", "segment", "--model", "connectomics-synthetic-ffn", "--preset", "ffn",
                 "--image", f"{tmp_path}/em.zarr:image", "--out", str(tmp_path / "seg"),
                 "--scheduler", "inline"]) == 0
    store = tmp_path / "seg" / "segmentation.zarr"
    Image.from_zarr(zarr.open_group(str(store), mode="r"))
    root = zarr.open(str(store), mode="r")
    labels = open_volume(f"{store}:labels", kind="labels").read()
    np.testing.assert_array_equal(root["labels/segmentation/0"][...], labels)
    assert labels.max() > 1  # segments, not an empty volume
    prob = open_volume(f"{store}:probability").read()
    assert np.all((prob > 0) == (labels > 0))
    # 12 x 66 x 36 at 8 nm: only y keeps >= 32 voxels when halved; then y is twice as coarse as z and x,
    # which are too short to follow: two levels.
    assert root["labels/segmentation/1"].shape == (12, 33, 36) and "2" not in root["labels/segmentation"]
    np.testing.assert_array_equal(root["labels/segmentation/1"][...], _hand_down(labels, (1, 2, 1), _hand_mode))
    assert root["1"].attrs["voxel_size"] == [8.0, 16.0, 8.0]
    assert json.loads((tmp_path / "seg" / "run.json").read_text())["results"]["levels"] == 2


def test_evaluate_writes_the_per_segment_table(tmp_path):
    from deepsci.apps.connectomics.io import write_volume

    gt = np.zeros((2, 4, 6), np.uint32)
    gt[:, :, 0:3] = 1            # object 1: 24 voxels
    gt[:, 0:3, 3:6] = 2          # object 2: 18 voxels; gt[:, 3, 3:6] stays 0 (unlabelled)
    seg = np.zeros_like(gt)
    seg[:, :, 0:2] = 5           # inside object 1
    seg[:, :, 2:5] = 7           # 8 voxels of object 1, 12 of object 2, 4 unlabelled: a merge
    seg[:, :, 5] = 9             # 6 voxels of object 2 (split with 7), 2 unlabelled
    write_volume(tmp_path / "v.zarr", {"gt": gt, "seg": seg}, voxel_size=(8, 8, 8))
    assert main(["connectomics", "evaluate", "--labels", f"{tmp_path}/v.zarr:gt", "--seg",
                 f"hand={tmp_path}/v.zarr:seg", "--out", str(tmp_path / "eval"), "--min-overlap", "5"]) == 0
    assert (tmp_path / "eval" / "metrics.json").exists()
    with open(tmp_path / "eval" / "segments.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = ("segmentation", "segment", "voxels", "z0", "y0", "x0", "z1", "y1", "x1", "unlabelled_voxels",
            "gt_1", "overlap_1", "gt_2", "overlap_2", "gt_3", "overlap_3", "merged_objects", "split_partners")
    want = [("hand", 5, 16, 0, 0, 0, 2, 4, 2, 0, 1, 16, "", "", "", "", 1, "7"),
            ("hand", 7, 24, 0, 0, 2, 2, 4, 5, 4, 2, 12, 1, 8, "", "", 2, "9"),
            ("hand", 9, 8, 0, 0, 5, 2, 4, 6, 2, 2, 6, "", "", "", "", 1, "7")]
    assert rows == [{c: str(v) for c, v in zip(cols, w, strict=True)} for w in want]
