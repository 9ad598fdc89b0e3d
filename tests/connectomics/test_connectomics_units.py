"""Unit tests of the connectomics app: model, formats, synthesis, sampling, policy, metrics."""
from __future__ import annotations

import numpy as np
import pytest

from deepsci.core.errors import ConfigError, InputError

# ------------------------------------------------------------------ model


@pytest.mark.parametrize("fov,depth,features", [((5, 7, 9), 1, 4), ((9, 9, 9), 2, 8)])
def test_ffn_output_shape_and_additive_update(fov, depth, features):
    import keras

    from deepsci.core.models.ffn import FFNConfig, ffn_model

    model = ffn_model(FFNConfig(fov_size=fov, deltas=(1, 1, 1), depth=depth, features=features))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, *fov, 2)).astype("float32")
    y = np.asarray(model(x))
    assert y.shape == (3, *fov, 1)
    # Zeroing the last 1x1x1 convolution leaves exactly the input logits: the update is additive.
    conv = model.get_layer("convstack").conv_out
    conv.set_weights([np.zeros_like(w) for w in conv.get_weights()])
    np.testing.assert_allclose(np.asarray(model(x)), x[..., 1:2], atol=0)
    # And a shift of the input logits shifts the output by the same amount only through the skip.
    x2 = x.copy()
    x2[..., 1] += 1.5
    np.testing.assert_allclose(np.asarray(model(x2)) - np.asarray(model(x)), 1.5, atol=1e-5)
    assert isinstance(model, keras.Model)


def test_ffn_round_trip(tmp_path):
    from deepsci.core.models.card import ModelCard
    from deepsci.core.models.ffn import PRESETS, FFNConvStack, FFNResidualModule, ffn_model
    from deepsci.core.models.serialization import load_model, save_model

    model = ffn_model(PRESETS["tiny"])
    x = np.random.default_rng(1).standard_normal((2, 9, 9, 9, 2)).astype("float32")
    save_model(model, tmp_path / "m.keras", card=ModelCard(app="connectomics", task="ffn"))
    loaded, card = load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6, atol=1e-6)
    assert card.app == "connectomics"
    layer = FFNConvStack(depth=3, features=5, name="s")
    assert FFNConvStack.from_config(layer.get_config()).get_config() == layer.get_config()
    res = FFNResidualModule(4)
    assert FFNResidualModule.from_config(res.get_config()).features == 4



def test_ffn_checkpoint_holds_every_weight(tmp_path):
    """tf.train.Checkpoint(model=...) (the training loop's best weights) saves and restores all of them."""
    import tensorflow as tf

    from deepsci.core.models.ffn import FFNConfig, ffn_model

    cfg = FFNConfig(fov_size=(7, 7, 7), deltas=(2, 2, 2), depth=3, features=4)
    a, b = ffn_model(cfg), ffn_model(cfg)
    path = tf.train.Checkpoint(model=a).write(str(tmp_path / "w"))
    tf.train.Checkpoint(model=b).read(path).assert_existing_objects_matched()
    assert len(b.weights) == 4 + 2 * 2 * 2 + 2  # conv0 pair, two residual modules, 1x1x1 output
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)

@pytest.mark.parametrize("kwargs,match", [
    ({"depth": 0}, "Expected `depth`"),
    ({"features": 2.5}, "Expected `features`"),
])
def test_ffn_layer_validates(kwargs, match):
    from deepsci.core.models.ffn import FFNConvStack

    with pytest.raises(ValueError, match=match):
        FFNConvStack(**{"depth": 2, "features": 4, **kwargs})


def test_ffn_config_validates():
    from deepsci.core.models.ffn import FFNConfig

    with pytest.raises(ValueError, match="odd"):
        FFNConfig(fov_size=(8, 9, 9))
    with pytest.raises(ValueError, match="deltas"):
        FFNConfig(fov_size=(9, 9, 9), deltas=(5, 2, 2))
    from deepsci.core.models.ffn import FFNConvStack

    with pytest.raises(ValueError, match="Expected input of shape .* Received"):
        FFNConvStack(1, 2).build((None, 5, 5, 5, 3))


# ------------------------------------------------------------------ synth + io


def test_synthetic_volume_is_em_like():
    from deepsci.apps.connectomics.synth import synthetic_volume

    img, lab = synthetic_volume(shape=(24, 48, 48), n_neurites=6, seed=3)
    img2, lab2 = synthetic_volume(shape=(24, 48, 48), n_neurites=6, seed=3)
    assert img.dtype == np.uint8 and lab.dtype == np.uint32 and img.shape == lab.shape == (24, 48, 48)
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(lab, lab2)
    assert 3 <= len(np.unique(lab)) - 1 <= 6
    # Membranes (object boundaries) are darker than object interiors.
    from scipy import ndimage as ndi

    inside = ndi.binary_erosion(lab > 0, iterations=2)
    edge = (lab > 0) & ~ndi.binary_erosion(lab > 0)
    assert img[inside].mean() > img[edge].mean() + 40


