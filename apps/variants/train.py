"""``train``: fit the genotype classifier on labelled examples with the core training loop."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deepsci.core.accelerator import AcceleratorConfig
from deepsci.core.ensemble import member_seeds, write_ensemble
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import config_to_dict, read_json
from deepsci.core.runs import RunDir

from .augment import AlleleFractionAugment
from .candidates import CandidateConfig
from .make_examples import example_files
from .model import HEAD, build_model, example_dataset, genotype_card, load_genotype_model
from .recipe import RecipeConfig, TrainingExamples, make_training_examples

__all__ = ["TrainVariantsConfig", "train_variants", "genotype_loss", "class_counts",
           "class_weights", "loop_config", "GenotypeAccuracy", "check_training_examples"]


@dataclass
class TrainVariantsConfig:
    """Options of ``deepsci variants train``; the defaults are the benchmark's recipe D.

    Training data is either ``examples`` (labelled make-examples folders) or ``reads`` +
    ``ref`` + ``truth_vcf`` + ``confident_bed``, from which the recipe
    (:mod:`deepsci.apps.variants.recipe`) makes the examples under ``out_dir``.

    Attributes
    ----------
    reads : str or None
        Recipe: indexed BAM/CRAM of a sample with a truth set.
    ref : str or None
        Recipe: reference FASTA.
    truth_vcf : str or None
        Recipe: truth VCF of the reads.
    confident_bed : str or None
        Recipe: confident regions of the truth.
    regions : str or None
        Recipe: training regions (chr:start-end, comma list or BED); None: every contig.
    examples : str or None
        Instead of the recipe: labelled make-examples folder(s), comma-separated.
    val_examples : str or None
        With --examples: labelled validation examples; the best epoch is kept.
    out_dir : str
        Output folder: model.keras (or member_*/ and ensemble.json), checkpoints, examples.
    recipe : RecipeConfig
        How the recipe makes examples (read fractions, replicates, validation share).
    shards : int
        Recipe: make-examples shards per read set.
    scheduler : str or None
        Recipe: make-examples scheduler (local, inline or tcp://host:port).
    variant : str
        Network: small (trains on a CPU) or v3 (Inception-v3, DeepVariant's).
    width : int
        Filters per branch of the small Inception.
    init_model : str or None
        Start from this model.keras (warm start) instead of random weights.
    epochs : int
        Passes over the training examples.
    batch_size : int
        Global batch size.
    learning_rate : float
        Peak learning rate (cosine schedule).
    lr_schedule : str
        constant, cosine, exponential or step.
    warmup_steps : int
        Linear warm-up steps.
    seed : int
        Training seed (ensemble members: seed, seed+1, ...; replicates: seed+100+r).
    ensemble : int
        Train this many members on the same examples (member_*/, ensemble.json).
    class_weight : str
        Loss weight per genotype class: none, balanced (inverse class frequency) or
        'w_homref,w_het,w_homalt'.
    af_augment : float
        Chance per het example and epoch that a random share of its alt reads is dropped
        (never below 2 alt reads and the candidate VAF), so low-VAF hets are seen; 0 off.
    af_augment_alleles : str
        Which het examples --af-augment may thin: snp or all.
    af_augment_min_vaf : float
        Lowest allele fraction --af-augment thins a het to.
    accel : AcceleratorConfig
        Where and how to train (--strategy, --precision, --xla).
    """

    reads: str | None = None
    ref: str | None = None
    truth_vcf: str | None = None
    confident_bed: str | None = None
    regions: str | None = None
    examples: str | None = None
    val_examples: str | None = None
    out_dir: str = field(default="model", metadata={"cli": "out"})
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    shards: int = 1
    scheduler: str | None = None
    variant: str = field(default="small", metadata={"cli": "model-variant"})
    width: int = 16
    init_model: str | None = None
    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = field(default=1e-3, metadata={"cli": "lr"})
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    seed: int = 0
    ensemble: int = 1
    # Candidates that are really hom-ref are a small minority of the examples (~7 % on the
    # bench), yet they are where a caller's false positives come from.
    class_weight: str = "none"
    af_augment: float = 0.25
    af_augment_alleles: str = "snp"
    # True hets at 30x fall below VAF 0.2 less than 0.1 % of the time, while hom-ref
    # candidates (errors) sit mostly below it; 0.15 kept the low-VAF het SNPs of the
    # benchmark without adding indel false positives (recipe D).
    af_augment_min_vaf: float = 0.15
    accel: AcceleratorConfig = field(default_factory=AcceleratorConfig)

    def validate(self) -> TrainVariantsConfig:
        self._validate_inputs()
        self.recipe.validate()
        self.accel.validate()
        if self.variant not in ("small", "v3"):
            raise ConfigError(f"expected --model-variant small or v3, found {self.variant!r}")
        for name, low in (("shards", 1), ("epochs", 1), ("batch_size", 1), ("width", 1),
                          ("ensemble", 1), ("warmup_steps", 0), ("seed", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"expected --{name.replace('_', '-')} >= {low}, found "
                                  f"{getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ConfigError(f"expected --lr > 0, found {self.learning_rate}")
        if self.lr_schedule not in ("constant", "cosine", "exponential", "step"):
            raise ConfigError(f"expected --lr-schedule constant, cosine, exponential or step, "
                              f"found {self.lr_schedule!r}")
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

    def _validate_inputs(self) -> None:
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


class GenotypeAccuracy:
    """Genotype accuracy over dict outputs (the loop passes the whole y_pred)."""

    def __init__(self):
        import keras
        self.m = keras.metrics.SparseCategoricalAccuracy()

    def update_state(self, y_true, y_pred, sample_weight=None):
        if isinstance(y_true, dict):        # a distilled student's {"label", "teacher"}
            y_true = y_true["label"]
            y_true = y_true[HEAD] if isinstance(y_true, dict) else y_true
        self.m.update_state(y_true, y_pred[HEAD] if isinstance(y_pred, dict) else y_pred,
                            sample_weight=sample_weight)

    def result(self):
        return self.m.result()

    def reset_state(self):
        self.m.reset_state()


def check_training_examples(paths: str) -> list[Path]:
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


def loop_config(config, seed: int, *, validated: bool):
    """The core loop's :class:`~deepsci.core.training.TrainConfig` of a genotype model.

    ``config`` has ``epochs``, ``batch_size``, ``learning_rate``, ``lr_schedule`` and
    ``warmup_steps`` (a :class:`TrainVariantsConfig` or the ``distill`` config), so a
    distilled student trains under the same schedule, clipping and checkpoints.
    """
    from deepsci.core.training import TrainConfig

    return TrainConfig(epochs=config.epochs, batch_size=config.batch_size,
                       learning_rate=config.learning_rate, lr_schedule=config.lr_schedule,
                       warmup_steps=config.warmup_steps, seed=seed,
                       monitor="val_loss" if validated else "loss", clip_norm=5.0,
                       checkpoint_every=200)


def _fit(config: TrainVariantsConfig, examples: str, val_examples: str | None, out: Path,
         seed: int):
    """The core training loop over the examples; returns its result and the class counts."""
    from deepsci.core.accelerator import setup
    from deepsci.core.training import train

    files = check_training_examples(examples)
    val_files = check_training_examples(val_examples) if val_examples else None
    strategy = setup(config.accel)
    counts = _label_counts(examples)
    weights = class_weights(config.class_weight, counts)

    def builder():
        if config.init_model:
            model, _ = load_genotype_model(config.init_model)
            return model
        return build_model(config.variant, width=config.width) if config.variant == "small" \
            else build_model(config.variant)

    tcfg = loop_config(config, seed, validated=bool(val_files))
    augment = _augment_config(config)

    def train_ds(ctx):
        # Per-replica batches: an uneven split of a ragged *global* batch across replicas
        # fails in BatchNormalization under MirroredStrategy; whole per-replica batches
        # (the last one padded by the core loop) do not.
        return example_dataset(files, batch_size=ctx.get_per_replica_batch_size(
            config.batch_size), training=True, seed=seed, class_weights=weights)

    def train_ds_augmented(ctx, epoch):
        # Built per epoch (the core loop passes it), so the random thinning differs between
        # epochs yet is the same on resume.
        return example_dataset(files, batch_size=ctx.get_per_replica_batch_size(
            config.batch_size), training=True, seed=seed, class_weights=weights,
            augment=augment, epoch=epoch)

    def val_ds(ctx):
        # Per-replica batches too: a short global last batch split across replicas can
        # leave one of them with no example, which BatchNormalization cannot take.
        return example_dataset(val_files, batch_size=ctx.get_per_replica_batch_size(
            config.batch_size), training=False, labelled_only=True)

    res = train(builder, train_ds_augmented if config.af_augment > 0 else train_ds,
                genotype_loss, tcfg, out / "train",
                val_data=val_ds if val_files else None,
                metrics={"accuracy": GenotypeAccuracy}, strategy=strategy)
    return res, counts, weights


def _card(config: TrainVariantsConfig, res, counts, weights, made: TrainingExamples | None,
          examples: str, member: int, seed: int):
    """The model card of one trained member: recipe, data provenance, held-out metrics."""
    hist = res.history or [{}]
    best = min(hist, key=lambda h: h.get("val_loss", float("inf"))) if "val_loss" in hist[-1] \
        else hist[-1]
    data = {"name": config.reads or examples, "files": examples.split(","),
            "synthetic": bool(made and made.replicates), "seeds": [seed]}
    if made is not None:
        data.update(reads=config.reads, truth_vcf=config.truth_vcf,
                    confident_bed=config.confident_bed, fit_regions=made.fit_regions,
                    val_regions=made.val_regions, val_class_counts=made.val_labels,
                    replicate_seeds=[r["seed"] for r in made.replicates])
    metrics = ({"validation": {k[4:]: v for k, v in best.items() if k.startswith("val_")},
                "epoch": best.get("epoch")} if "val_loss" in best else
               {"training": {k: best[k] for k in ("loss", "accuracy") if k in best}})
    training = {"command": "variants train", "config": config_to_dict(config), "seed": seed,
                "class_counts": counts, "class_weights": weights, "steps": res.steps}
    return genotype_card(training=training, data=data, metrics=metrics,
                         extra={"variant": config.variant, "width": config.width,
                                "member": member, "ensemble": config.ensemble})


def _member(config: TrainVariantsConfig, run: RunDir, examples: str, val_examples: str | None,
            made: TrainingExamples | None, k: int, seed: int) -> dict:
    """Train (or reuse, when an earlier attempt finished it) ensemble member ``k``."""
    from deepsci.core.models.serialization import save_model

    key = f"member-{k}"
    if run.done(key):
        return run.marker(key)
    out = run.path / f"member_{k}" if config.ensemble > 1 else run.path
    t0 = time.time()
    res, counts, weights = _fit(config, examples, val_examples, out, seed)
    card = _card(config, res, counts, weights, made, examples, k, seed)
    model_path = save_model(res.model, out / "model.keras", card=card)
    result = {"model": str(model_path), "seed": seed, "history": res.history,
              "best": res.best, "steps": res.steps, "seconds": time.time() - t0,
              "class_counts": counts, "class_weights": weights, "metrics": card.metrics}
    run.mark(key, result)
    return result


def train_variants(config: TrainVariantsConfig, *, progress: bool = True,
                   overwrite: bool = False) -> dict:
    """Train (or warm-start) a genotype model or an ensemble; records ``out_dir/run.json``.

    With ``config.examples`` it trains on those; otherwise it first makes the recipe's
    examples from ``config.reads`` (:func:`~deepsci.apps.variants.recipe.make_training_examples`).
    A re-run of an interrupted run resumes: finished example sets and members are reused
    and training continues from its last checkpoint.

    Returns
    -------
    dict
        ``model`` (``model.keras``, or the folder of an ensemble), ``members``, the first
        member's ``history``, ``best`` and ``steps``, ``class_counts``, ``class_weights``,
        the ``examples`` and ``val_examples`` folders and, in recipe mode, ``recipe``
        (a :class:`~deepsci.apps.variants.recipe.TrainingExamples`).
    """
    config.validate()
    inputs = [config.reads, config.ref, config.truth_vcf, config.confident_bed,
              *(config.examples or "").split(","), *(config.val_examples or "").split(","),
              config.init_model]
    with RunDir(config.out_dir, command="variants train", config=config, overwrite=overwrite,
                inputs=[p for p in inputs if p]) as run:
        made = None
        examples, val_examples = config.examples, config.val_examples
        if not examples:
            with run.stage("make_examples", config.recipe) as st:
                made = make_training_examples(
                    config.recipe, run=run, reads=config.reads, ref=config.ref,
                    truth_vcf=config.truth_vcf, confident_bed=config.confident_bed,
                    regions=config.regions, seed=config.seed, shards=config.shards,
                    scheduler=config.scheduler, progress=progress)
                st.record(**asdict(made))
            examples, val_examples = ",".join(made.examples), ",".join(made.val_examples) or None
        members = []
        with run.stage("train") as st:
            for k, seed in enumerate(member_seeds(config.seed, config.ensemble)):
                members.append(_member(config, run, examples, val_examples, made, k, seed))
            st.record(members=[{m: r[m] for m in ("model", "seed", "best", "steps", "metrics")}
                               for r in members])
        model = members[0]["model"]
        if config.ensemble > 1:
            write_ensemble(run.path, [m["model"] for m in members],
                           info={"seeds": [m["seed"] for m in members]})
            model = str(run.path)
        first = members[0]
        res = {"model": model, "members": [m["model"] for m in members],
               "history": first["history"], "best": first["best"], "steps": first["steps"],
               "class_counts": first["class_counts"], "class_weights": first["class_weights"],
               "examples": examples.split(","),
               "val_examples": val_examples.split(",") if val_examples else []}
        run.record(**{k: v for k, v in res.items() if k != "history"})
    return {**res, "recipe": made}
