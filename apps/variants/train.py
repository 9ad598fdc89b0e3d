"""``train``: fit the genotype classifier on labelled examples with the core training loop."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import read_json, save_config, write_run_info

from .augment import AlleleFractionAugment
from .candidates import CandidateConfig
from .make_examples import example_files
from .model import HEAD, INPUT_SHAPE, build_model, example_dataset, load_genotype_model
from .recipe import RecipeConfig, TrainingExamples, make_training_examples

__all__ = ["TrainVariantsConfig", "train_variants", "genotype_loss", "class_counts",
           "class_weights"]


@dataclass
class TrainVariantsConfig:
    """Options of ``deepsci variants train``; the defaults are the benchmark's recipe D.

    Training data is either ``examples`` (labelled make-examples folders, comma-separated)
    or ``reads`` + ``ref`` + ``truth_vcf`` + ``confident_bed``, from which the recipe
    (:mod:`deepsci.apps.variants.recipe`) makes the examples under ``out_dir``:
    down-sampled copies of the reads, simulated replicates and a held-out validation part.
    """

    examples: str | None = None           # make-examples folder(s), comma-separated
    val_examples: str | None = None
    reads: str | None = None              # recipe mode: reads, reference and truth
    ref: str | None = None
    truth_vcf: str | None = None
    confident_bed: str | None = None
    regions: str | None = None            # training regions of the recipe (default: all)
    out_dir: str = "model"
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    shards: int = 1                       # make-examples shards of the recipe
    scheduler: str | None = None          # make-examples scheduler of the recipe
    variant: str = "small"                # small | v3
    width: int = 16
    warm_start: str | None = None         # an earlier model.keras (or its folder)
    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    seed: int = 0
    strategy: str = "auto"
    # Per-class loss weights: "none", "balanced" (inverse class frequency, normalised to a
    # mean weight of 1 per example) or three comma-separated numbers (hom-ref,het,hom-alt).
    # Candidates that are really hom-ref are a small minority of the examples (~7 % on the
    # bench), yet they are where a caller's false positives come from.
    class_weight: str = "none"
    # Allele-fraction augmentation: the chance, per het example and epoch, that a random
    # share of its alt-supporting reads is dropped (down to the candidate thresholds), so the
    # model sees the low-VAF binomial tail of true hets (see augment.py). 0 turns it off.
    af_augment: float = 0.25
    af_augment_alleles: str = "snp"       # snp | all: which het images may be thinned
    # Lowest VAF a thinned het may reach; the candidate thresholds (0.12 SNPs, 0.06 indels)
    # apply when this is lower. True hets at 30x fall below VAF 0.2 less than 0.1 % of the
    # time, while hom-ref candidates (errors) sit mostly below it; 0.15 kept the low-VAF
    # het SNPs of the benchmark without adding indel false positives (recipe D).
    af_augment_min_vaf: float = 0.15
    extra: dict = field(default_factory=dict)

    def validate(self) -> TrainVariantsConfig:
        recipe_inputs = (self.reads, self.ref, self.truth_vcf, self.confident_bed)
        if self.examples and any(recipe_inputs):
            raise ConfigError("expected --examples or --reads/--ref/--truth-vcf/"
                              "--confident-bed, found both")
        if not self.examples and not all(recipe_inputs):
            raise ConfigError("expected --examples, or --reads, --ref, --truth-vcf and "
                              "--confident-bed together, found "
                              f"{sum(x is not None for x in recipe_inputs)} of those four")
        if self.val_examples and not self.examples:
            raise ConfigError("expected --val-examples only with --examples (the recipe holds "
                              "out --val-fraction itself), found it alone")
        self.recipe.validate()
        if self.shards < 1:
            raise ConfigError(f"expected --shards >= 1, found {self.shards}")
        if self.variant not in ("small", "v3"):
            raise ConfigError(f"expected --model-variant small or v3, found {self.variant!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"expected epochs and batch size >= 1, found {self.epochs} and "
                              f"{self.batch_size}")
        if self.width < 1 or not self.learning_rate > 0 or self.warmup_steps < 0:
            raise ConfigError(f"expected --width >= 1, --lr > 0 and --warmup-steps >= 0, "
                              f"found {self.width}, {self.learning_rate}, {self.warmup_steps}")
        _parse_class_weight(self.class_weight)
        if not 0.0 <= self.af_augment <= 1.0:
            raise ConfigError(f"expected --af-augment in [0, 1], found {self.af_augment}")
        if not 0.0 <= self.af_augment_min_vaf < 0.5:
            raise ConfigError(f"expected --af-augment-min-vaf in [0, 0.5), found "
                              f"{self.af_augment_min_vaf}")
        if self.af_augment_alleles not in ("snp", "all"):
            raise ConfigError(f"expected --af-augment-alleles snp or all, found "
                              f"{self.af_augment_alleles!r}")
        return self


def _parse_class_weight(spec: str) -> tuple[float, float, float] | str | None:
    """``None`` for "none", "balanced" as is, else three non-negative floats."""
    if spec in ("none", "", None):
        return None
    if spec == "balanced":
        return spec
    try:
        w = tuple(float(x) for x in str(spec).split(","))
    except ValueError:
        w = ()
    if len(w) != 3 or min(w) < 0 or max(w) <= 0:
        raise ConfigError(f"expected --class-weight none, balanced or three weights "
                          f"'w_homref,w_het,w_homalt', found {spec!r}")
    return w


def class_counts(files: list[Path]) -> list[int]:
    """Labelled examples per class (hom-ref, het, hom-alt) in example shards.

    Only the label feature is parsed, so this is a quick pass even over many images.
    """
    import numpy as np
    import tensorflow as tf

    ds = tf.data.TFRecordDataset([str(f) for f in files], compression_type="GZIP")
    ds = ds.map(lambda s: tf.io.parse_single_example(
        s, {"label": tf.io.FixedLenFeature([], tf.int64)})["label"]).batch(4096)
    counts = np.zeros(3, np.int64)
    for y in ds:
        y = y.numpy()
        counts += np.bincount(y[y >= 0], minlength=3)[:3]
    return counts.tolist()


def class_weights(spec: str, counts: list[int]) -> tuple[float, float, float] | None:
    """Loss weight per class from ``--class-weight`` and the class counts.

    "balanced" gives ``w_c = N / (K n_c)`` over the K classes present, so every present
    class carries the same total weight and the mean weight per example is 1.
    """
    w = _parse_class_weight(spec)
    if w != "balanced":
        return w
    total, present = sum(counts), [c for c in counts if c > 0]
    if not present:
        raise InputError("expected labelled examples, found none")
    return tuple(total / (len(present) * c) if c > 0 else 0.0 for c in counts)


def genotype_loss(y_true, y_pred):
    """Per-example softmax cross-entropy of the genotype head, shape (B,)."""
    import keras

    logits = y_pred[HEAD] if isinstance(y_pred, dict) else y_pred
    return keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)


class _Accuracy:
    """Genotype accuracy over dict outputs (the loop passes the whole y_pred)."""

    def __init__(self):
        import keras
        self.m = keras.metrics.SparseCategoricalAccuracy()

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.m.update_state(y_true, y_pred[HEAD] if isinstance(y_pred, dict) else y_pred,
                            sample_weight=sample_weight)

    def result(self):
        return self.m.result()

    def reset_state(self):
        self.m.reset_state()


def _check_training_examples(paths: str) -> list[Path]:
    """Example shards of one or more (comma-separated) labelled make-examples outputs."""
    files = []
    for path in [p for p in str(paths).split(",") if p]:
        files += example_files(path)
        info = Path(path) / "examples_info.json" if Path(path).is_dir() else None
        if info is not None and info.exists() and not read_json(info).get("training", True):
            raise InputError("expected examples made with --truth-vcf (labelled), found "
                             "calling-mode examples", path)
    return files


def _label_counts(paths: str) -> list[int]:
    """Labelled examples per class over one or more (comma-separated) make-examples outputs.

    make-examples counted them as it wrote the shards (``examples_info.json``); only
    shards given as loose files are read again (:func:`class_counts`).
    """
    counts = [0, 0, 0]
    for path in [p for p in str(paths).split(",") if p]:
        info = Path(path) / "examples_info.json"
        labels = read_json(info).get("labels") if info.exists() else None
        labels = labels or class_counts(example_files(path))
        counts = [a + b for a, b in zip(counts, labels, strict=True)]
    return counts


def _augment_config(config: TrainVariantsConfig):
    """The allele-fraction augmentation, floors from make-examples' candidate defaults."""
    c = CandidateConfig()
    return AlleleFractionAugment(probability=config.af_augment,
                                 alleles=config.af_augment_alleles,
                                 min_count=min(c.min_count_snps, c.min_count_indels),
                                 min_vaf=max(c.min_fraction_snps, config.af_augment_min_vaf),
                                 min_vaf_indels=max(c.min_fraction_indels,
                                                    config.af_augment_min_vaf))