def test_volume_formats_round_trip(tmp_path):
    import h5py
    import zarr
    from PIL import Image

    from deepsci.apps.connectomics.io import open_volume, write_n5, write_volume

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (6, 10, 12), dtype=np.uint8)
    lab = rng.integers(0, 5, (6, 10, 12)).astype(np.uint32)
    write_volume(tmp_path / "a.zarr", {"image": img, "labels": lab}, voxel_size=(30, 4, 4))
    v = open_volume(tmp_path / "a.zarr")  # picks "image" in a two-array group
    np.testing.assert_array_equal(v.read(), img)
    assert v.voxel_size == (30.0, 4.0, 4.0)
    np.testing.assert_array_equal(open_volume(f"{tmp_path}/a.zarr:labels", kind="labels")[1:3, :, 2], lab[1:3, :, 2])
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["vol/stack"] = lab
        f["transforms"] = np.array([[1, 7], [2, 7], [3, 9]], np.int64)  # NeuroProof supervoxel -> body
    np.testing.assert_array_equal(open_volume(f"{tmp_path}/b.h5:vol/stack", kind="labels").read(), lab)
    bodies = open_volume(f"{tmp_path}/b.h5:vol/stack@transforms", kind="labels")[2:5]
    lut = np.array([0, 7, 7, 9, 4])
    np.testing.assert_array_equal(bodies, lut[lab[2:5]])
    (tmp_path / "slices").mkdir()
    for k in range(img.shape[0]):
        Image.fromarray(img[k]).save(tmp_path / "slices" / f"z{k}.png")
    sv = open_volume(tmp_path / "slices")
    np.testing.assert_array_equal(sv[2:5, 3:7, 1:4], img[2:5, 3:7, 1:4])  # lazy, natural order z2 < z10
    write_n5(tmp_path / "c.n5", "raw", lab, block=(4, 4, 8), resolution=(30, 4, 4))
    nv = open_volume(f"{tmp_path}/c.n5:raw")
    np.testing.assert_array_equal(nv.read(), lab)
    np.testing.assert_array_equal(nv[1:5, 3:9, 5], lab[1:5, 3:9, 5])
    assert nv.voxel_size == (30.0, 4.0, 4.0)
    z2 = zarr.open_array(store=str(tmp_path / "v2.zarr"), mode="w", zarr_format=2, shape=img.shape,
                         chunks=(4, 4, 4), dtype=img.dtype)
    z2[...] = img
    np.testing.assert_array_equal(open_volume(tmp_path / "v2.zarr").read(), img)


def test_volume_bad_inputs(tmp_path):
    import h5py

    from deepsci.apps.connectomics.io import check_same_shape, open_volume

    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["stack"] = np.zeros((4, 5, 6), np.int32)
        f["flat"] = np.zeros((5, 6), np.int32)
        f["float"] = np.zeros((4, 5, 6), np.float32)
        f["empty"] = np.zeros((0, 5, 6), np.int32)
        f["other"] = np.zeros((4, 5, 7), np.int32)
    cases = [
        (f"{tmp_path}/b.h5:nope", "image", "expected dataset 'nope'"),
        (f"{tmp_path}/b.h5", "image", "FILE.h5:DATASET"),
        (f"{tmp_path}/b.h5:flat", "image", "3-D"),
        (f"{tmp_path}/b.h5:float", "labels", "integer label"),
        (f"{tmp_path}/b.h5:empty", "image", "non-empty"),
        (f"{tmp_path}/missing.zarr", "image", "no such path"),
    ]
    for spec, kind, match in cases:
        with pytest.raises(InputError, match=match) as e:
            open_volume(spec, kind=kind)
        assert str(tmp_path) in str(e.value)
    with pytest.raises(InputError, match="same shape"):
        check_same_shape(open_volume(f"{tmp_path}/b.h5:stack"), open_volume(f"{tmp_path}/b.h5:other"))


# ------------------------------------------------------------------ training data


