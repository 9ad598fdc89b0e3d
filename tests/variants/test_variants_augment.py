"""Allele-fraction augmentation: which read rows go, order, label and seeding."""
from __future__ import annotations

import numpy as np
import pytest

from deepsci.apps.variants.augment import (
    AlleleFractionAugment,
    augment_example,
    drop_alt_reads,
    read_rows,
)
from deepsci.apps.variants.pileup import (
    NOT_SUPPORTS,
    REF_ROWS,
    STRAND_CHANNEL,
    SUPPORT_CHANNEL,
    SUPPORTS,
)


def _pileup(support: list[int]) -> np.ndarray:
    """A hand-built image: reference rows, then one read row per entry of ``support``.

    Row ``k``'s read carries its index in channel 6 (insert size), so rows can be traced
    after compaction; reads cover only part of the window, as real ones do.
    """
    img = np.zeros((100, 221, 7), np.uint8)
    img[:REF_ROWS, :, 0] = 250
    for k, s in enumerate(support):
        row = img[REF_ROWS + k]
        a = 5 * k % 70
        row[a:a + 150, 0] = 180
        row[a:a + 150, STRAND_CHANNEL] = 70 if k % 2 else 240
        row[a:a + 150, SUPPORT_CHANNEL] = s
        row[a:a + 150, 6] = k + 1
    return img


def _ids(img):
    rows, alt = read_rows(img)
    return [int(img[r, :, 6].max()) - 1 for r in rows], alt


def test_read_rows_finds_reads_and_their_support():
    support = [NOT_SUPPORTS, SUPPORTS, NOT_SUPPORTS, SUPPORTS, 76]
    ids, alt = _ids(_pileup(support))
    assert ids == [0, 1, 2, 3, 4]
    assert alt.tolist() == [False, True, False, True, False]    # another alt's read is kept


def test_drop_alt_reads_removes_only_alt_rows_and_keeps_order():
    # 16 reference-supporting and 14 alt-supporting reads, interleaved.
    support = [SUPPORTS if k % 2 and k < 29 else NOT_SUPPORTS for k in range(30)]
    img = _pileup(support)
    out = drop_alt_reads(img, np.random.default_rng(3))
    ids, alt = _ids(out)
    alt_before = [k for k, s in enumerate(support) if s == SUPPORTS]
    ref_before = [k for k, s in enumerate(support) if s != SUPPORTS]
    assert [i for i, a in zip(ids, alt, strict=True) if not a] == ref_before   # all kept
    kept_alt = [i for i, a in zip(ids, alt, strict=True) if a]
    assert 2 <= len(kept_alt) < len(alt_before) and set(kept_alt) <= set(alt_before)
    assert ids == sorted(ids)                               # original row order
    assert len(kept_alt) / len(ids) >= 0.12
    # Rows are compacted upwards: the freed rows at the bottom are empty.
    n = len(ids)
    assert (out[REF_ROWS + n:] == 0).all()
    for r, i in enumerate(ids):
        np.testing.assert_array_equal(out[REF_ROWS + r], img[REF_ROWS + i])
    np.testing.assert_array_equal(out[:REF_ROWS], img[:REF_ROWS])
    assert out.dtype == np.uint8 and out.shape == img.shape


def test_drop_alt_reads_respects_the_candidate_floors_and_is_seeded():
    support = [SUPPORTS] * 12 + [NOT_SUPPORTS] * 28
    img = _pileup(support)
    kept = []
    for seed in range(200):
        _, alt = read_rows(drop_alt_reads(img, np.random.default_rng(seed)))
        kept.append(int(alt.sum()))
    # k / (k + 28) >= 0.12 needs k >= 4 (3 / 31 < 0.12); every count up to 12 is reachable.
    assert min(kept) == 4 and max(kept) <= 12 and len(set(kept)) >= 6
    a = drop_alt_reads(img, np.random.default_rng(7))
    np.testing.assert_array_equal(a, drop_alt_reads(img, np.random.default_rng(7)))
    # Already at the floor (2 alt reads of 10): nothing can go.
    low = _pileup([SUPPORTS, SUPPORTS] + [NOT_SUPPORTS] * 8)
    np.testing.assert_array_equal(drop_alt_reads(low, np.random.default_rng(0)), low)


@pytest.mark.parametrize("label,is_snp,alleles,changed", [
    (1, True, "snp", True), (0, True, "snp", False), (2, True, "snp", False),
    (1, False, "snp", False), (1, False, "all", True)])