def _fit(config: TrainVariantsConfig, examples: str, val_examples: str | None, out: Path):
    """The core training loop over the examples; returns its result and the class counts."""
    from deepsci.core.accelerator import resolve_strategy
    from deepsci.core.training import TrainConfig, train

    files = _check_training_examples(examples)
    val_files = _check_training_examples(val_examples) if val_examples else None
    strategy = resolve_strategy(config.strategy)
    counts = _label_counts(examples)
    weights = class_weights(config.class_weight, counts)

    def builder():
        if config.warm_start:
            model, _ = load_genotype_model(config.warm_start)
            return model
        return build_model(config.variant, width=config.width) if config.variant == "small" \
            else build_model(config.variant)

    tcfg = TrainConfig(epochs=config.epochs, batch_size=config.batch_size,
                       learning_rate=config.learning_rate, lr_schedule=config.lr_schedule,
                       warmup_steps=config.warmup_steps, seed=config.seed,
                       monitor="val_loss" if val_files else "loss", clip_norm=5.0,
                       checkpoint_every=200)
    augment = _augment_config(config)

    def train_ds(ctx):
        # Per-replica batches: an uneven split of a ragged *global* batch across replicas
        # fails in BatchNormalization under MirroredStrategy; whole per-replica batches
        # (the last one padded by the core loop) do not.
        return example_dataset(files, batch_size=ctx.get_per_replica_batch_size(
            config.batch_size), training=True, seed=config.seed, class_weights=weights)

    def train_ds_augmented(ctx, epoch):
        # Built per epoch (the core loop passes it), so the random thinning differs between
        # epochs yet is the same on resume.
        return example_dataset(files, batch_size=ctx.get_per_replica_batch_size(
            config.batch_size), training=True, seed=config.seed, class_weights=weights,
            augment=augment, epoch=epoch)

    def val_ds(ctx):
        # Per-replica batches too: a short global last batch split across replicas can
        # leave one of them with no example, which BatchNormalization cannot take.
        return example_dataset(val_files, batch_size=ctx.get_per_replica_batch_size(
            config.batch_size), training=False, labelled_only=True)

    res = train(builder, train_ds_augmented if config.af_augment > 0 else train_ds,
                genotype_loss, tcfg, out / "train",
                val_data=val_ds if val_files else None,
                metrics={"accuracy": _Accuracy}, strategy=strategy)
    return res, counts, weights