def test_partitions_match_brute_force():
    from deepsci.apps.connectomics.train import compute_partitions

    rng = np.random.default_rng(0)
    lab = np.zeros((12, 14, 16), np.uint32)
    lab[2:10, 3:11, 2:14] = 1
    lab[5:8, 5:9, 6:9] = 2
    lab[rng.random(lab.shape) < 0.05] = 3
    thresholds = (0.1, 0.3, 0.6, 0.9)
    coords, part = compute_partitions(lab, lom_radius=(1, 2, 2), thresholds=thresholds, stride=1)
    assert len(coords) == np.count_nonzero(lab)
    for c, p in zip(coords[::7], part[::7], strict=True):
        z, y, x = c
        box = lab[max(z - 1, 0):z + 2, max(y - 2, 0):y + 3, max(x - 2, 0):x + 3]
        frac = (box == lab[z, y, x]).sum() / (3 * 5 * 5)  # outside the volume counts as "other"
        assert p == np.digitize(frac, thresholds)
    sub, _ = compute_partitions(lab, lom_radius=(1, 2, 2), thresholds=thresholds, stride=2, margin=(2, 2, 2))
    assert np.all(sub % 2 == 0) and np.all(sub >= 2) and len(sub) < len(coords) / 4


def test_balanced_sampling_statistics():
    from deepsci.apps.connectomics.train import sample_coordinates

    part = np.repeat(np.arange(4), [1000, 300, 50, 400]).astype(np.int16)
    coords = np.stack([np.arange(len(part))] * 3, 1)
    picked = sample_coordinates(coords, part, max_per_partition=10_000, seed=0)
    counts = np.bincount(part[picked[:, 0]], minlength=4)
    assert np.all(counts == np.median([1000, 300, 50, 400]))  # balanced
    capped = sample_coordinates(coords, part, max_per_partition=40, seed=0)
    assert np.all(np.bincount(part[capped[:, 0]]) == 40)
    assert len(np.unique(capped[:, 0])) == 160  # no repeats when every partition is large enough
    again = sample_coordinates(coords, part, max_per_partition=40, seed=0)
    np.testing.assert_array_equal(capped, again)


def test_face_max_policy_on_hand_made_map():
    from deepsci.apps.connectomics.policy import face_moves

    prob = np.zeros((9, 9, 9), np.float32)
    c = 4
    prob[c + 2, c + 1, c - 1] = 0.97      # +z face, off-centre inside the +-delta window
    prob[c, c - 2, c] = 0.92              # -y face
    prob[c, c, c + 2] = 0.5               # +x face, below the threshold
    prob[c + 2, c + 4, c] = 0.99          # +z face but outside the +-delta window: ignored
    moves = face_moves(prob, (2, 2, 2), 0.9)
    assert [m for _, m in moves] == [(2, 1, -1), (0, -2, 0)]
    assert moves[0][0] == pytest.approx(0.97)
    assert face_moves(prob, (2, 2, 2), 0.98) == []


def test_train_config_rejects_bad_values():
    from deepsci.apps.connectomics.train import FFNTrainConfig

    with pytest.raises(ConfigError):
        FFNTrainConfig(move_policy="random").validate()
    with pytest.raises(ConfigError):
        FFNTrainConfig(preset="huge").validate()
    with pytest.raises(ConfigError):
        FFNTrainConfig(fov_size=(8, 8, 8)).validate()


# ------------------------------------------------------------------ metrics


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_skimage(seed):
    """Under the label-0 rule: skimage on arrays whose predicted 0 inside truth != 0 are singletons.

    (The rule's own tests, over shapes, dtypes and amounts of 0, are test_connectomics_metrics_label_zero.)
    """
    import skimage.metrics as skm

    from deepsci.apps.connectomics.evaluate import adapted_rand_error, variation_of_information

    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 6, (8, 9, 10))
    seg = (gt + (rng.random(gt.shape) < 0.2) * rng.integers(1, 4, gt.shape)) % 7
    own = seg.copy()
    unclaimed = (seg == 0) & (gt != 0)
    own[unclaimed] = seg.max() + 1 + np.arange(unclaimed.sum())
    assert unclaimed.sum() > 10  # the rule is exercised
    np.testing.assert_allclose(variation_of_information(gt, seg), skm.variation_of_information(gt, own, ignore_labels=(0,)))
    # Scoring ground-truth 0 too: its predicted 0 voxels become singletons as well.
    own_all = seg.copy()
    own_all[seg == 0] = seg.max() + 1 + np.arange((seg == 0).sum())
    np.testing.assert_allclose(variation_of_information(gt, seg, ignore_labels=()),
                               skm.variation_of_information(gt, own_all))
    np.testing.assert_allclose(adapted_rand_error(gt, seg), skm.adapted_rand_error(gt, own))
    assert variation_of_information(gt, gt) == pytest.approx((0.0, 0.0), abs=1e-12)