def test_augment_example_touches_only_eligible_hets(label, is_snp, alleles, changed):
    img = _pileup([SUPPORTS] * 15 + [NOT_SUPPORTS] * 15)
    cfg = AlleleFractionAugment(probability=1.0, alleles=alleles)
    out = augment_example(img, label, is_snp, cfg, np.random.default_rng(1))
    assert (not np.array_equal(out, img)) == changed
    off = AlleleFractionAugment(probability=0.0, alleles="all")
    assert augment_example(img, 1, True, off, np.random.default_rng(1)) is img


def test_augmented_dataset_thins_het_snps_keeps_labels_and_repeats_per_epoch(tmp_path):
    from deepsci.apps.variants.candidates import Candidate
    from deepsci.apps.variants.make_examples import serialize_example
    from deepsci.apps.variants.model import example_dataset
    from deepsci.apps.variants.tfrecord import TFRecordWriter

    img = _pileup([SUPPORTS] * 15 + [NOT_SUPPORTS] * 15)
    snp = Candidate("chr1", 10, "A", ["C"], [("X", 10, "C")], 30, [15, 15])
    ins = Candidate("chr1", 20, "A", ["AT"], [("I", 20, "T")], 30, [15, 15])
    f = tmp_path / "examples-00000-of-00001.tfrecord.gz"
    labels = [1, 1, 0, 2, 1, 1]
    with TFRecordWriter(f) as w:
        for k, y in enumerate(labels):
            w.write(serialize_example(ins if k == 5 else snp, (0,), img, y))
    cfg = AlleleFractionAugment(probability=1.0, alleles="snp")

    def epoch(e):
        xs, ys = [], []
        for x, y in example_dataset([f], batch_size=4, training=True, augment=cfg, epoch=e):
            xs += list(x.numpy().astype(np.uint8))
            ys += y.numpy().tolist()
        return xs, ys

    xs, ys = epoch(0)
    assert sorted(ys) == sorted(labels)
    n_alt = [int(read_rows(x)[1].sum()) for x in xs]
    # Het SNP images lost alt reads; hom-ref, hom-alt and the het insertion did not.
    assert sorted(n for n, y in zip(n_alt, ys, strict=True) if y != 1) == [15, 15]
    het = sorted(n for n, y in zip(n_alt, ys, strict=True) if y == 1)
    assert het[-1] == 15 and max(het[:3]) < 15
    again, _ = epoch(0)
    assert all(np.array_equal(a, b) for a, b in zip(xs, again, strict=True))


def test_bad_af_augment_is_a_config_error():
    from deepsci.apps.variants.train import TrainVariantsConfig
    from deepsci.core.errors import ConfigError

    with pytest.raises(ConfigError, match="af-augment"):
        TrainVariantsConfig(examples="x", af_augment=1.5).validate()
    with pytest.raises(ConfigError, match="af-augment-alleles"):
        TrainVariantsConfig(examples="x", af_augment_alleles="indels").validate()
    with pytest.raises(ConfigError, match="af-augment-min-vaf"):
        TrainVariantsConfig(examples="x", af_augment_min_vaf=0.5).validate()


def test_min_vaf_option_raises_the_floor_above_the_candidate_thresholds():
    from deepsci.apps.variants.train import TrainVariantsConfig, _augment_config

    low = _augment_config(TrainVariantsConfig(examples="x", af_augment=0.3,
                                              af_augment_min_vaf=0.0))
    assert (low.min_vaf, low.min_vaf_indels, low.min_count) == (0.12, 0.06, 2)
    # The default is recipe D's floor, 0.15, above both candidate thresholds.
    default = _augment_config(TrainVariantsConfig(examples="x"))
    assert (default.min_vaf, default.min_vaf_indels) == (0.15, 0.15)
    high = _augment_config(TrainVariantsConfig(examples="x", af_augment=0.3,
                                               af_augment_min_vaf=0.2))
    assert (high.min_vaf, high.min_vaf_indels, high.probability) == (0.2, 0.2, 0.3)
    # 30 other reads: a VAF of 0.2 needs 8 alt reads (7 / 37 < 0.2).
    img = _pileup([SUPPORTS] * 15 + [NOT_SUPPORTS] * 30)
    kept = {int(read_rows(drop_alt_reads(img, np.random.default_rng(s), min_vaf=0.2))[1].sum())
            for s in range(100)}
    assert min(kept) == 8
