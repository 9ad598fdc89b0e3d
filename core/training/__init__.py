"""One distributed training loop for every deepsci model.

Keras 3's ``Model.fit`` fails under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585), so deepsci trains with a plain custom loop:
``strategy.run`` on distributed datasets, losses scaled by the global number
of examples, gradients all-reduced and then clipped, and checkpoints that
make a killed run resume to the same weights as an uninterrupted one.

Modules: :mod:`.config` (what to do), :mod:`.schedules` (learning rates and
optimizers), :mod:`.data` (datasets per replica), :mod:`.checkpoint` (resume
and best weights), :mod:`.loop` (steps and epochs), :mod:`.runner` (:func:`train`).

Importing this package does not import TensorFlow (so ``deepsci --help`` stays
fast): :func:`train` and the schedules load it on first use.
"""
from __future__ import annotations

from .config import TrainConfig, TrainResult

__all__ = ["TrainConfig", "TrainResult", "WarmupSchedule", "train"]

_LAZY = {"train": ".runner", "WarmupSchedule": ".schedules"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