def test_erl_by_hand():
    from deepsci.apps.connectomics.evaluate import expected_run_length, skeleton_graph
    from deepsci.apps.connectomics.skeleton import TeasarParams

    gt = np.zeros((5, 12, 12), np.uint32)
    gt[2, 2, 1:11] = 1     # straight 10-voxel line: skeleton is itself, length 9
    gt[2, 8, 1:6] = 2      # 5 voxels, length 4
    # x spacing 2: lengths 18 and 8 (one-voxel lines: no dust threshold, no tip to pull off the surface)
    graph = skeleton_graph(gt, voxel_size=(1, 1, 2), params=TeasarParams(dust_voxels=1, tip_clearance=0))
    assert graph["length"].sum() == pytest.approx(26.0)
    seg = gt.copy()
    seg[2, 2, 6:11] = 3    # split object 1 into two runs of 4 edges (8 units each)
    r = expected_run_length(graph, seg)
    assert r["erl"] == pytest.approx((8 ** 2 + 8 ** 2 + 8 ** 2) / 26.0)
    assert r["max_erl"] == pytest.approx((18 ** 2 + 8 ** 2) / 26.0)
    merged = gt.copy()
    merged[gt == 2] = 1    # a merger: object 1's runs count zero, object 2's too
    assert expected_run_length(graph, merged)["erl"] == 0.0
    assert expected_run_length(graph, merged)["merged_segments"] == 1
    # Default knobs: the lines are dust (under 100 voxels), so there is nothing to score.
    assert len(skeleton_graph(gt, voxel_size=(1, 1, 2))["nodes"]) == 0


def test_merge_split_counts():
    from deepsci.apps.connectomics.evaluate import count_merges_splits

    gt = np.zeros((4, 10, 10), int)
    gt[:, :5], gt[:, 5:] = 1, 2
    seg = np.ones_like(gt)                # one segment over both: one merge
    assert count_merges_splits(gt, seg, min_overlap=10) == {"merges": 1, "splits": 0}
    seg = np.where(np.arange(10)[None, None, :] < 5, 1, 2) + 2 * (gt == 2)
    assert count_merges_splits(gt, seg, min_overlap=10) == {"merges": 0, "splits": 2}


# ------------------------------------------------------------------ blocks


def test_block_plan_cores_tile_the_volume():
    from deepsci.apps.connectomics.segment import plan_blocks

    shape = (20, 33, 17)
    blocks = plan_blocks(shape, (10, 16, 17), (4, 6, 4))
    cover = np.zeros(shape, int)
    for b in blocks:
        assert all(lo <= clo < chi <= hi for lo, clo, chi, hi in zip(b["lo"], b["core_lo"], b["core_hi"], b["hi"], strict=True))
        assert all(h - lo_ <= s for lo_, h, s in zip(b["lo"], b["hi"], (10, 16, 17), strict=True))
        cover[tuple(slice(a, c) for a, c in zip(b["core_lo"], b["core_hi"], strict=True))] += 1
    assert np.all(cover == 1)
    with pytest.raises(ConfigError, match="overlap"):
        plan_blocks(shape, (10, 16, 17), (10, 2, 2))


def test_split_consensus_cuts_merges():
    from deepsci.apps.connectomics.labels import split_consensus

    a = np.zeros((1, 4, 8), np.uint32)
    b = np.zeros_like(a)
    a[0, :, :] = 1                 # run A merged two objects
    b[0, :, :4], b[0, :, 4:] = 1, 2
    out = split_consensus(a, b, min_size=1)
    assert len(np.unique(out)) == 2 and out[0, 0, 0] != out[0, 0, 7] and out.min() > 0
    assert np.all(split_consensus(a, a) == 1)


def test_training_can_start_from_a_model(tmp_path):
    """init_model: the run starts from those weights; a model of another shape is refused."""
    from deepsci.apps.connectomics.model import build_model as _initial_model
    from deepsci.core.models.card import ModelCard
    from deepsci.core.models.ffn import PRESETS, FFNConfig, ffn_model
    from deepsci.core.models.serialization import save_model

    source = ffn_model(PRESETS["tiny"])
    save_model(source, tmp_path / "m.keras",
               card=ModelCard(app="connectomics", task="ffn", extra={"ffn": PRESETS["tiny"].to_dict()}))
    start = _initial_model(PRESETS["tiny"], str(tmp_path / "m.keras"))
    for a, b in zip(start.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    fresh = _initial_model(PRESETS["tiny"], None)
    assert not all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), source.get_weights(), strict=True))
    with pytest.raises(InputError, match="shape"):
        _initial_model(FFNConfig(fov_size=(9, 9, 9), deltas=(2, 2, 2), depth=2, features=4), str(tmp_path / "m.keras"))
    with pytest.raises(InputError, match="start from"):
        _initial_model(PRESETS["tiny"], str(tmp_path / "none.keras"))
    save_model(source, tmp_path / "other.keras", card=ModelCard(app="molecules", task="qm9-properties"))
    with pytest.raises(InputError, match="expected a connectomics model, found a molecules model"):
        _initial_model(PRESETS["tiny"], str(tmp_path / "other.keras"))

