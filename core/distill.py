"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a small student learns a teacher's soft outputs.

For classification heads the per-example loss is

    alpha * T**2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(y, softmax(z_s))

(the T**2 keeps the soft term's gradients on the scale of the hard term's as
T changes); an ensemble teacher contributes the mean of its members'
softened probabilities. Binary heads (one logit) use the Bernoulli form of
the same loss. For regression and dense outputs the teacher's mean
prediction is a second target beside the label, and an example without a
label (NaN) learns from the teacher alone — which is how unlabelled
molecules or EM volumes without ground truth feed a student.

Teacher outputs are computed once, in shards written atomically with resume
markers (:class:`TeacherCache`), so each student epoch costs only the student.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .errors import ConfigError, InputError
from .io import atomic_path, read_json, write_json

__all__ = ["soft_targets", "distillation_loss", "regression_distillation_loss", "TeacherCache",
           "check_distill_settings", "DEFAULT_TEMPERATURE", "DEFAULT_ALPHA"]

#: Hinton et al. found intermediate temperatures best for small students; 2-4 is the usual range.
DEFAULT_TEMPERATURE = 3.0
DEFAULT_ALPHA = 0.7


def check_distill_settings(temperature: float, alpha: float) -> None:
    """ConfigError unless ``temperature > 0`` and ``0 <= alpha <= 1``."""
    if not temperature > 0:
        raise ConfigError(f"expected --temperature > 0, found {temperature}")
    if not 0 <= alpha <= 1:
        raise ConfigError(f"expected --alpha in [0, 1], found {alpha}")


def soft_targets(member_logits: Iterable[np.ndarray], *, temperature: float) -> np.ndarray:
    """Mean of the members' softened probabilities, shape (N, K) (or (N, 1) for binary heads).

    Parameters
    ----------
    member_logits : iterable of arrays, shape (N, K)
        Each teacher member's logits; ``K = 1`` is a binary (sigmoid) head.
    temperature : float
    """
    probs = []
    for z in member_logits:
        z = np.asarray(z, np.float64) / temperature
        if z.shape[-1] == 1:
            probs.append(1.0 / (1.0 + np.exp(-z)))
        else:
            z = z - z.max(axis=-1, keepdims=True)
            e = np.exp(z)
            probs.append(e / e.sum(axis=-1, keepdims=True))
    if not probs:
        raise ValueError("Expected at least one teacher member. Received: none")
    return np.mean(probs, axis=0).astype(np.float32)


def distillation_loss(labels, student_logits, teacher_probs, *, temperature: float = DEFAULT_TEMPERATURE,
                      alpha: float = DEFAULT_ALPHA):
    """Per-example distillation loss, shape (N,).

    Parameters
    ----------
    labels : tensor, shape (N,) int class ids, or (N, 1) 0/1 for a binary head
    student_logits : tensor, shape (N, K)
    teacher_probs : tensor, shape (N, K)
        The teacher's probabilities at ``temperature`` (:func:`soft_targets`).
    """
    import tensorflow as tf

    check_distill_settings(temperature, alpha)
    z = tf.cast(student_logits, tf.float32)
    p_t = tf.cast(teacher_probs, tf.float32)
    eps = 1e-7
    if z.shape[-1] == 1:
        q = tf.sigmoid(z / temperature)
        kl = (p_t * (tf.math.log(p_t + eps) - tf.math.log(q + eps))
              + (1 - p_t) * (tf.math.log(1 - p_t + eps) - tf.math.log(1 - q + eps)))
        kl = tf.reduce_sum(kl, axis=-1)
        y = tf.reshape(tf.cast(labels, tf.float32), tf.shape(z))
        hard = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z), axis=-1)
    else:
        log_q = tf.nn.log_softmax(z / temperature, axis=-1)
        kl = tf.reduce_sum(p_t * (tf.math.log(p_t + eps) - log_q), axis=-1)
        y = tf.reshape(tf.cast(labels, tf.int32), [-1])
        hard = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z)
    return alpha * temperature ** 2 * kl + (1 - alpha) * hard


def regression_distillation_loss(labels, student, teacher, *, alpha: float = DEFAULT_ALPHA,
                                 kind: str = "mae"):
    """Per-example loss against the teacher's mean and the label, shape (N,).

    Targets whose label is NaN (unlabelled) are learned from the teacher alone;
    ``kind`` is ``"mae"`` or ``"mse"``, averaged over the last axis.
    """
    import tensorflow as tf

    check_distill_settings(1.0, alpha)
    if kind not in ("mae", "mse"):
        raise ConfigError(f"expected --loss mae|mse, found {kind!r}")
    s = tf.cast(student, tf.float32)
    t = tf.cast(teacher, tf.float32)
    y = tf.cast(labels, tf.float32)

    def err(a, b):
        d = a - b
        return tf.abs(d) if kind == "mae" else tf.square(d)

    known = tf.math.logical_not(tf.math.is_nan(y))
    y0 = tf.where(known, y, tf.zeros_like(y))
    w_label = tf.where(known, (1 - alpha) * tf.ones_like(y), tf.zeros_like(y))
    w_teacher = tf.where(known, alpha * tf.ones_like(y), tf.ones_like(y))
    per = w_teacher * err(s, t) + w_label * err(s, y0)
    return tf.reduce_mean(per, axis=-1)


class TeacherCache:
    """Teacher outputs on disk, one ``.npz`` shard per input chunk, resumable.

    Parameters
    ----------
    folder : path
        Where shards and ``teacher.json`` (the teacher, T and shard list) live.
    teacher : dict
        What produced the outputs (model paths, temperature); a cache made by
        another teacher is an error rather than silently reused.
    """

    def __init__(self, folder: str | os.PathLike, *, teacher: dict):
        self.folder = Path(folder)
        self.teacher = dict(teacher)
        self.meta = self.folder / "teacher.json"
        if self.meta.exists():
            recorded = read_json(self.meta).get("teacher")
            if recorded != self.teacher:
                raise InputError("expected a teacher cache of the same teacher and temperature, "
                                 "found one made by another (use a new folder)", self.meta)

    def shard_path(self, index: int) -> Path:
        return self.folder / f"shard-{index:05d}.npz"

    def compute(self, predict: Callable, chunks: Iterable, *, progress: bool = False) -> int:
        """Run ``predict(x) -> dict of arrays`` on each chunk not cached yet; return shards computed."""
        from .progress import progress as bar

        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.meta, {"teacher": self.teacher})
        done = 0
        for i, x in enumerate(bar(chunks, desc="teacher", unit="shard", disable=not progress)):
            path = self.shard_path(i)
            if path.exists():
                continue
            outputs = predict(x)
            if not isinstance(outputs, dict):
                outputs = {"output": outputs}
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **{k: np.asarray(v) for k, v in outputs.items()})
            done += 1
        return done

    def load(self) -> dict[str, np.ndarray]:
        """All shards concatenated in order, name -> array (N, ...)."""
        shards = sorted(self.folder.glob("shard-*.npz"))
        if not shards:
            raise InputError("expected cached teacher outputs, found none", self.folder)
        parts: dict[str, list] = {}
        for s in shards:
            with np.load(s, allow_pickle=False) as z:
                for k in z.files:
                    parts.setdefault(k, []).append(z[k])
        return {k: np.concatenate(v, axis=0) for k, v in parts.items()}
