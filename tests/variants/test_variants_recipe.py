"""The training recipe of ``deepsci variants train --reads ...``: validation split, simulated
replicates of the training regions, down-sampled example sets, resume."""
from __future__ import annotations

import json

import pysam
import pytest

from deepsci.apps.variants import io as vio
from deepsci.apps.variants.recipe import (
    RecipeConfig,
    make_training_examples,
    measure_reads,
    replicate_genome,
    split_validation,
)
from deepsci.apps.variants.train import TrainVariantsConfig
from deepsci.core.errors import ConfigError
from deepsci.core.runs import RunDir

R = vio.Region


def test_split_validation_holds_out_the_last_share():
    assert split_validation([R("c", 0, 1000)], 0.2) == ([R("c", 0, 800)], [R("c", 800, 1000)])
    # Over several regions the cut falls inside the one that crosses it.
    fit, val = split_validation([R("a", 0, 600), R("b", 100, 500)], 0.5)
    assert fit == [R("a", 0, 500)] and val == [R("a", 500, 600), R("b", 100, 500)]
    fit, val = split_validation([R("a", 0, 600), R("b", 100, 500)], 0.3)
    assert fit == [R("a", 0, 600), R("b", 100, 200)] and val == [R("b", 200, 500)]
    assert split_validation([R("a", 0, 600)], 0.0) == ([R("a", 0, 600)], [])


def test_replicate_genome_spans_the_regions(tmp_path, rng):
    seqs = {"c1": "".join(rng.choice(list("ACGT"), 900)), "c2": "".join(rng.choice(list("ACGT"), 300))}
    ref = vio.write_fasta(seqs, tmp_path / "ref.fa")
    genome, offsets = replicate_genome(str(ref), [R("c1", 100, 300), R("c1", 500, 700),
                                                  R("c2", 0, 250)])
    assert genome == {"c1": seqs["c1"][100:700], "c2": seqs["c2"][:250]}
    assert offsets == {"c1": 100, "c2": 0}


def test_measure_reads_matches_the_simulated_depth(tiny_sim):
    depth, length = measure_reads(tiny_sim["bam"], tiny_sim["ref"], [R("chr1", 1000, 11000)])
    # simulate() samples 20x of 2x150 bp pairs; BWA-MEM soft-clips a few bases.
    assert length == 150
    assert 18.0 < depth < 21.0


@pytest.mark.parametrize("field, value, option", [
    ("downsample", (1.0, 0.0), "--downsample"), ("replicate_downsample", (1.5,),
                                                  "--replicate-downsample"),
    ("replicates", -1, "--replicates"), ("val_fraction", 1.0, "--val-fraction"),
    ("coverage", 0.0, "--coverage"), ("read_length", 10, "--read-length"),
    ("snp_rate", 2.0, "--snp-rate")])
def test_recipe_ranges_are_checked(field, value, option):
    with pytest.raises(ConfigError, match=option):
        RecipeConfig(**{field: value}).validate()


def test_train_needs_examples_or_the_recipe_inputs():
    with pytest.raises(ConfigError, match="2 of those four"):
        TrainVariantsConfig(reads="r.bam", ref="ref.fa").validate()
    with pytest.raises(ConfigError, match="found both"):
        TrainVariantsConfig(examples="ex", reads="r.bam").validate()
    with pytest.raises(ConfigError, match="--val-examples only with --examples"):
        TrainVariantsConfig(reads="r", ref="f", truth_vcf="t", confident_bed="b",
                            val_examples="v").validate()
    # The recipe's defaults are the benchmark's recipe D.
    cfg = TrainVariantsConfig(examples="ex").validate()
    assert (cfg.recipe.replicates, cfg.recipe.downsample, cfg.recipe.replicate_downsample,
            cfg.recipe.val_fraction) == (7, (1.0, 0.7, 0.5), (1.0, 0.6), 0.2)
    assert (cfg.epochs, cfg.af_augment, cfg.af_augment_min_vaf) == (8, 0.25, 0.15)


def _positions(folder):
    import tensorflow as tf

    from deepsci.apps.variants.make_examples import example_files, parse_example
    return [parse_example(r.numpy())["pos"] for r in tf.data.TFRecordDataset(
        [str(f) for f in example_files(folder)], compression_type="GZIP")]


def test_recipe_makes_every_read_set_and_resumes(tiny_sim, tmp_path):
    sim = tiny_sim
    recipe = RecipeConfig(downsample=(1.0, 0.5), replicates=1, replicate_downsample=(1.0,),
                          val_fraction=0.25, snp_rate=3e-3, indel_rate=5e-4)
    kw = dict(reads=sim["bam"], ref=sim["ref"], truth_vcf=sim["truth"],
              confident_bed=sim["bed"], regions="chr1:1-6000", seed=5, scheduler="inline",
              progress=False)
    with RunDir(tmp_path / "model", command="variants train") as run:
        made = make_training_examples(recipe, run=run, **kw)
    ex = tmp_path / "model" / "examples"
    assert made.examples == [str(ex / "reads_1"), str(ex / "reads_0.5"), str(ex / "rep_105_1")]
    assert made.val_examples == [str(ex / "val_reads"), str(ex / "val_rep_105")]
    assert (made.fit_regions, made.val_regions) == ("chr1:1-4500", "chr1:4501-6000")
    infos = [json.loads((ex / d / "examples_info.json").read_text())
             for d in ("reads_1", "reads_0.5", "rep_105_1")]
    assert made.labels == [sum(i["labels"][k] for i in infos) for k in range(3)]
    # Half of the read pairs: fewer reads, so never more examples than the full set.
    assert 0 < infos[1]["examples"] <= infos[0]["examples"]
    assert all(p < 4500 for d in made.examples for p in _positions(d))
    assert all(4500 <= p < 6000 for d in made.val_examples for p in _positions(d))
    # The replicate: the reference's first 6 kb with its own variants at the measured depth.
    rep = made.replicates[0]
    assert vio.read_fasta(rep["ref"]) == {"chr1": vio.read_fasta(sim["ref"])["chr1"][:6000]}
    assert rep["seed"] == 105 and rep["read_length"] == 150 and 18 < rep["coverage"] < 21
    own = {(r.start, r.alts) for r in pysam.VariantFile(rep["truth"])}
    main = {(r.start, r.alts) for r in pysam.VariantFile(sim["truth"]) if r.start < 6000}
    assert own and own != main
    # A re-run reuses every finished part: same counts, shard files untouched.
    shards = sorted(ex.glob("*/examples-*.tfrecord.gz"))
    mtimes = [f.stat().st_mtime_ns for f in shards]
    with RunDir(tmp_path / "model", command="variants train") as run:
        again = make_training_examples(recipe, run=run, **kw)
    assert (again.labels, again.val_labels) == (made.labels, made.val_labels)
    assert [f.stat().st_mtime_ns for f in shards] == mtimes