class _LeakyFFN:
    """Stands in for a FloodFiller whose FFN floods everything (an under-trained one)."""

    def __init__(self, fov=(5, 5, 5), deltas=(2, 2, 2)):
        self.fov, self.deltas, self.fov_evals = fov, deltas, 0

    def __call__(self, batch):
        self.fov_evals += len(batch)
        return np.full(batch.shape[:-1], 4.0, np.float32)


def _two_cells(wall_value=20.0):
    """Two bright cells side by side in x, parted by a dark one-voxel membrane."""
    img = np.full((9, 12, 21), 200.0, np.float32)
    img[:, :, 10] = wall_value
    lab = np.ones(img.shape, np.uint32)
    lab[:, :, 11:] = 2
    return img, lab


def test_membrane_seeds_lie_inside_cells():
    from deepsci.apps.connectomics.baseline import boundary_map
    from deepsci.apps.connectomics.fill import membrane_seeds

    img, lab = _two_cells()
    seeds = membrane_seeds(boundary_map(img, sigma=0.0), threshold=0.5, min_distance=3)
    assert len(seeds) >= 2 and not np.any(seeds[:, 2] == 10)
    assert set(lab[tuple(seeds.T)].tolist()) == {1, 2}


def test_boundary_threshold_stops_a_leaky_ffn():
    from deepsci.apps.connectomics.config import InferenceConfig
    from deepsci.apps.connectomics.evaluate import count_merges_splits
    from deepsci.apps.connectomics.segment import segment_block

    img, lab = _two_cells()
    seeds = np.array([[4, 6, 3], [4, 6, 17]])
    base = dict(min_segment_size=10, consensus=False, min_boundary_dist=(0, 0, 0))
    leaky = segment_block(img, _LeakyFFN(), InferenceConfig(**base), mean=128.0, std=64.0, seeds=seeds)
    assert leaky["labels"].max() == 1  # one object across the membrane: a merge
    held = segment_block(img, _LeakyFFN(), InferenceConfig(**base, boundary_threshold=0.5, boundary_sigma=0.0),
                         mean=128.0, std=64.0, seeds=seeds)["labels"]
    assert held.max() == 2 and np.all(held[:, :, 10] == 0)
    assert count_merges_splits(lab, held, min_overlap=10) == {"merges": 0, "splits": 0}
    # Filling the unclaimed membrane by a watershed of the boundary map leaves no voxel unlabelled.
    filled = segment_block(img, _LeakyFFN(), InferenceConfig(**base, boundary_threshold=0.5, boundary_sigma=0.0,
                                                             fill_unclaimed=True),
                           mean=128.0, std=64.0, seeds=seeds)["labels"]
    assert filled.min() > 0 and np.array_equal(filled[held > 0], held[held > 0])
    assert np.all(filled[:, :, :10] == filled[4, 6, 3]) and np.all(filled[:, :, 11:] == filled[4, 6, 17])
    with pytest.raises(ConfigError):
        InferenceConfig(boundary_threshold=1.5).validate()


def test_stitching_recovers_objects_cut_by_blocks(tmp_path):
    """Blocks holding pieces of known objects under unrelated local ids stitch back exactly."""
    from deepsci.apps.connectomics.evaluate import count_merges_splits, variation_of_information
    from deepsci.apps.connectomics.segment import assemble_blocks, plan_blocks, stitch_blocks
    from deepsci.apps.connectomics.synth import synthetic_volume

    _, gt = synthetic_volume(shape=(20, 40, 36), n_neurites=7, seed=4)
    blocks = plan_blocks(gt.shape, (12, 24, 20), (4, 6, 6))
    assert len(blocks) > 4
    rng = np.random.default_rng(0)
    for b in blocks:
        local = gt[tuple(slice(a, c) for a, c in zip(b["lo"], b["hi"], strict=True))]
        ids = np.unique(local[local > 0])
        perm = np.zeros(int(gt.max()) + 1, np.uint32)
        perm[ids] = rng.permutation(len(ids)) + 1  # each block numbers its objects its own way
        np.savez(tmp_path / f"{b['key']}.npz", labels=perm[local], prob=(local > 0).astype(np.uint8) * 200)
    mapping = stitch_blocks(blocks, tmp_path)
    out = np.zeros(gt.shape, np.uint32)
    prob = np.zeros(gt.shape, np.uint8)
    assemble_blocks(blocks, tmp_path, mapping, out, prob)
    assert variation_of_information(gt, out) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert count_merges_splits(gt, out, min_overlap=1) == {"merges": 0, "splits": 0}
    assert len(np.unique(out)) == len(np.unique(gt))
    np.testing.assert_array_equal(prob > 0, gt > 0)


