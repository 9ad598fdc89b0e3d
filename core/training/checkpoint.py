"""Checkpoints of a run: resume, periodic saves and the best epoch's weights.

Under ``MultiWorkerMirroredStrategy`` every worker must take part in saving
(Keras' multi-worker guide), but only the chief's files may land in
``out_dir``: the other workers save into a private temporary folder that
:meth:`Checkpoints.close` removes, and read the chief's checkpoints to resume.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ..accelerator import is_chief

__all__ = ["Checkpoints"]


def _task_id(strategy) -> int:
    return getattr(getattr(strategy, "cluster_resolver", None), "task_id", 0) or 0


class Checkpoints:
    """The checkpoint manager of one training run.

    Parameters
    ----------
    model : keras.Model
    optimizer : keras.optimizers.Optimizer
    state : dict of name -> tf.Variable
        Loop bookkeeping saved with the weights (step, epoch, history ...).
    out_dir : Path
        ``checkpoints/`` and ``best/`` live here (the chief's only).
    strategy : tf.distribute.Strategy
    keep : int
        Checkpoints kept.
    """

    def __init__(self, *, model: keras.Model, optimizer, state: dict, out_dir: Path, strategy,
                 keep: int):
        self.chief = is_chief(strategy)
        self.out_dir = Path(out_dir)
        self.read_dir = self.out_dir / "checkpoints"
        self.private = None if self.chief else Path(
            tempfile.mkdtemp(prefix=f"deepsci-worker{_task_id(strategy)}-"))
        write_root = self.out_dir if self.chief else self.private
        # Random-generator states (dropout, augmentation) are model variables but
        # not weights, and Checkpoint(model=...) skips them; without them a
        # resumed run draws different masks.
        weight_ids = {id(w) for w in model.weights}
        rng_state = [v.value for v in model.variables if id(v) not in weight_ids]
        # The weights are listed besides the model because TensorFlow's object
        # graph misses Keras 3 sub-layers held in Python lists (their
        # non-trainable state would otherwise be lost on resume).
        self.model = model
        weights = [v.value for v in model.weights]
        self.ckpt = tf.train.Checkpoint(model=model, weights=weights, optimizer=optimizer,
                                        rng_state=rng_state, **state)
        self.manager = tf.train.CheckpointManager(self.ckpt, str(write_root / "checkpoints"),
                                                  max_to_keep=keep)
        self.best = tf.train.Checkpoint(weights=weights)
        self.best_write = write_root / "best" / "weights"
        self.best_read = self.out_dir / "best" / "weights"

    def restore(self) -> bool:
        """Load the chief's latest checkpoint, if any; True when one was found."""
        latest = tf.train.latest_checkpoint(str(self.read_dir))
        if latest:
            self.ckpt.restore(latest).assert_existing_objects_matched()
        return bool(latest)

    def save(self, step: int) -> None:
        """Save everything as checkpoint ``step`` (every worker must call this)."""
        self.manager.save(checkpoint_number=step)

    def save_best(self) -> list[np.ndarray]:
        """Keep the current weights as the best ones; returns them in memory too."""
        self.best.write(str(self.best_write))
        return [np.array(v) for v in self.model.weights]

    def restore_best(self) -> bool:
        """Load the chief's best weights from disk (a run resumed after its best epoch)."""
        if not Path(str(self.best_read) + ".index").exists():
            return False
        self.best.read(str(self.best_read)).expect_partial()
        return True

    def close(self) -> None:
        """Remove a non-chief worker's private folder."""
        if self.private is not None:
            shutil.rmtree(self.private, ignore_errors=True)
            self.private = None
