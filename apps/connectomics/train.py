"""FFN training: partitions, balanced coordinates, in-graph FOV movement.

Following Januszewski et al. (2018):

1. **Partitions.** Every labelled voxel gets the fraction of its surrounding
   box (``lom_radius``) that belongs to its own object; the fractions are
   binned by ``thresholds``. Thin processes and object interiors thus land in
   different partitions. The fraction is evaluated only on a strided grid
   (``stride``), so the coordinate lists never hold every voxel.
2. **Balanced sampling.** The same number of coordinates is drawn from every
   partition, so rare geometry (thin necks, boundaries) is seen as often as
   the bulk of large objects.
3. **Examples.** A region of ``fov + 2 (moves - 1) delta`` voxels is cut around each
   coordinate with the soft object mask of the central object (0.05 / 0.95)
   as target; the seed is logit(0.95) at the centre and logit(0.05)
   elsewhere; reflections and axis permutations augment it.
4. **FOV movement.** Inside the training step the FFN runs ``moves`` times per
   example: after the first step at the centre the FOV moves, either by fixed
   face shifts or by the inference face-max policy, and the canvas it reads
   holds its *own earlier predictions* (without gradient), exactly the
   situation it meets during inference. The loss is the voxel-wise sigmoid
   cross-entropy of every step.

All optimisation goes through :func:`deepsci.core.training.train`.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from deepsci.core.accelerator import AcceleratorConfig
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import config_to_dict
from deepsci.core.models.card import ModelCard
from deepsci.core.models.ffn import PRESETS, FFNConfig
from deepsci.core.runs import RunDir
from deepsci.core.training import TrainConfig

from .config import check_voxel_size
from .io import check_same_shape, open_volume
from .model import build_model, check_init_model
from .policy import SEED_IN, SEED_OUT, logit
from .predict import APP, TASK

__all__ = [
    "FFNTrainConfig",
    "TrainRun",
    "run_train",
    "compute_partitions",
    "sample_coordinates",
    "train_ffn",
    "image_stats",
    "augment_regions",
    "fov_gather",
]

@dataclass
class FFNTrainConfig:
    """Everything ``deepsci connectomics train`` needs besides the volumes.

    Attributes
    ----------
    preset : str
        Starting model shape (``tiny``, ``cpu``, ``google``); explicit
        ``fov_size``/``deltas``/``depth``/``features`` override it.
    thresholds : tuple of float
        Bin edges of the local same-object fraction (partitions).
    lom_radius : tuple of int, optional
        Half-size of the box for the fraction; default: half the FOV.
    stride : int
        Grid step at which the fraction is evaluated (coordinate subsampling).
    max_per_partition : int
        At most this many coordinates kept per partition (then balanced).
    min_object_size : int
        Objects smaller than this many voxels are never centres.
    moves : int
        FFN steps per example (1 = no movement).
    move_policy : {"fixed", "face_max"}
    move_threshold : float
        Probability a face must reach for the face-max policy to move there.
    augment : bool
        Random reflections of z, y, x and permutations of equally sized axes.
    init_model : str, optional
        ``model.keras`` of the same shape whose weights start the run (fine-tuning,
        or a new learning-rate schedule after a finished run); ignored when
        ``out_dir`` already holds a checkpoint, which takes precedence.
    """

    preset: str = "cpu"
    fov_size: tuple[int, int, int] | None = None
    deltas: tuple[int, int, int] | None = None
    depth: int | None = None
    features: int | None = None
    thresholds: tuple[float, ...] = (0.025, 0.05, 0.075, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    lom_radius: tuple[int, int, int] | None = None
    stride: int = 2
    max_per_partition: int = 20000
    min_object_size: int = 100
    moves: int = 3
    move_policy: str = "face_max"
    move_threshold: float = 0.9
    augment: bool = True
    init_model: str | None = None
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=4, steps_per_epoch=100, batch_size=8, learning_rate=1e-3, monitor="loss"))

    def model_config(self) -> FFNConfig:
        if self.preset not in PRESETS:
            raise ConfigError(f"expected --preset among {', '.join(sorted(PRESETS))}, found {self.preset!r}")
        base = PRESETS[self.preset].to_dict()
        for k in ("fov_size", "deltas", "depth", "features"):
            if getattr(self, k) is not None:
                base[k] = getattr(self, k)
        fov, deltas = tuple(base["fov_size"]), tuple(base["deltas"])
        _check_shape = [
            (len(fov) == 3 and all(v >= 3 and v % 2 == 1 for v in fov), "--fov-size of 3 odd sizes >= 3", fov),
            (len(deltas) == 3 and min(deltas) >= 1, "--deltas of 3 values >= 1", deltas),
            (base["depth"] >= 1, "--depth >= 1", base["depth"]),
            (base["features"] >= 1, "--features >= 1", base["features"]),
        ]
        for ok, what, found in _check_shape:
            if not ok:
                raise ConfigError(f"expected {what}, found {found!r}")
        try:
            return FFNConfig(**base)
        except ValueError as e:  # the core's further rules (deltas below half the FOV)
            raise ConfigError(f"expected --fov-size and --deltas the FFN accepts, found {fov}, {deltas} ({e})") from None

    def validate(self) -> FFNTrainConfig:
        mc = self.model_config()
        t = self.train
        lom = self.lom_radius
        checks = [
            # The core's TrainConfig checks these too, under its field names; here they are the CLI's.
            (t.epochs >= 1, "--epochs >= 1", t.epochs),
            (t.steps_per_epoch is None or t.steps_per_epoch >= 1, "--steps-per-epoch >= 1", t.steps_per_epoch),
            (t.batch_size >= 1, "--batch-size >= 1", t.batch_size),
            (t.learning_rate > 0, "--lr > 0", t.learning_rate),
            (self.move_policy in ("fixed", "face_max"), "--move-policy fixed or face_max", self.move_policy),
            (self.moves >= 1, "--moves >= 1", self.moves),
            (self.stride >= 1, "--stride >= 1", self.stride),
            (self.max_per_partition >= 1, "--max-per-partition >= 1", self.max_per_partition),
            (self.min_object_size >= 0, "--min-object-size >= 0", self.min_object_size),
            (0 < self.move_threshold < 1, "0 < --move-threshold < 1", self.move_threshold),
            (len(self.thresholds) >= 1 and list(self.thresholds) == sorted(self.thresholds)
             and all(0 < t < 1 for t in self.thresholds), "increasing --thresholds in (0, 1)", self.thresholds),
            (lom is None or (len(lom) == 3 and min(lom) >= 1), "--lom-radius of 3 values >= 1", lom),
        ]
        for ok, what, found in checks:
            if not ok:
                raise ConfigError(f"expected {what}, found {found!r}")
        t.validate()
        self.fov_size, self.deltas, self.depth, self.features = mc.fov_size, mc.deltas, mc.depth, mc.features
        return self

    def region_size(self) -> tuple[int, int, int]:
        """Edge lengths of the training region cut around each coordinate."""
        mc = self.model_config()
        span = max(self.moves - 1, 1) if self.moves > 1 else 0
        return tuple(f + 2 * span * d for f, d in zip(mc.fov_size, mc.deltas, strict=True))


# ------------------------------------------------------------------ partitions


def compute_partitions(labels: np.ndarray, *, lom_radius, thresholds, stride: int = 1,
                       min_object_size: int = 0, margin=(0, 0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Partition subsampled voxels by the local fraction of their own object.

    Parameters
    ----------
    labels : ndarray of int, shape (Z, Y, X)
        Ground-truth objects; 0 is unlabelled and never a centre.
    lom_radius : sequence of 3 int
        The box is ``2 * lom_radius + 1`` voxels on each axis.
    thresholds : sequence of float
        Increasing bin edges of the fraction.
    stride : int
        Only voxels on this grid are evaluated.
    min_object_size : int
        Objects smaller than this are skipped.
    margin : sequence of 3 int
        Voxels closer than this to a face are skipped (their region would leave the volume).

    Returns
    -------
    coords : ndarray of int32, shape (M, 3)
        (z, y, x) of the evaluated voxels.
    partition : ndarray of int16, shape (M,)
        ``np.digitize(fraction, thresholds)``: 0 .. len(thresholds).
    """
    lom = np.asarray(lom_radius, int)
    grid = np.zeros(labels.shape, bool)
    inner = tuple(slice(int(m), s - int(m) if m else None, stride) for m, s in zip(margin, labels.shape, strict=True))
    grid[inner] = True
    objs = ndi.find_objects(labels.astype(np.int64) if labels.dtype.kind == "u" else labels)
    coords, parts = [], []
    for i, box in enumerate(objs, start=1):
        if box is None:
            continue
        lo = [max(b.start - r, 0) for b, r in zip(box, lom, strict=True)]
        hi = [min(b.stop + r, s) for b, r, s in zip(box, lom, labels.shape, strict=True)]
        sub = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        mask = labels[sub] == i
        if mask.sum() < max(min_object_size, 1):
            continue
        centre = mask & grid[sub]
        if not centre.any():
            continue
        # mode="constant" counts space outside the volume as "not this object",
        # the conservative choice for objects that leave the volume.
        frac = ndi.uniform_filter(mask.astype(np.float32), size=2 * lom + 1, mode="constant")
        idx = np.argwhere(centre)
        coords.append(idx + np.asarray(lo))
        parts.append(np.digitize(frac[centre], thresholds).astype(np.int16))
    if not coords:
        return np.zeros((0, 3), np.int32), np.zeros((0,), np.int16)
    return np.concatenate(coords).astype(np.int32), np.concatenate(parts)