class _BrightFFN(_LeakyFFN):
    """Stands in for an FFN that fills bright (cell) voxels and stops at dark membranes."""

    def __call__(self, batch):
        self.fov_evals += len(batch)
        # Slightly less sure away from the centre, so each face's maximum is its middle (no ties).
        dist = np.sqrt(sum(g ** 2 for g in np.meshgrid(*[np.arange(f) - f // 2 for f in self.fov], indexing="ij")))
        return np.where(batch[..., 0] > 0, 4.0 - 0.01 * dist, -4.0).astype(np.float32)


def test_contact_pairs_and_transitive_merge():
    from deepsci.apps.connectomics.agglomerate import contact_pairs, merge_pairs

    lab = np.zeros((4, 5, 9), np.uint32)
    lab[:, :, :3], lab[:, :, 3:6], lab[:, :, 6:8] = 1, 2, 3  # x = 8 stays background
    pairs = contact_pairs(lab)
    assert [(p["a"], p["b"], p["contact"]) for p in pairs] == [(1, 2, 20), (2, 3, 20)]
    assert all(lab[p["centre"]] == p["a"] for p in pairs)
    assert contact_pairs(lab, min_contact=21) == []
    pairs[0]["score"], pairs[1]["score"] = 0.9, 0.2
    out = merge_pairs(lab, pairs, 0.5)
    assert len(np.unique(out[lab == 1])) == 1 and np.all(out[lab == 1] == out[lab == 2])
    assert out[0, 0, 6] != out[0, 0, 0] and np.all(out[:, :, 8] == 0)
    pairs[1]["score"] = 0.6
    assert np.unique(merge_pairs(lab, pairs, 0.5)).tolist() == [0, 1]


def test_agglomeration_joins_a_split_not_a_membrane():
    from deepsci.apps.connectomics.agglomerate import agglomerate
    from deepsci.apps.connectomics.config import AgglomerationConfig, InferenceConfig
    from deepsci.apps.connectomics.predict import normalise

    img, lab = _two_cells()
    split = lab.copy()
    split[:, :, 5:11] = 3  # cell 1 cut in two pieces (1 and 3); the membrane x = 10 goes with 3
    ff = _BrightFFN()
    cfg = AgglomerationConfig(radius=(4, 4, 4), min_contact=10, threshold=0.8, boundary_threshold=None)
    res = agglomerate(split, normalise(img, 128.0, 64.0), ff, InferenceConfig(batch_size=4), cfg)
    scores = {(p["a"], p["b"]): p["score"] for p in res["pairs"]}
    assert scores[(1, 3)] > 0.8 and scores[(2, 3)] < 0.5, scores
    assert res["merged"] == 1 and res["fov_evals"] > 0
    out = res["labels"]
    assert np.all(out[:, :, :10] == out[0, 0, 0]) and not np.any(out[:, :, 11:] == out[0, 0, 0])
    with pytest.raises(ConfigError):
        AgglomerationConfig(threshold=0.0).validate()
    with pytest.raises(ConfigError):
        InferenceConfig(reseed_unclaimed=50).validate()  # needs a boundary threshold


def test_reseed_unclaimed_gives_unseeded_cells_their_own_object():
    from deepsci.apps.connectomics.config import InferenceConfig
    from deepsci.apps.connectomics.segment import segment_block

    img, lab = _two_cells()
    base = dict(min_segment_size=10, consensus=False, min_boundary_dist=(0, 0, 0), boundary_threshold=0.5,
                boundary_sigma=0.0, fill_unclaimed=True)
    seeds = np.array([[4, 6, 3]])  # only cell 1 is seeded
    plain = segment_block(img, _LeakyFFN(), InferenceConfig(**base), mean=128.0, std=64.0, seeds=seeds)["labels"]
    assert plain.max() == 1  # the fill hands the unseeded cell to its neighbour: a merge
    res = segment_block(img, _LeakyFFN(), InferenceConfig(**base, reseed_unclaimed=50), mean=128.0, std=64.0,
                        seeds=seeds)["labels"]
    right = np.unique(res[:, :, 11:])
    assert len(right) == 1 and right[0] > 0 and not np.any(res[:, :, :10] == right[0])


def test_component_marker_baseline():
    from deepsci.apps.connectomics.baseline import watershed_baseline
    from deepsci.apps.connectomics.config import BaselineConfig
    from deepsci.apps.connectomics.evaluate import count_merges_splits

    img, lab = _two_cells()
    out = watershed_baseline(img, BaselineConfig(sigma=0.0, threshold=0.5, min_size=10, markers="components"))
    # The one-voxel membrane plane (108 voxels) may go either way; the cells may not.
    assert out.max() == 2 and count_merges_splits(lab, out, min_overlap=200) == {"merges": 0, "splits": 0}
    with pytest.raises(ConfigError):
        BaselineConfig(markers="grid").validate()


def test_seed_policy_none_is_a_component_watershed_for_the_agglomeration():
    from deepsci.apps.connectomics.baseline import watershed_baseline
    from deepsci.apps.connectomics.config import BaselineConfig, InferenceConfig
    from deepsci.apps.connectomics.segment import segment_block

    img, _ = _two_cells()
    cfg = InferenceConfig(seed_policy="none", reseed_unclaimed=10, boundary_threshold=0.5, boundary_sigma=0.0,
                          fill_unclaimed=True, consensus=False)
    res = segment_block(img, _LeakyFFN(), cfg, mean=128.0, std=64.0)
    ws = watershed_baseline(img, BaselineConfig(sigma=0.0, threshold=0.5, min_size=10, markers="components"))
    assert res["fov_evals"] == 0 and np.array_equal(res["labels"], ws)
    with pytest.raises(ConfigError, match="--seed-policy none"):
        InferenceConfig(seed_policy="none", boundary_threshold=0.5).validate()


def _striped_cells(seed=0):
    """Cells of random widths in x parted by dark membranes; each cell cut by a bright plane into two pieces.

    Returns image, ground truth and an over-segmentation where every cut (no membrane) and every
    membrane is a contact: the cuts should be joined, the membranes kept.
    """
    rng = np.random.default_rng(seed)
    widths = rng.integers(4, 9, 6)
    x = np.concatenate([[0], np.cumsum(widths + 1)])
    img = np.full((8, 12, int(x[-1])), 200.0, np.float32)
    gt = np.zeros(img.shape, np.uint32)
    seg = np.zeros(img.shape, np.uint32)
    for i, (lo, w) in enumerate(zip(x[:-1], widths, strict=True)):
        img[:, :, lo + w] = 20.0  # membrane voxel goes with the cell on its left
        gt[:, :, lo:lo + w + 1] = i + 1
        cut = int(rng.integers(3, 9))
        seg[:, :cut, lo:lo + w + 1] = 2 * i + 1
        seg[:, cut:, lo:lo + w + 1] = 2 * i + 2
    img += rng.normal(0, 5, img.shape).astype(np.float32)
    return img, gt, seg


def test_rag_stats_add_up_when_nodes_merge():
    from deepsci.apps.connectomics.rag import rag_agglomerate, rag_stats

    lab = np.zeros((2, 3, 6), np.uint32)
    lab[..., :2], lab[..., 2:4], lab[..., 4:] = 1, 2, 3
    bmap = np.zeros(lab.shape, np.float32)
    bmap[..., 3] = 0.8  # the 2|3 contact runs through a membrane
    st = rag_stats(lab, bmap, gt=np.where(lab == 3, 2, 1).astype(np.uint32))
    assert sorted(st.edges) == [(1, 2), (2, 3)] and st.edges[(1, 2)][0] == 6 and st.size.tolist() == [0, 12, 12, 12]
    assert np.isclose(st.edges[(2, 3)][1] / 6, 0.4)  # face means (0.8 + 0) / 2
    assert st.edges[(2, 3)][6:].tolist() == [6, 6, 6, 0, 0, 0, 0]  # faces at or above each of rag.LEVELS
    out, merged = rag_agglomerate(lab, st, None, 0.0, oracle=True)  # oracle: joins only what gt joins
    assert merged == 1 and out[0, 0, 0] == out[0, 0, 2] != out[0, 0, 4]
    assert st.size[1] == 24 and list(st.edges) == [(1, 3)] and st.gt[1].tolist() == [24, 0]


def test_pair_classifier_learns_cuts_from_membranes_and_round_trips(tmp_path):
    from deepsci.apps.connectomics.baseline import boundary_map
    from deepsci.apps.connectomics.evaluate import variation_of_information
    from deepsci.apps.connectomics.rag import (
        FEATURES,
        PairClassifier,
        fit_pair_classifier,
        rag_agglomerate,
        rag_stats,
        training_examples,
    )

    img, gt, seg = _striped_cells(seed=0)
    x, y = training_examples(seg, boundary_map(img, sigma=0.0), gt)
    assert x.shape[1] == len(FEATURES) and 0 < y.sum() < len(y)
    feats = [f for f in FEATURES if not f.startswith("ffn")]
    for kind in ("logistic", "forest"):
        clf = fit_pair_classifier(x, y, feats, kind=kind, trees=10)
        clf.save(tmp_path / f"{kind}.json")
        again = PairClassifier.load(tmp_path / f"{kind}.json")
        assert np.allclose(again.proba(x), clf.proba(x)) and again.kind == kind
    # The JSON forest predicts what scikit-learn's forest does.
    from sklearn.ensemble import RandomForestClassifier

    idx = [FEATURES.index(f) for f in feats]
    rf = RandomForestClassifier(n_estimators=10, min_samples_leaf=5, class_weight="balanced", random_state=0,
                                n_jobs=1).fit(x[:, idx], y)
    assert np.allclose(again.proba(x), rf.predict_proba(x[:, idx])[:, 1])
    # A new volume (other widths and cuts): the cuts are joined, the membranes kept.
    img2, gt2, seg2 = _striped_cells(seed=1)
    bm2 = boundary_map(img2, sigma=0.0)
    out, merged = rag_agglomerate(seg2, rag_stats(seg2, bm2), again, 0.5)
    assert merged == 6 and sum(variation_of_information(gt2, out)) < 1e-6
    (tmp_path / "bad.json").write_text('{"features": ["nope"], "kind": "forest", "params": {"trees": []}}')
    with pytest.raises(InputError):
        PairClassifier.load(tmp_path / "bad.json")


def test_cli_refuses_another_apps_model_in_one_line(tmp_path, capsys):
    """A molecules model card (or none) given to segment / train-agglo: one error line, exit 2, nothing written."""
    import json

    from deepsci.apps.cli import main
    from deepsci.apps.connectomics.io import write_volume
    from deepsci.apps.connectomics.synth import synthetic_volume

    img, lab = synthetic_volume(shape=(16, 24, 24), n_neurites=3, seed=0)
    write_volume(tmp_path / "v.zarr", {"image": img, "labels": lab})
    (tmp_path / "m.keras").write_bytes(b"not read: the card is checked first")
    card = {"schema": "deepsci.card/1", "app": "molecules", "task": "qm9-properties"}
    (tmp_path / "m.card.json").write_text(json.dumps(card))
    (tmp_path / "bare.keras").write_bytes(b"x")
    vol = [f"{tmp_path}/v.zarr:image"]
    cases = [
        (["segment", "--model", str(tmp_path / "m.keras"), "--image", *vol], "expected a connectomics model, found a "
                                                                               "molecules model"),
        (["train-agglo", "--model", str(tmp_path / "m.keras"), "--image", *vol, "--labels", f"{tmp_path}/v.zarr:labels"],
         "expected a connectomics model, found a molecules model"),
        (["segment", "--model", str(tmp_path / "bare.keras"), "--image", *vol], "model card"),
    ]
    for args, match in cases:
        capsys.readouterr()
        assert main(["connectomics", *args, "--out", str(tmp_path / "o")]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], (args, err)
        assert str(tmp_path) in err[0] and not (tmp_path / "o").exists()


def test_cli_rerun_from_run_json_gives_the_same_output(tmp_path, capsys):
    """baseline with non-default options, then --config <out>/run.json --out <other>: same labels, same config."""
    import json

    from deepsci.apps.cli import main
    from deepsci.apps.connectomics.io import open_volume, write_volume
    from deepsci.apps.connectomics.synth import synthetic_volume

    img, lab = synthetic_volume(shape=(16, 32, 32), n_neurites=5, seed=3)
    write_volume(tmp_path / "v.zarr", {"image": img, "labels": lab}, voxel_size=(8, 8, 8))
    first = ["connectomics", "baseline", "--image", f"{tmp_path}/v.zarr:image", "--out", str(tmp_path / "a"),
             "--markers", "components", "--threshold", "0.5", "--min-size", "20", "--sigma", "0.5"]
    assert main(first) == 0
    assert main(["connectomics", "baseline", "--config", str(tmp_path / "a" / "run.json"),
                 "--out", str(tmp_path / "b")]) == 0
    a = open_volume(f"{tmp_path}/a/segmentation.zarr:labels", kind="labels").read()
    b = open_volume(f"{tmp_path}/b/segmentation.zarr:labels", kind="labels").read()
    default = main(["connectomics", "baseline", "--image", f"{tmp_path}/v.zarr:image", "--out", str(tmp_path / "c")])
    c = open_volume(f"{tmp_path}/c/segmentation.zarr:labels", kind="labels").read()
    assert default == 0 and a.max() > 1 and np.array_equal(a, b) and not np.array_equal(a, c)
    ra, rb = (json.loads((tmp_path / d / "run.json").read_text()) for d in "ab")
    assert ra["config"]["baseline"] == rb["config"]["baseline"] == {
        "sigma": 0.5, "threshold": 0.5, "min_distance": 4, "min_size": 20, "markers": "components"}
    assert rb["config"]["out"] == str(tmp_path / "b") and ra["results"]["objects"] == rb["results"]["objects"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir() if p.name != "run.log") == ["run.json",
                                                                                          "segmentation.zarr"]
    capsys.readouterr()
    assert main(["connectomics", "baseline", "--image", f"{tmp_path}/v.zarr:image", "--out", str(tmp_path / "d"),
                 "--min-size", "-1"]) == 2
    assert "expected --min-size >= 0, found -1" in capsys.readouterr().err
