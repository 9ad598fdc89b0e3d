"""Training options: per-class loss weights and the weighted example stream."""
from __future__ import annotations

import numpy as np
import pytest

from deepsci.apps.variants.candidates import Candidate
from deepsci.apps.variants.make_examples import serialize_example
from deepsci.apps.variants.tfrecord import TFRecordWriter
from deepsci.apps.variants.train import TrainVariantsConfig, class_counts, class_weights
from deepsci.core.errors import ConfigError


def _shard(path, labels):
    cand = Candidate("chr1", 10, "A", ["C"], [("X", 10, "C")], 20, [10, 10])
    rng = np.random.default_rng(0)
    with TFRecordWriter(path) as w:
        for y in labels:
            img = rng.integers(0, 255, (100, 221, 7), dtype=np.uint8)
            w.write(serialize_example(cand, (0,), img, y))
    return path


def test_balanced_weights_equalise_classes():
    w = class_weights("balanced", [10, 60, 30])
    # Every class carries the same total weight, and the mean weight per example is 1.
    np.testing.assert_allclose([10 * w[0], 60 * w[1], 30 * w[2]], [100 / 3] * 3)
    assert class_weights("none", [1, 2, 3]) is None
    assert class_weights("2,1,1", [1, 2, 3]) == (2.0, 1.0, 1.0)
    # An absent class gets no weight instead of a division by zero.
    assert class_weights("balanced", [0, 5, 5]) == (0.0, 1.0, 1.0)


@pytest.mark.parametrize("bad", ["heavy", "1,2", "-1,1,1", "0,0,0"])
def test_bad_class_weight_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="class-weight"):
        TrainVariantsConfig(examples="x", class_weight=bad).validate()


def test_weighted_dataset_carries_each_labels_weight(tmp_path):
    from deepsci.apps.variants.model import example_dataset

    labels = [0, 1, 1, 2, -1, 1, 0]
    f = _shard(tmp_path / "examples-00000-of-00001.tfrecord.gz", labels)
    assert class_counts([f]) == [2, 3, 1]
    w = class_weights("balanced", class_counts([f]))
    seen = []
    for x, y, sw in example_dataset([f], batch_size=4, training=True, class_weights=w):
        assert x.shape[1:] == (100, 221, 7)
        seen += list(zip(y.numpy().tolist(), sw.numpy().tolist(), strict=True))
    assert sorted(y for y, _ in seen) == [0, 0, 1, 1, 1, 2]      # unlabelled dropped
    for y, sw in seen:
        assert sw == pytest.approx(w[y])


def test_label_counts_from_make_examples_info_and_loose_shards(tmp_path):
    from deepsci.apps.variants.train import _label_counts

    folder = tmp_path / "ex"
    folder.mkdir()
    _shard(folder / "examples-00000-of-00001.tfrecord.gz", [0, 1, 1, -1])
    # The folder's count is make-examples' record of what it wrote, not a second read.
    (folder / "examples_info.json").write_text('{"training": true, "labels": [7, 8, 9]}')
    loose = _shard(tmp_path / "examples-00000-of-00001.tfrecord.gz", [0, 1, 1, 2, -1])
    assert _label_counts(f"{folder},{loose}") == [8, 10, 10]


def _saved_model(path, seed):
    import keras

    from deepsci.apps.variants.model import build_model, genotype_card
    from deepsci.core.models.serialization import save_model

    keras.utils.set_random_seed(seed)
    save_model(build_model("small", width=4), path,
               card=genotype_card(training={}, data={}, metrics={}, extra={}))
    return path


def test_ensemble_averages_member_probabilities(tmp_path):
    from deepsci.apps.variants.predict import CallConfig, call_variants, read_calls
    from deepsci.core.errors import InputError

    (tmp_path / "ex").mkdir()
    f = _shard(tmp_path / "ex" / "examples-00000-of-00001.tfrecord.gz", [0, 1, 2, 1, 0])
    a, b = _saved_model(tmp_path / "a.keras", 1), _saved_model(tmp_path / "b.keras", 2)
    probs = {}
    # The same two members as an ensemble folder (ensemble.json) as `train --ensemble 2`
    # writes it.
    from deepsci.core.ensemble import write_ensemble
    write_ensemble(tmp_path, [a, b])
    for name, spec in (("a", str(a)), ("b", str(b)), ("ab", f"{a},{b}"), ("dir", str(tmp_path))):
        res = call_variants(CallConfig(examples=str(f.parent), model=spec, batch_size=2,
                                       out=str(tmp_path / name / "calls.tsv.gz")))
        assert res["examples"] == 5
        probs[name] = np.stack([r["probs"] for r in read_calls(tmp_path / name /
                                                                 "calls.tsv.gz")])
    assert not np.allclose(probs["a"], probs["b"], atol=1e-4)   # two different members
    np.testing.assert_allclose(probs["ab"], (probs["a"] + probs["b"]) / 2, atol=2e-5)
    np.testing.assert_allclose(probs["dir"], probs["ab"], atol=1e-6)
    np.testing.assert_allclose(probs["ab"].sum(1), 1.0, atol=1e-5)
    with pytest.raises(InputError, match="missing.keras"):
        call_variants(CallConfig(examples=str(f.parent), model=f"{a},{tmp_path}/missing.keras",
                                 out=str(tmp_path / "x" / "calls.tsv.gz")))