def sample_coordinates(coords: np.ndarray, partition: np.ndarray, *, max_per_partition: int,
                       seed: int = 0) -> np.ndarray:
    """Draw the same number of coordinates from every non-empty partition.

    google/ffn takes as many as the smallest partition holds, which on a small
    volume leaves a handful of examples; here every partition contributes the
    median partition size (capped at ``max_per_partition``), drawing with
    replacement from partitions smaller than that. The result is shuffled.

    Returns
    -------
    ndarray of int32, shape (n * n_partitions, 3)
    """
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(partition == p) for p in np.unique(partition)]
    if not groups:
        return np.zeros((0, 3), np.int32)
    n = int(min(np.median([len(g) for g in groups]), max_per_partition))
    picked = np.concatenate([rng.choice(g, n, replace=len(g) < n) for g in groups])
    return coords[rng.permutation(picked)]


# ------------------------------------------------------------------ data


def image_stats(image: np.ndarray, *, sample: int = 1_000_000, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of the image (on a random sample of voxels)."""
    flat = image.reshape(-1)
    if flat.size > sample:
        flat = flat[np.random.default_rng(seed).integers(0, flat.size, sample)]
    flat = flat.astype(np.float64)
    return float(flat.mean()), float(max(flat.std(), 1e-6))


def _permutations(region) -> list[tuple[int, int, int]]:
    import itertools

    return [p for p in itertools.permutations(range(3))
            if all(region[a] == region[b] for a, b in zip(range(3), p, strict=True))]


def augment_regions(tensors: list, *, example_id, seed: int, perms, region) -> list:
    """The same random reflections of z, y, x and axis permutation of every ``(R, R, R, 1)`` tensor.

    The draw is a pure function of ``(seed, example_id)``, so an image region and its targets
    (labels, a teacher's masks) stay aligned.
    """
    import tensorflow as tf

    out = list(tensors)
    r = tf.random.stateless_uniform([4], seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(example_id, tf.int64)]))
    for axis in range(3):
        flip = r[axis] < 0.5
        out = [tf.cond(flip, lambda t=t, a=axis: tf.reverse(t, [a]), lambda t=t: t) for t in out]
    k = tf.cast(tf.floor(r[3] * len(perms)), tf.int32)
    return [tf.ensure_shape(tf.switch_case(k, [lambda t=t, p=p: tf.transpose(t, [*p, 3]) for p in perms]),
                            [*region, 1]) for t in out]


def _dataset(image, labels, coords, cfg: FFNTrainConfig, mean, std):
    """tf.data pipeline of (image region, seed) -> soft target, at the global batch."""
    import tensorflow as tf

    region = np.asarray(cfg.region_size(), np.int64)
    half = region // 2
    img = tf.constant(((image.astype(np.float32) - mean) / std)[..., None])
    lab = tf.constant(labels.astype(np.int64))
    perms = _permutations(region) if cfg.augment else [(0, 1, 2)]
    seed = cfg.train.seed

    def extract(i, c):
        start = tf.cast(c, tf.int64) - half
        x = tf.slice(img, tf.concat([start, tf.zeros([1], tf.int64)], 0), np.append(region, 1))
        y_lab = tf.slice(lab, start, region)
        centre_label = y_lab[half[0], half[1], half[2]]
        y = tf.where(y_lab == centre_label, SEED_IN, SEED_OUT)[..., None]
        if cfg.augment:
            x, y = augment_regions([x, y], example_id=i, seed=seed, perms=perms, region=region)
        return x, tf.cast(y, tf.float32)

    ids = np.arange(len(coords), dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((ids, coords.astype(np.int64)))
    ds = ds.shuffle(len(coords), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(extract, num_parallel_calls=1, deterministic=True)
    return ds.batch(cfg.train.batch_size, drop_remainder=True).prefetch(2)


# ------------------------------------------------------------------ graph


def _face_max_corner(corner, out, *, fov, deltas, region, t_move):
    """In-graph face-max move of a batch: (new FOV corners (N, 3), valid (N,)) from logits ``out``."""
    import tensorflow as tf

    d = deltas
    # Face-max: best face of the FOV just computed, in-graph for the whole batch.
    c = fov // 2
    scores, moves = [], []
    for axis in range(3):
        for sign in (-1, 1):
            sl = [slice(None)] + [slice(c[a] - d[a], c[a] + d[a] + 1) for a in range(3)]
            sl[axis + 1] = int(c[axis] + sign * d[axis])
            face = out[tuple(sl) + (0,)]
            flat = tf.reshape(face, [tf.shape(face)[0], -1])
            k = tf.argmax(flat, axis=1, output_type=tf.int32)
            other = [a for a in range(3) if a != axis]
            size1 = 2 * d[other[1]] + 1
            rel = [k // size1 - d[other[0]], k % size1 - d[other[1]]]
            rel.insert(axis, tf.fill(tf.shape(k), int(sign * d[axis])))
            scores.append(tf.reduce_max(flat, axis=1))
            moves.append(tf.stack(rel, axis=1))
    scores, moves = tf.stack(scores, 1), tf.stack(moves, 1)
    best = tf.argmax(scores, axis=1, output_type=tf.int32)
    valid = tf.gather(scores, best, batch_dims=1) >= t_move
    move = tf.gather(moves, best, batch_dims=1)
    new = tf.clip_by_value(corner + move, 0, tf.constant(region - fov, tf.int32))
    return tf.where(valid[:, None], new, corner), valid


def fov_gather(fov) -> Callable:
    """``gather(volume, corner)``: the FOVs ``(N, *fov, C)`` of a batch of regions ``(N, R, R, R, C)`` at corners ``(N, 3)``."""
    import tensorflow as tf

    grid = np.stack(np.meshgrid(*[np.arange(f) for f in fov], indexing="ij"), -1).astype(np.int32)

    def gather(vol, corner):
        idx = corner[:, None, None, None, :] + grid[None]
        return tf.gather_nd(vol, idx, batch_dims=1)

    return gather


def make_forward(cfg: FFNTrainConfig):
    """``forward(model, x, training)`` running ``cfg.moves`` FFN steps with feedback.

    ``x`` is the image region ``(N, R, R, R, 1)``; the result is a dict with
    the logits of every step ``(N, S, F, F, F, 1)``, the FOV corners in the
    region ``(N, S, 3)`` and a validity flag ``(N, S)`` (a face-max step that
    finds no face above threshold does not count).
    """
    import tensorflow as tf

    mc = cfg.model_config()
    fov = np.asarray(mc.fov_size)
    d = np.asarray(mc.deltas)
    region = np.asarray(cfg.region_size())
    centre_corner = (region - fov) // 2
    grid = np.stack(np.meshgrid(*[np.arange(f) for f in fov], indexing="ij"), -1).astype(np.int32)
    fixed = [np.eye(3, dtype=np.int32)[a] * s * d[a] for a in range(3) for s in (1, -1)]
    t_move = logit(cfg.move_threshold)

    gather = fov_gather(fov)

    def next_corner(corner, out, step):
        if cfg.move_policy == "fixed":
            shift = tf.constant(fixed[(step - 1) % 6], tf.int32)
            return tf.broadcast_to(tf.constant(centre_corner, tf.int32) + shift, tf.shape(corner)), \
                tf.ones(tf.shape(corner)[:1], tf.bool)
        return _face_max_corner(corner, out, fov=fov, deltas=d, region=region, t_move=t_move)

    def forward(model, x, training):
        n = tf.shape(x)[0]
        seed = np.full(region, logit(SEED_OUT), np.float32)
        seed[tuple(region // 2)] = logit(SEED_IN)
        canvas = tf.tile(tf.constant(seed)[None, ..., None], [n, 1, 1, 1, 1])
        corner = tf.tile(tf.constant(centre_corner, tf.int32)[None], [n, 1])
        valid = tf.ones([n], tf.bool)
        logits, corners, valids, out = [], [], [], None
        bidx = tf.range(n)[:, None, None, None, None] * tf.ones([1, *fov, 1], tf.int32)
        for step in range(cfg.moves):
            if step > 0:
                corner, valid = next_corner(corner, tf.stop_gradient(out), step)
            inp = tf.concat([gather(x, corner), gather(canvas, corner)], axis=-1)
            out = model(inp, training=training)
            logits.append(out)
            corners.append(corner)
            valids.append(valid)
            if step + 1 < cfg.moves:
                # Feed the prediction back (no gradient), as inference does.
                idx = tf.concat([bidx, corner[:, None, None, None, :] + grid[None]], -1)
                upd = tf.where(valid[:, None, None, None, None], tf.stop_gradient(out), gather(canvas, corner))
                canvas = tf.tensor_scatter_nd_update(canvas, idx, upd)
        return {"logits": tf.stack(logits, 1), "corner": tf.stack(corners, 1),
                "valid": tf.cast(tf.stack(valids, 1), tf.float32)}

    def loss_fn(y_true, y_pred):
        s = cfg.moves
        lab = tf.stack([gather(y_true, y_pred["corner"][:, i]) for i in range(s)], 1)
        xent = tf.nn.sigmoid_cross_entropy_with_logits(labels=lab, logits=y_pred["logits"])
        per_step = tf.reduce_mean(xent, axis=[2, 3, 4, 5])
        w = y_pred["valid"]
        return tf.reduce_sum(per_step * w, 1) / tf.maximum(tf.reduce_sum(w, 1), 1.0)

    return forward, loss_fn


# ------------------------------------------------------------------ stage


@dataclass
class TrainRun:
    """``deepsci connectomics train``: an FFN trained on one labelled volume.

    Attributes
    ----------
    image : str
        EM volume ``PATH[:INNER]``.
    labels : str
        Its dense ground truth ``PATH[:INNER]`` (integer ids, 0 = unlabelled).
    out : str
        Output folder: ``model.keras`` with its card, checkpoints (a rerun resumes), ``history.json``,
        ``tensorboard/`` and ``run.json``.
    voxel_size : tuple of float, optional
        (z, y, x) voxel size in nm; overrides the files' metadata.
    ffn : FFNTrainConfig
        Model shape, example sampling, FOV movement and the training schedule.
    accel : AcceleratorConfig
        Strategy, precision and XLA.
    """

    image: str
    labels: str
    out: str
    voxel_size: tuple[float, float, float] | None = None
    ffn: FFNTrainConfig = field(default_factory=FFNTrainConfig)
    accel: AcceleratorConfig = field(default_factory=AcceleratorConfig)

    def validate(self) -> TrainRun:
        for name in ("image", "labels", "out"):
            if not getattr(self, name):
                raise ConfigError(f"expected --{name}, found none")
        check_voxel_size(self.voxel_size)
        self.ffn.validate()
        self.accel.validate()
        return self


def _coordinates(lab: np.ndarray, cfg: FFNTrainConfig, src) -> tuple[np.ndarray, np.ndarray]:
    """Balanced training centres (K, 3) and every evaluated voxel's partition."""
    mc = cfg.model_config()
    region = np.asarray(cfg.region_size())
    lom = cfg.lom_radius or tuple(f // 2 for f in mc.fov_size)
    coords, part = compute_partitions(lab, lom_radius=lom, thresholds=cfg.thresholds, stride=cfg.stride,
                                      min_object_size=cfg.min_object_size, margin=tuple(region // 2 + 1))
    coords = sample_coordinates(coords, part, max_per_partition=cfg.max_per_partition, seed=cfg.train.seed)
    if len(coords) < cfg.train.batch_size:
        raise InputError(f"expected at least {cfg.train.batch_size} labelled training positions (objects of "
                         f">= {cfg.min_object_size} voxels away from the faces), found {len(coords)}", src)
    return coords, part


def _card(cfg: FFNTrainConfig, record: TrainRun, *, mean: float, std: float, voxel_size, loss, coords) -> ModelCard:
    mc = cfg.model_config()
    return ModelCard(
        app=APP, task=TASK, name=f"FFN {mc.fov_size}, depth {mc.depth}, {mc.features} features",
        input_spec={"fov_size": list(mc.fov_size), "channels": ["image", "logits"], "axes": "zyx",
                    "dtype": "float32", "voxel_size": [float(v) for v in voxel_size]},
        outputs={"object_logits": {"unit": "logit", "shape": [*mc.fov_size, 1]}},
        preprocessing={"image_mean": mean, "image_stddev": std},
        training={"command": "connectomics train", "config": config_to_dict(cfg), "final_loss": loss,
                  "coordinates": int(coords)},
        data={"name": record.image, "files": [record.image, record.labels]},
        extra={"ffn": mc.to_dict()},
        intended_use="Flood-filling segmentation of EM volumes like its training volume "
                     "(deepsci connectomics segment).",
        limitations="No held-out metrics on the card: score segmentations with `deepsci connectomics evaluate`.")


def train_ffn(image, labels, cfg: FFNTrainConfig, out_dir: str | Path, *, strategy=None, accel=None,
              record: TrainRun | None = None, overwrite: bool = False) -> dict:
    """Train an FFN on one labelled volume.

    Parameters
    ----------
    image : Volume or ndarray, shape (Z, Y, X)
    labels : Volume or ndarray of int, shape (Z, Y, X)
        Dense object ids (0 = unlabelled).
    cfg : FFNTrainConfig
    out_dir : path
        Receives ``model.keras`` + ``model.card.json``, checkpoints (a rerun resumes),
        ``tensorboard/``, ``history.json`` and ``run.json``.
    record : TrainRun, optional
        What ``run.json`` records (default: this call's volumes, folder and ``cfg``).

    Returns
    -------
    dict
        ``model`` path, final ``loss``, ``steps``, ``coordinates``, ``partitions`` and ``seconds``.
    """
    from deepsci.core.models.serialization import save_model
    from deepsci.core.training import train

    t0 = time.perf_counter()
    cfg.validate()
    record = record or TrainRun(image=getattr(image, "spec", ""), labels=getattr(labels, "spec", ""),
                                out=str(out_dir), ffn=cfg, accel=accel or AcceleratorConfig())
    img = np.asarray(image[:, :, :] if not isinstance(image, np.ndarray) else image)
    lab = np.asarray(labels[:, :, :] if not isinstance(labels, np.ndarray) else labels)
    src = getattr(labels, "spec", "labels")
    if img.shape != lab.shape:
        raise InputError(f"expected labels of the image's shape {img.shape}, found {lab.shape}", src)
    region = np.asarray(cfg.region_size())
    if np.any(np.asarray(img.shape) < region):
        raise InputError(f"expected a training volume of at least {tuple(region)} voxels (FOV plus moves), found "
                         f"{img.shape}", getattr(image, "spec", None))
    if cfg.init_model:
        check_init_model(cfg.model_config(), cfg.init_model)
    coords, part = _coordinates(lab, cfg, src)
    mean, std = image_stats(img)
    forward, loss_fn = make_forward(cfg)
    inputs = [s.split(":")[0] for s in (record.image, record.labels) if s]
    with RunDir(out_dir, command="connectomics train", config=record, inputs=inputs, overwrite=overwrite) as run:
        result = train(lambda: build_model(cfg.model_config(), cfg.init_model),
                       _dataset(img, lab, coords, cfg, mean, std), loss_fn, cfg.train, run.path, forward=forward,
                       strategy=strategy, accelerator=accel)
        loss = result.history[-1]["loss"] if result.history else None
        # The checkpoints make a finished run resumable (a rerun asking for more epochs goes on from
        # them); the marker says so to RunDir, which refuses to rerun a finished run that has none.
        run.mark("trained", {"steps": int(result.steps)})
        save_model(result.model, run.file("model.keras"),
                   card=_card(cfg, record, mean=mean, std=std, voxel_size=getattr(image, "voxel_size", (1, 1, 1)),
                              loss=loss, coords=len(coords)))
        summary = {"model": str(run.file("model.keras")), "loss": loss, "steps": result.steps,
                   "coordinates": int(len(coords)), "partitions": int(len(np.unique(part))),
                   "seconds": round(time.perf_counter() - t0, 2)}
        run.record(**summary)
    return summary


def run_train(cfg: TrainRun, *, overwrite: bool = False) -> dict:
    """``deepsci connectomics train``: open the volumes of ``cfg`` and :func:`train_ffn` on them."""
    img = open_volume(cfg.image, voxel_size=cfg.voxel_size)
    lab = open_volume(cfg.labels, voxel_size=cfg.voxel_size, kind="labels")
    check_same_shape(img, lab)
    return train_ffn(img, lab, cfg.ffn, cfg.out, accel=cfg.accel, record=cfg, overwrite=overwrite)
