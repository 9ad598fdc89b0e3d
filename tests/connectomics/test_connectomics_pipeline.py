"""End-to-end tests: CLI train -> segment (blocks, stitching, resume) -> evaluate, bad inputs.

One small FFN is trained once per module through the CLI on a synthetic volume of
separable tubes and reused by the other tests.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from deepsci.apps.cli import main

FOV = ["--fov-size", "11,11,11", "--deltas", "3,3,3", "--depth", "3", "--features", "12"]
#: Total variation of information (bits) the pipelines must stay below on separable tubes,
#: against the connected pieces of the tubes inside the volume.
VI_BOUND = 1.6
#: The same for the bare flood fill: voxels no object claims count as singletons
#: (evaluate.LABEL_ZERO_RULE), so they cost splits, and the tiny FFN leaves a sixth to a fifth
#: of the tube voxels unclaimed (split 2.3-2.6 bits over runs, merge ~0). Leaving everything
#: unsegmented scores about log2 of the voxel count (~12 bits), asserted below.
FLOOD_VI_BOUND = 3.2
#: At most this fraction of scored voxels may be left unclaimed.
UNCLAIMED_BOUND = 0.3
#: --agglo-min-contact of the learned-agglomeration test (train-agglo and segment alike).
CONTACT = "40"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from deepsci.apps.connectomics.io import write_volume
    from deepsci.apps.connectomics.synth import synthetic_volume

    d = tmp_path_factory.mktemp("connectomics")
    img, lab = synthetic_volume(shape=(40, 64, 64), n_neurites=9, radius=(3.0, 5.0), gap=3,
                                label_membranes=False, seed=0)
    write_volume(d / "train.zarr", {"image": img, "labels": lab}, voxel_size=(8, 8, 8))
    timg, tlab = synthetic_volume(shape=(32, 48, 48), n_neurites=3, radius=(3.0, 5.0), gap=4,
                                  label_membranes=False, seed=7)
    write_volume(d / "test.zarr", {"image": timg, "labels": tlab}, voxel_size=(8, 8, 8))
    args = ["connectomics", "train", "--image", f"{d}/train.zarr:image", "--labels", f"{d}/train.zarr:labels",
            "--out", str(d / "model"), "--preset", "tiny", *FOV, "--steps-per-epoch", "100",
            "--lr", "0.003", "--no-tensorboard"]
    # A run stopped after three epochs, then restarted asking for four: it resumes from the checkpoint.
    assert main([*args, "--epochs", "3"]) == 0
    assert main([*args, "--epochs", "4"]) == 0
    return d


def _segment(work, out, *extra):
    rc = main(["connectomics", "segment", "--preset", "ffn", "--model", str(work / "model" / "model.keras"),
               "--image", f"{work}/test.zarr:image", "--out", str(out), "--scheduler", "inline",
               "--min-segment-size", "50", *extra])
    assert rc == 0
    from deepsci.apps.connectomics.io import open_volume

    return open_volume(f"{out}/segmentation.zarr:labels", kind="labels")


def test_training_outputs(work):
    card = json.loads((work / "model" / "model.card.json").read_text())
    assert card["app"] == "connectomics" and card["task"] == "ffn" and card["extra"]["ffn"]["fov_size"] == [11, 11, 11]
    hist = json.loads((work / "model" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4] and hist[-1]["step"] == 400
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert card["training"]["final_loss"] == pytest.approx(hist[-1]["loss"])
    run = json.loads((work / "model" / "run.json").read_text())
    assert run["status"] == "done" and run["config"]["ffn"]["train"]["epochs"] == 4
    assert run["results"]["steps"] == 400 and (work / "model" / "model.keras").exists()
    for name in ("config.json", "run_info.json", "model.json"):
        assert not (work / "model" / name).exists()


def _pieces(labels):
    """Ground truth as connected pieces: a tube that leaves and re-enters the volume is two objects here."""
    from scipy import ndimage as ndi

    out = np.zeros(labels.shape, np.uint32)
    n = 0
    for i in np.unique(labels)[1:]:
        comp, k = ndi.label(labels == i)
        out[comp > 0] = comp[comp > 0] + n
        n += k
    return out


def test_inference_recovers_separable_tubes(work):
    from deepsci.apps.connectomics.evaluate import evaluate_segmentation
    from deepsci.apps.connectomics.io import open_volume

    seg = _segment(work, work / "seg_one")
    gt = _pieces(open_volume(f"{work}/test.zarr:labels", kind="labels").read())
    assert seg.voxel_size == (8.0, 8.0, 8.0)
    prob = open_volume(f"{work}/seg_one/segmentation.zarr:probability").read()
    labels = seg.read()
    assert np.all((prob > 0) == (labels > 0))
    s = evaluate_segmentation(gt, labels, voxel_size=(8, 8, 8), min_overlap=50)
    empty = evaluate_segmentation(gt, np.zeros_like(gt), voxel_size=(8, 8, 8), min_overlap=50)
    assert empty.vi_total > FLOOD_VI_BOUND + 5
    assert s.vi_total < FLOOD_VI_BOUND, s
    assert s.vi_merge < 0.1 and s.merges == 0, s
    assert s.unclaimed_voxels < UNCLAIMED_BOUND * np.count_nonzero(gt), s
    # Every sizeable piece is found, and most voxels of the pieces lie in their best-matching segment.
    matched = total = 0
    for i in np.unique(gt)[1:]:
        piece = gt == i
        if piece.sum() >= 500:
            ids, counts = np.unique(labels[piece], return_counts=True)
            best = counts[ids > 0].max() if np.any(ids > 0) else 0
            assert best >= 0.25 * piece.sum(), (i, piece.sum(), dict(zip(ids.tolist(), counts.tolist(), strict=True)))
            matched, total = matched + best, total + piece.sum()
    assert matched >= 0.5 * total, (matched, total)


def test_segment_membrane_seeds_and_boundary_limit(work):
    """The merge-cutting options from the CLI: seeds inside cells, growth stopped at membranes, gaps filled."""
    from deepsci.apps.connectomics.evaluate import evaluate_segmentation
    from deepsci.apps.connectomics.io import open_volume

    labels = _segment(work, work / "seg_membrane", "--seed-policy", "membrane", "--peak-min-distance", "4",
                      "--boundary-threshold", "0.7", "--fill-unclaimed").read()
    gt = _pieces(open_volume(f"{work}/test.zarr:labels", kind="labels").read())
    assert labels.min() > 0  # every voxel belongs to an object
    s = evaluate_segmentation(gt, labels, voxel_size=(8, 8, 8), min_overlap=50)
    assert s.vi_total < VI_BOUND and s.merges == 0, s
    cfg = json.loads((work / "seg_membrane" / "run.json").read_text())["config"]["segment"]
    assert cfg["inference"]["boundary_threshold"] == 0.7 and cfg["inference"]["fill_unclaimed"] is True
    names = {p.name for p in (work / "seg_membrane").iterdir()}
    assert {"run.json", "segmentation.zarr"} <= names <= {"run.json", "run.log", "segmentation.zarr", ".state"}, names


def test_block_stitching_matches_one_block(work):
    from deepsci.apps.connectomics.evaluate import contingency, count_merges_splits

    one = (work / "seg_one" / "segmentation.zarr")
    if not one.exists():
        _segment(work, work / "seg_one")
    from deepsci.apps.connectomics.io import open_volume

    single = open_volume(f"{one}:labels", kind="labels").read()
    blocks = _segment(work, work / "seg_blocks", "--block-size", "32,30,30", "--overlap", "11,11,11")
    stitched = blocks.read()
    info = json.loads((work / "seg_blocks" / "run.json").read_text())
    assert info["results"]["blocks"] == 4
    # The same objects up to relabelling, within what the flood fill itself changes near block
    # faces (other seeds, less context): at most one object split or merged, and most voxels of
    # the one-block objects inside their stitched counterpart. (Exact stitching of known pieces
    # is tested in test_stitching_recovers_objects_cut_by_blocks.)
    ab = count_merges_splits(single, stitched, min_overlap=50)
    assert ab["merges"] + ab["splits"] <= 1, ab
    c = contingency(single, stitched, ignore_gt=(0,), ignore_seg=(0,))
    matched = c.max(axis=1).toarray().sum()
    assert matched >= 0.6 * np.count_nonzero(single), (matched, np.count_nonzero(single))


def test_segment_resumes_finished_blocks(work, monkeypatch):
    from deepsci.apps.connectomics import segment as seg_mod

    out = work / "seg_resume"
    calls = []
    real = seg_mod.run_block

    def dying(task):
        if len(calls) == 2:
            raise RuntimeError("killed")
        calls.append(task["key"])
        return real(task)

    monkeypatch.setattr(seg_mod, "run_block", dying)
    with pytest.raises(RuntimeError, match="killed"):
        _segment(work, out, "--block-size", "32,30,30", "--overlap", "11,11,11")
    assert not (out / "segmentation.zarr").exists()  # nothing half-written
    done = sorted(p.name for p in (out / ".state").rglob("*.done.json"))
    assert len(done) == 2 and json.loads((out / "run.json").read_text())["status"] == "failed"
    calls.clear()
    monkeypatch.setattr(seg_mod, "run_block", lambda t: (calls.append(t["key"]), real(t))[1])
    resumed = _segment(work, out, "--block-size", "32,30,30", "--overlap", "11,11,11")
    assert len(calls) == 2  # only the two unfinished blocks ran again
    fresh = work / "seg_blocks" / "segmentation.zarr"
    if fresh.exists():
        from deepsci.apps.connectomics.io import open_volume

        np.testing.assert_array_equal(resumed.read(), open_volume(f"{fresh}:labels", kind="labels").read())


def test_cli_baseline_and_evaluate(work, capsys):
    if not (work / "seg_one" / "segmentation.zarr").exists():
        _segment(work, work / "seg_one")
    assert main(["connectomics", "baseline", "--image", f"{work}/test.zarr:image", "--out",
                 str(work / "ws"), "--min-size", "50"]) == 0
    rc = main(["connectomics", "evaluate", "--labels", f"{work}/test.zarr:labels",
               "--seg", f"FFN={work}/seg_one/segmentation.zarr:labels,ws={work}/ws/segmentation.zarr:labels",
               "--image", f"{work}/test.zarr:image", "--out", str(work / "eval"), "--min-overlap", "50"])
    assert rc == 0
    scores = json.loads((work / "eval" / "scores.json").read_text())
    assert set(scores) == {"FFN", "ws", "watershed baseline"}
    # The CLI baseline and the one evaluate computes itself are the same algorithm and settings.
    assert scores["ws"]["vi_total"] == pytest.approx(scores["watershed baseline"]["vi_total"], abs=0.05)
    assert (work / "eval" / "slices.png").stat().st_size > 1000
    assert "vi_split" in capsys.readouterr().out


def test_cli_bad_inputs(work, tmp_path, capsys):
    import h5py

    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["img"] = np.zeros((20, 20, 20), np.uint8)
        f["flat"] = np.zeros((20, 20), np.uint8)
        f["lab_f"] = np.zeros((20, 20, 20), np.float32)
        f["lab_small"] = np.zeros((20, 20, 19), np.int32)
        f["empty"] = np.zeros((0, 20, 20), np.uint8)
    model = str(work / "model" / "model.keras")
    h5 = f"{tmp_path}/v.h5"
    cases = [
        (["train", "--image", f"{h5}:missing", "--labels", f"{h5}:lab_small"], "expected dataset 'missing'"),
        (["train", "--image", f"{h5}:img", "--labels", f"{h5}:lab_small"], "same shape"),
        (["train", "--image", f"{h5}:img", "--labels", f"{h5}:lab_f"], "integer label"),
        (["segment", "--preset", "ffn", "--model", model, "--image", f"{h5}:flat"], "3-D"),
        (["segment", "--preset", "ffn", "--model", model, "--image", f"{h5}:empty"], "non-empty"),
        (["segment", "--preset", "ffn", "--model", model, "--image", f"{h5}:img", "--block-size", "8,8,8"], "FOV"),
        (["segment", "--model", str(tmp_path / "none.keras"), "--image", f"{h5}:img"], "trained model"),
        (["segment", "--model", model, "--image", f"{h5}:img", "--boundary-threshold", "1.5"], "--boundary-threshold"),
        (["evaluate", "--labels", f"{h5}:lab_small", "--seg", f"{h5}:img"], "same shape"),
    ]
    for args, match in cases:
        capsys.readouterr()
        rc = main(["connectomics", *args, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, (args, err)
        assert len(err) == 1 and err[0].startswith("error:") and match in err[0], (args, err)


def test_segment_reseed_and_ffn_agglomeration(work):
    """Unclaimed cells become objects and the FFN agglomeration joins pieces of one tube, from the CLI."""
    from deepsci.apps.connectomics.evaluate import evaluate_segmentation
    from deepsci.apps.connectomics.io import open_volume

    opts = ["--seed-policy", "membrane", "--peak-min-distance", "4", "--boundary-threshold", "0.7", "--fill-unclaimed",
            "--reseed-unclaimed", "50"]
    gt = _pieces(open_volume(f"{work}/test.zarr:labels", kind="labels").read())
    split = evaluate_segmentation(gt, _segment(work, work / "seg_reseed", *opts).read(), min_overlap=50)
    joined_labels = _segment(work, work / "seg_agglo", *opts, "--agglomerate", "--agglo-threshold", "0.8",
                             "--agglo-min-contact", "20", "--agglo-radius", "8").read()
    joined = evaluate_segmentation(gt, joined_labels, min_overlap=50)
    assert joined_labels.min() > 0
    assert joined.vi_total < VI_BOUND and joined.vi_total <= split.vi_total + 0.05, (split, joined)
    assert joined.n_segments <= split.n_segments
    cfg = json.loads((work / "seg_agglo" / "run.json").read_text())["config"]["segment"]["inference"]
    assert cfg["agglomerate"] is True and cfg["reseed_unclaimed"] == 50 and cfg["agglomeration"]["min_contact"] == 20
    assert cfg["agglomeration"]["threshold"] == 0.8 and cfg["agglomeration"]["radius"] == [8]
    assert main(["connectomics", "baseline", "--image", f"{work}/test.zarr:image", "--out", str(work / "ws_cc"),
                 "--markers", "components", "--threshold", "0.5"]) == 0
    assert main(["connectomics", "baseline", "--image", f"{work}/test.zarr:image", "--out", str(work / "ws_bad"),
                 "--markers", "grid"]) == 2


def test_train_agglo_and_learned_agglomeration(work, capsys):
    """Watershed supervoxels -> train-agglo on the training volume -> segment --agglo-classifier on the test one."""
    from deepsci.apps.connectomics.evaluate import evaluate_segmentation
    from deepsci.apps.connectomics.io import open_volume

    # FFN pair recoveries for contacts of at least 40 faces: about 700 pairs of the training volume's ~550
    # supervoxels and 330 of the test volume's ~300 (20 faces: twice that, for the same VI), the FFN runs
    # being most of this test's time; smaller contacts are still scored by the classifier (FFN features 0.5).
    model = str(work / "model" / "model.keras")
    sv = ["--seed-policy", "watershed", "--boundary-threshold", "0.5", "--peak-min-distance", "2", "--no-consensus"]
    assert main(["connectomics", "segment", "--preset", "ffn", "--model", model, "--image", f"{work}/train.zarr:image",
                 "--out", str(work / "sv_train"), "--scheduler", "inline", *sv]) == 0
    capsys.readouterr()
    assert main(["connectomics", "train-agglo", "--image", f"{work}/train.zarr:image",
                 "--labels", f"{work}/train.zarr:labels", "--seg", f"{work}/sv_train/segmentation.zarr:labels",
                 "--model", model, "--agglo-min-contact", CONTACT, "--agglo-radius", "8", "--out", str(work / "agg")]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["pairs_scored"] > 0 and 0 < info["joins"] < info["examples"]
    gt = _pieces(open_volume(f"{work}/test.zarr:labels", kind="labels").read())
    pieces = evaluate_segmentation(gt, _segment(work, work / "sv_test", *sv).read(), min_overlap=50)
    joined = evaluate_segmentation(gt, _segment(work, work / "sv_agglo", *sv, "--agglomerate", "--agglo-classifier",
                                                str(work / "agg" / "pair_classifier.json"), "--agglo-threshold", "0.5",
                                                "--agglo-min-contact", CONTACT, "--agglo-radius", "8").read(),
                                   min_overlap=50)
    assert joined.n_segments < pieces.n_segments and joined.vi_total < pieces.vi_total - 0.3, (pieces, joined)
    assert joined.vi_total < VI_BOUND, joined
    # Without --model the classifier uses boundary and size features only; segment then runs no FFN at all.
    assert main(["connectomics", "train-agglo", "--image", f"{work}/train.zarr:image",
                 "--labels", f"{work}/train.zarr:labels", "--seg", f"{work}/sv_train/segmentation.zarr:labels",
                 "--agglo-min-contact", CONTACT, "--out", str(work / "agg_noffn")]) == 0
    capsys.readouterr()
    _segment(work, work / "sv_noffn", *sv, "--agglomerate", "--agglo-classifier",
             str(work / "agg_noffn" / "pair_classifier.json"), "--agglo-threshold", "0.5", "--agglo-min-contact", CONTACT)
    run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert run["fov_evals"] == 0 and run["objects"] < pieces.n_segments, run
    assert main(["connectomics", "train-agglo", "--image", f"{work}/train.zarr:image",
                 "--labels", f"{work}/test.zarr:labels", "--seg", f"{work}/sv_train/segmentation.zarr:labels",
                 "--out", str(work / "agg_bad")]) == 2
    # The product pipeline as presets: `--preset supervoxels` with this volume's settings makes the explicit
    # run's supervoxels; `--preset learned` agglomerates them with the classifier as well as the explicit run
    # (its own segment threshold 0.5 and batch 16); train-agglo without --seg makes the supervoxels itself.
    same = ["--boundary-threshold", "0.5", "--peak-min-distance", "2"]
    np.testing.assert_array_equal(_segment(work, work / "sv_preset0", "--preset", "supervoxels", *same).read(),
                                  open_volume(f"{work}/sv_test/segmentation.zarr:labels", kind="labels").read())
    learned = evaluate_segmentation(gt, _segment(work, work / "sv_preset", "--preset", "learned", *same,
                                                 "--agglo-classifier", str(work / "agg" / "pair_classifier.json"),
                                                 "--agglo-threshold", "0.5", "--agglo-min-contact", CONTACT,
                                                 "--agglo-radius", "8").read(), min_overlap=50)
    assert learned.vi_total < pieces.vi_total - 0.3 and learned.vi_total < VI_BOUND, (pieces, learned)
    rec = json.loads((work / "sv_preset" / "run.json").read_text())["config"]
    inf = rec["segment"]["inference"]
    assert rec["preset"] == "learned" and (inf["seed_policy"], inf["segment_threshold"], inf["batch_size"],
                                           inf["consensus"], inf["agglomerate"]) == ("watershed", 0.5, 16, False, True)
    assert (inf["boundary_threshold"], inf["agglomeration"]["threshold"], inf["agglomeration"]["radius"],
            inf["agglomeration"]["min_contact"]) == (0.5, 0.5, [8], int(CONTACT))
    assert main(["connectomics", "train-agglo", "--image", f"{work}/train.zarr:image", *same,
                 "--labels", f"{work}/train.zarr:labels", "--agglo-min-contact", CONTACT,
                 "--out", str(work / "agg_noseg")]) == 0
    assert (json.loads((work / "agg_noseg" / "pair_classifier.json").read_text())
            == json.loads((work / "agg_noffn" / "pair_classifier.json").read_text()))
    assert main(["connectomics", "segment", "--model", model, "--image", f"{work}/test.zarr:image",
                 "--out", str(work / "sv_nocls"), "--preset", "learned"]) == 2  # no classifier: one line
