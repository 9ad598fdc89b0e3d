"""Train an Inception ensemble that grades DR (5-class ICDR) and scores referable DR.

Stages of :func:`run_train`, each a plain function over :class:`RetinopathyConfig`:

1. read the labelled dataset (:mod:`.io`) and split it by patient;
2. preprocess every image once into an on-disk cache (:mod:`.preprocess`);
3. train ``ensemble`` Inception networks (core ``classifier``, heads ``grade``
   (5 logits), ``referable`` (1 logit) and ``dme`` (1 logit, when labels
   exist)) with the core training loop, each from a different seed;
4. choose the high-sensitivity and high-specificity operating points on the
   ensemble's validation predictions and store them with the models.

The model directory then holds ``member_<i>/model.keras`` (+ its
``model.card.json``), ``ensemble.json`` (members, operating points,
validation metrics), ``splits.csv`` and ``run.json``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deepsci.core.accelerator import AcceleratorConfig, setup
from deepsci.core.config import check_ranges, option
from deepsci.core.ensemble import member_seeds, write_ensemble
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import config_to_dict, read_json, write_text
from deepsci.core.runs import RunDir
from deepsci.core.training import TrainConfig

from .evaluate import bootstrap_auc, choose_operating_points
from .invalid import refuse_invalid, removed_on_error, skipped_list
from .io import DatasetSpec, patient_split, read_dataset, referable
from .model import (
    DME_HEADS,
    GRADES,
    VARIANTS,
    build_model,
    heads_for,
    model_card,
    recalibrate_batchnorm,
)
from .predict import load_members, predict_images
from .preprocess import (
    PreprocessConfig,
    preprocess_table,
)

BALANCE = ("weights", "sampling", "none")


def _train_defaults() -> TrainConfig:
    return TrainConfig(epochs=10, batch_size=16, lr_schedule="cosine",
                       monitor="val_referable_auc", mode="max", restore_best=False)


@dataclass
class RetinopathyConfig:
    """Everything a training run needs (recorded in ``run.json``).

    Attributes
    ----------
    out : Path
        Model directory; a rerun resumes unfinished members.
    data : DatasetSpec
    preprocess : PreprocessConfig
    train : TrainConfig
        Core loop settings; ``seed`` is the first ensemble member's seed.
        ``restore_best`` is off by default: the validation score during
        training uses lagging batch-norm statistics (see
        :func:`.model.recalibrate_batchnorm`), so the final weights of the
        cosine schedule, recalibrated, are kept.
    accel : AcceleratorConfig
        Where and in which precision to train (``--strategy``, ``--precision``, ``--xla``).
    variant : {"small", "v3"}
        Small Inception (CPU) or full Inception-v3.
    width : int
        Base filter count of the small Inception.
    ensemble : int
        Models trained with seeds ``train.seed + i``; predictions are averaged.
    balance : {"weights", "sampling", "none"}
        Inverse-frequency loss weights on the grade and referable heads, or
        class-balanced resampling of each epoch, or nothing.
    augment : bool
        Flips, rotation, brightness/contrast/hue jitter.
    val_frac, test_frac : float
        Patient-level split fractions; ``split_seed`` fixes the split.
    dme_head : str
        ``"auto"`` (when any DME label is known), ``"yes"`` or ``"no"``.
    cache_dir : Path or None
        Preprocessed-image cache (default ``<out>/cache``).
    target_sensitivity, target_specificity : float
        Operating-point targets on the validation set.
    workers : int
        Preprocessing threads.
    skip_invalid : bool
        Skip unreadable photographs (``skipped`` in ``splits.csv``, listed in
        ``run.json``) instead of stopping at the first one.
    """

    out: Path = field(metadata={"help": "Model directory (resumes if present)."})
    data: DatasetSpec = field(default_factory=DatasetSpec)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: TrainConfig = field(default_factory=_train_defaults)
    accel: AcceleratorConfig = field(default_factory=AcceleratorConfig)
    variant: str = option("small", "small (CPU) | v3 (full Inception-v3).", choices=VARIANTS)
    width: int = option(32, "Small Inception base width.", min=1)
    ensemble: int = option(1, "Models from seeds seed..seed+N-1.", min=1)
    balance: str = option("weights", "weights|sampling|none", choices=BALANCE)
    augment: bool = option(True, "Flips, rotation, colour jitter.")
    val_frac: float = option(0.15, "Fraction of patients for validation.", min=0,
                            min_exclusive=True, max=1)
    test_frac: float = option(0.15, "Fraction of patients held out for testing.", min=0,
                             max=1)
    split_seed: int = option(0, "Seed of the patient split.")
    dme_head: str = option("auto", "auto|yes|no", choices=DME_HEADS)
    cache_dir: Path | None = option(None, "Preprocessed-image cache folder.", cli="cache")
    target_sensitivity: float = option(0.975, "Sensitivity of the high-sensitivity point.",
                                      min=0, min_exclusive=True, max=1)
    target_specificity: float = option(0.98, "Specificity of the high-specificity point.",
                                      min=0, min_exclusive=True, max=1)
    workers: int = option(2, "Preprocessing threads.", min=1)
    skip_invalid: bool = option(False, "Skip unreadable training photographs (listed in "
                                       "splits.csv and run.json) instead of stopping.")

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.cache_dir = None if self.cache_dir is None else Path(self.cache_dir)

    def validate(self) -> RetinopathyConfig:
        """Raise :class:`ConfigError` for impossible values; return self."""
        if self.data.labels is None:
            raise ConfigError("expected --labels, found none")
        self.data.validate()
        self.preprocess.validate()
        self.train.validate()
        self.accel.validate()
        check_ranges(self)
        if self.val_frac + self.test_frac >= 1:
            raise ConfigError("expected --val-frac + --test-frac < 1, found "
                              f"{self.val_frac} + {self.test_frac}")
        if self.variant == "v3" and self.preprocess.size < 75:
            raise ConfigError(f"expected --size >= 75 for Inception-v3, found {self.preprocess.size}")
        return self


# ------------------------------------------------------------------ data


def prepare(config: RetinopathyConfig, out_dir: Path) -> pd.DataFrame:
    """Read, split by patient and preprocess (cached); write ``splits.csv``.

    Returns
    -------
    pandas.DataFrame
        The dataset table plus ``split``, ``referable`` and cache columns.
    """
    df = read_dataset(config.data)
    df["split"] = patient_split(df, val_frac=config.val_frac, test_frac=config.test_frac,
                                seed=config.split_seed)
    df["referable"] = referable(df["grade"].to_numpy(), df["dme"].to_numpy())
    cache = Path(config.cache_dir) if config.cache_dir else out_dir / "cache"
    df = preprocess_table(df, config.preprocess, cache, workers=config.workers,
                          owned=not config.cache_dir)
    df = refuse_invalid(df, skip_invalid=config.skip_invalid).drop(columns="error")
    write_text(out_dir / "splits.csv", df.to_csv(index=False))
    return df


def _usable(df: pd.DataFrame) -> pd.DataFrame:
    """Images that can be learnt from: graded, preprocessed and gradable."""
    return df[(df["grade"] >= 0) & (df["cache"] != "") & (df["gradable"] == 1)]


def decode(path, size: int):
    """Cached PNG -> float32 image in [-1, 1], shape (size, size, 3)."""
    import tensorflow as tf

    img = tf.io.decode_png(tf.io.read_file(path), channels=3)
    img = tf.ensure_shape(img, (size, size, 3))
    return tf.cast(img, tf.float32) / 127.5 - 1.0


def augment(img, seed):
    """Flips, arbitrary rotation, brightness/contrast/hue jitter (stateless, seeded).

    Parameters
    ----------
    img : tf.Tensor, shape (S, S, 3), float32 in [-1, 1]
    seed : tf.Tensor, shape (2,), int

    Returns
    -------
    tf.Tensor, shape (S, S, 3)
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 7)
    img = tf.image.stateless_random_flip_left_right(img, seeds[0])
    img = tf.image.stateless_random_flip_up_down(img, seeds[1])
    size = tf.cast(tf.shape(img)[0], tf.float32)
    ang = tf.random.stateless_uniform([], seeds[2], -np.pi, np.pi)
    c = (size - 1.0) / 2.0
    cos, sin = tf.cos(ang), tf.sin(ang)
    # Output->input projective transform: rotation about the image centre.
    transform = tf.stack([cos, -sin, c - c * cos + c * sin,
                          sin, cos, c - c * sin - c * cos, 0.0, 0.0])
    img = tf.raw_ops.ImageProjectiveTransformV3(
        images=img[None] + 1.0, transforms=transform[None],
        output_shape=tf.shape(img)[:2], fill_value=0.0, interpolation="BILINEAR",
        fill_mode="CONSTANT")[0] - 1.0
    img = (img + 1.0) / 2.0
    img = tf.image.stateless_random_brightness(img, 0.1, seeds[3])
    img = tf.image.stateless_random_contrast(img, 0.8, 1.2, seeds[4])
    img = tf.image.stateless_random_hue(img, 0.03, seeds[5])
    img = tf.image.stateless_random_saturation(img, 0.85, 1.15, seeds[6])
    return tf.clip_by_value(img, 0.0, 1.0) * 2.0 - 1.0