def _sidecar(config: TrainVariantsConfig, res, counts, weights,
             made: TrainingExamples | None) -> dict:
    train_config = {"epochs": config.epochs, "batch_size": config.batch_size,
                    "learning_rate": config.learning_rate, "warm_start": config.warm_start,
                    "seed": config.seed, "class_counts": counts, "class_weights": weights,
                    "af_augment": config.af_augment,
                    "af_augment_alleles": config.af_augment_alleles,
                    "af_augment_min_vaf": config.af_augment_min_vaf}
    if made is not None:
        train_config["recipe"] = {**asdict(config.recipe), "fit_regions": made.fit_regions,
                                  "val_regions": made.val_regions,
                                  "val_class_counts": made.val_labels}
    return {
        "app": "variants",
        "input_spec": {"shape": list(INPUT_SHAPE), "dtype": "uint8",
                       "channels": "read_base,base_quality,mapping_quality,strand,"
                                   "read_supports_variant,base_differs_from_ref,insert_size"},
        "preprocessing": "x / 127 - 1 inside the model",
        "classes": ["hom_ref", "het", "hom_alt"],
        "variant": config.variant,
        "train_config": train_config,
        "metrics": res.history[-1] if res.history else {},
    }


def train_variants(config: TrainVariantsConfig, *, progress: bool = True) -> dict:
    """Train (or warm-start and continue training) a genotype model; saves ``model.keras``.

    With ``config.examples`` it trains on those; otherwise it first makes the recipe's
    examples from ``config.reads`` (:func:`~deepsci.apps.variants.recipe.make_training_examples`).
    Returns the history, the best monitored value, the saved model path, the example
    folders trained and validated on, and (recipe mode) what the recipe made.
    """
    from deepsci.core.models.serialization import save_model

    config.validate()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made = None
    examples, val_examples = config.examples, config.val_examples
    if not examples:
        made = make_training_examples(
            config.recipe, reads=config.reads, ref=config.ref, truth_vcf=config.truth_vcf,
            confident_bed=config.confident_bed, regions=config.regions, out_dir=out,
            seed=config.seed, shards=config.shards, scheduler=config.scheduler,
            progress=progress)
        examples, val_examples = ",".join(made.examples), ",".join(made.val_examples) or None
    t0 = time.time()
    res, counts, weights = _fit(config, examples, val_examples, out)
    model_path = out / "model.keras"
    save_model(res.model, model_path, sidecar=_sidecar(config, res, counts, weights, made))
    save_config(config, out / "config.json")
    write_run_info(out, command="variants train", config=config)
    return {"model": str(model_path), "history": res.history, "best": res.best,
            "steps": res.steps, "seconds": time.time() - t0, "class_counts": counts,
            "class_weights": weights, "examples": examples.split(","),
            "val_examples": val_examples.split(",") if val_examples else [],
            "recipe": made}