def _targets(df: pd.DataFrame) -> dict[str, np.ndarray]:
    return {"grade": df["grade"].to_numpy(np.int32),
            "referable": df["referable"].to_numpy(np.float32)[:, None],
            "dme": df["dme"].to_numpy(np.float32)[:, None]}


def make_source(df: pd.DataFrame, size: int, batch_size: int, *, training: bool, seed: int = 0,
                balance: str = "none", do_augment: bool = True,
                teacher: dict[str, np.ndarray] | None = None):
    """A core-loop data source ``fn(input_context, epoch) -> tf.data.Dataset``.

    Each epoch's order (and class-balanced resample) is drawn in NumPy from
    ``seed + epoch``, and augmentation seeds from (epoch, position), so a
    resumed run sees exactly the batches an uninterrupted one would.

    ``teacher`` (head -> array (len(df), ...), aligned with ``df``'s rows)
    makes the targets ``{"label": labels, "teacher": teacher}`` for distillation.
    """
    import tensorflow as tf

    paths = df["cache"].to_numpy(str)
    targets = _targets(df)
    grades = targets["grade"]
    if teacher is not None:
        targets = {"label": targets, "teacher": {k: np.asarray(v) for k, v in teacher.items()}}

    def source(ctx, epoch=0):
        n = len(paths)
        rng = np.random.default_rng([seed, epoch])
        if training and balance == "sampling":
            # Equal expected count per present grade, epoch length unchanged.
            present = np.unique(grades)
            w = np.zeros(n)
            for g in present:
                w[grades == g] = 1.0 / (grades == g).sum() / len(present)
            idx = rng.choice(n, size=n, replace=True, p=w / w.sum())
        elif training:
            idx = rng.permutation(n)
        else:
            idx = np.arange(n)
        if ctx.num_input_pipelines > 1:
            idx = idx[ctx.input_pipeline_id::ctx.num_input_pipelines]
        # Every step must give every replica a full batch (an empty per-replica
        # batch breaks batch norm), so pad to whole global batches: training
        # wraps around to the epoch's first examples, evaluation repeats them
        # with weight 0 so metrics and loss are unchanged.
        per = ctx.get_per_replica_batch_size(batch_size)
        unit = per * max(1, ctx.num_replicas_in_sync // ctx.num_input_pipelines)
        pad = (-len(idx)) % unit
        weight = np.ones(len(idx) + pad, np.float32)
        if pad:
            idx = np.concatenate([idx, np.resize(idx, pad)])
            if not training:
                weight[-pad:] = 0.0
        aug_seeds = np.stack([np.full(len(idx), epoch + 1), np.arange(len(idx))], 1) + seed * 7919
        ds = tf.data.Dataset.from_tensor_slices(
            (paths[idx], tf.nest.map_structure(lambda v: v[idx], targets),
             aug_seeds.astype(np.int64), weight))

        def load(p, y, s, w):
            img = decode(p, size)
            if training and do_augment:
                img = augment(img, s)
            return img, y, w

        return (ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(per).prefetch(2))

    return source


def class_weights(grades: np.ndarray, referable_labels: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-frequency weights, mean 1 over the training set.

    Returns
    -------
    grade_w : array of float, shape (5,)
    ref_w : array of float, shape (2,)
    """
    def inv(labels, k):
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / (counts > 0).sum(), 0.0)
        return w.astype(np.float32)

    return inv(grades.astype(np.int64), GRADES), inv(referable_labels.astype(np.int64), 2)


def make_loss(grade_w: np.ndarray, ref_w: np.ndarray, *, dme: bool):
    """Per-example loss: weighted grade CE + weighted referable BCE (+ DME BCE where known)."""
    import tensorflow as tf

    gw, rw = tf.constant(grade_w, tf.float32), tf.constant(ref_w, tf.float32)

    def loss_fn(y, y_pred):
        grade = tf.cast(y["grade"], tf.int32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(grade, y_pred["grade"])
        ref = tf.reshape(tf.cast(y["referable"], tf.float32), [-1])
        bce = tf.nn.sigmoid_cross_entropy_with_logits(ref, tf.reshape(y_pred["referable"], [-1]))
        total = ce * tf.gather(gw, grade) + bce * tf.gather(rw, tf.cast(ref, tf.int32))
        if dme:
            d = tf.reshape(tf.cast(y["dme"], tf.float32), [-1])
            known = tf.cast(d >= 0, tf.float32)
            total += known * tf.nn.sigmoid_cross_entropy_with_logits(
                tf.maximum(d, 0.0), tf.reshape(y_pred["dme"], [-1]))
        return total

    return loss_fn


def metric_factories() -> dict:
    """Referable AUC and grade accuracy over the dict outputs of the model.

    Against the hard labels, also when distillation adds teacher targets
    (``y_true = {"label": ..., "teacher": ...}``).
    """
    import keras

    def labels(y_true):
        return y_true["label"] if "label" in y_true else y_true

    class ReferableAUC(keras.metrics.AUC):
        def update_state(self, y_true, y_pred, sample_weight=None):
            super().update_state(labels(y_true)["referable"], y_pred["referable"],
                                 sample_weight=sample_weight)

    class GradeAccuracy(keras.metrics.SparseCategoricalAccuracy):
        def update_state(self, y_true, y_pred, sample_weight=None):
            super().update_state(labels(y_true)["grade"], y_pred["grade"],
                                 sample_weight=sample_weight)

    return {"referable_auc": lambda: ReferableAUC(from_logits=True, num_thresholds=400),
            "grade_acc": GradeAccuracy}


def _train_val(config: RetinopathyConfig, df: pd.DataFrame
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The usable training and validation images; InputError when either cannot serve."""
    tr, va = _usable(df[df["split"] == "train"]), _usable(df[df["split"] == "val"])
    if len(tr) == 0:
        raise InputError("expected gradable training images, found none after preprocessing",
                         config.data.labels)
    if len(va) == 0 or va["referable"].nunique() < 2:
        raise InputError("expected referable and non-referable images in the validation split "
                         f"(val_frac={config.val_frac}), found {len(va)} images", config.data.labels)
    return tr, va


def _provenance(config: RetinopathyConfig, seed: int) -> dict:
    """The card's data section: the label file, whether ``synth`` wrote it, the seeds."""
    labels = Path(config.data.labels)
    record = labels.parent / "run.json"
    synthetic = False
    if record.is_file():
        synthetic = read_json(record).get("command") == "retinopathy synth"
    return {"name": labels.parent.name, "files": [str(labels.absolute())],
            "synthetic": synthetic, "seeds": {"split": config.split_seed, "member": seed}}


def train_member(config: RetinopathyConfig, index: int, tr: pd.DataFrame, va: pd.DataFrame, *,
                 heads: dict[str, int], loss_fn, run: RunDir, strategy,
                 teacher: tuple[dict, dict] | None = None, card_training: dict | None = None) -> str:
    """Train ensemble member ``index`` (seed ``train.seed + index``) unless it is finished.

    ``teacher`` holds distillation targets aligned with ``tr`` and ``va``
    (:func:`make_source`); ``card_training`` entries are added to (and
    override) the card's ``training`` section.

    Returns
    -------
    str
        The member's model path relative to the model directory.
    """
    from deepsci.core.models.serialization import save_model
    from deepsci.core.training import train

    size = config.preprocess.size
    seed = member_seeds(config.train.seed, config.ensemble)[index]
    tcfg = dataclasses.replace(config.train, seed=seed)
    member = f"member_{index}/model.keras"
    model_path = run.file(member)
    if run.done(f"member_{index}") and model_path.is_file():
        return member
    result = train(
        lambda: build_model(size, heads, variant=config.variant, width=config.width),
        make_source(tr, size, tcfg.batch_size, training=True, seed=tcfg.seed,
                    balance=config.balance, do_augment=config.augment,
                    teacher=teacher[0] if teacher else None),
        loss_fn, tcfg, model_path.parent,
        val_data=make_source(va, size, tcfg.batch_size, training=False,
                             teacher=teacher[1] if teacher else None),
        metrics=metric_factories(), strategy=strategy)
    recalibrate_batchnorm(result.model, tr["cache"].tolist(), batch_size=tcfg.batch_size)
    last = result.history[-1] if result.history else {}
    validation = {"best_" + tcfg.monitor: result.best,
                  **{k: v for k, v in last.items() if k.startswith("val_")}}
    card = model_card(
        size=size, heads=heads, variant=config.variant, width=config.width,
        preprocessing=dataclasses.asdict(config.preprocess),
        training={"command": "retinopathy train", "config": config_to_dict(tcfg),
                  "balance": config.balance, "augment": config.augment, **(card_training or {})},
        data=_provenance(config, seed), metrics={"validation": validation},
        extra={"member": index, "train_images": len(tr), "val_images": len(va)})
    save_model(result.model, model_path, card=card)
    run.mark(f"member_{index}", {"seed": seed, **validation})
    return member


def run_train(config: RetinopathyConfig, *, overwrite: bool = False) -> dict:
    """Run the whole training stage and write the model directory ``config.out``.

    A rerun resumes: finished members are kept, an interrupted one resumes
    from its checkpoints.

    Returns
    -------
    dict
        The ``ensemble.json`` content (members, operating points, validation metrics).
    """
    config.validate()
    with removed_on_error(config.out, "retinopathy train"), RunDir(
            config.out, command="retinopathy train", config=config,
            inputs=[config.data.labels], overwrite=overwrite) as run:
        df = prepare(config, run.path)
        if skipped := skipped_list(df):
            run.record(skipped=skipped)
        strategy = setup(config.accel)
        tr, va = _train_val(config, df)
        heads = heads_for(config.dme_head, df["dme"].to_numpy())
        if config.balance == "weights":
            gw, rw = class_weights(tr["grade"].to_numpy(), tr["referable"].to_numpy())
        else:
            gw, rw = np.ones(GRADES, np.float32), np.ones(2, np.float32)
        loss_fn = make_loss(gw, rw, dme="dme" in heads)
        members = [train_member(config, i, tr, va, heads=heads, loss_fn=loss_fn, run=run,
                                strategy=strategy) for i in range(config.ensemble)]
        info = finish_ensemble(config, run, df, va, members, heads=heads)
    return {**info, "members": members}


def finish_ensemble(config: RetinopathyConfig, run: RunDir, df: pd.DataFrame, va: pd.DataFrame,
                    members: list[str], *, heads: dict[str, int]) -> dict:
    """Choose the operating points on ``va`` with the trained members; write ``ensemble.json``.

    Returns
    -------
    dict
        The ``ensemble.json`` content without its member list.
    """
    val_probs = predict_images(load_members([run.file(m) for m in members]), va["cache"].tolist())
    y_val = va["referable"].to_numpy()
    points = choose_operating_points(y_val, val_probs["referable"],
                                     target_sensitivity=config.target_sensitivity,
                                     target_specificity=config.target_specificity)
    auc, lo, hi = bootstrap_auc(y_val, val_probs["referable"], patients=va["patient"].to_numpy(),
                                n_boot=200)
    info = {
        "heads": heads, "variant": config.variant,
        "operating_points": {k: dataclasses.asdict(v) for k, v in points.items()},
        "validation": {"n": len(va), "auc": auc, "auc_ci_low": lo, "auc_ci_high": hi},
        "counts": {s: int((df["split"] == s).sum()) for s in ("train", "val", "test")},
        "ungradable_excluded": int(((df["gradable"] != 1) & (df["split"] != "test")).sum()),
    }
    write_ensemble(run.path, [run.file(m) for m in members], info=info)
    run.record(members=len(members), validation=info["validation"], counts=info["counts"])
    return info
