"""The FFN runner: a trained model applied to batches of FOVs, loaded once per process.

:class:`FloodFiller` is what the flood fill and the agglomeration call; the
forward pass is the core's predictor (:func:`deepsci.core.predict.load_predictor`:
a traced Keras function for ``.keras``, the LiteRT interpreter for a ``.tflite``
made by ``connectomics export``), and the runner counts FOV evaluations (the cost
measure of the benchmarks). A comma-separated list of models is an ensemble whose
members' object probabilities are averaged at every FOV (the canvas keeps logits,
so the mean probability goes back to a logit). Models are refused unless their card
says ``connectomics``/``ffn``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from deepsci.core.models.card import ModelCard, read_card
from deepsci.core.parallel import limit_tf_threads

__all__ = ["APP", "TASK", "FloodFiller", "normalise", "model_card", "model_paths", "load_flood_filler"]

APP, TASK = "connectomics", "ffn"
#: Ensemble probabilities are clipped this far from 0 and 1 before going back to logits.
_EPS = 1e-6


class FloodFiller:
    """Runs an FFN (or the mean of an ensemble of FFNs) on batches of FOVs.

    Parameters
    ----------
    predict : callable or sequence of callables
        ``(N, Z, Y, X, 2) -> (N, Z, Y, X, 1)`` logits (a core predictor); several: an ensemble.
    fov : sequence of 3 int
        The FOV ``(Z, Y, X)``.
    deltas : sequence of 3 int
        FOV movement step.
    """

    def __init__(self, predict: Callable | Sequence[Callable], fov, deltas):
        self.members = list(predict) if isinstance(predict, (list, tuple)) else [predict]
        self.fov = tuple(int(v) for v in fov)
        self.deltas = tuple(int(v) for v in deltas)
        self.fov_evals = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(N, Z, Y, X)`` of a batch ``(N, Z, Y, X, 2)`` (image, canvas)."""
        self.fov_evals += len(batch)
        x = np.asarray(batch, np.float32)
        if len(self.members) == 1:
            return np.asarray(self.members[0](x))[..., 0]
        p = np.mean([1.0 / (1.0 + np.exp(-np.asarray(m(x), np.float64)[..., 0])) for m in self.members], axis=0)
        p = np.clip(p, _EPS, 1 - _EPS)
        return np.log(p / (1 - p)).astype(np.float32)


def normalise(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(image - mean) / std`` as float32 (the training preprocessing), shape kept (Z, Y, X)."""
    return ((image.astype(np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32)


def model_paths(spec: str | Path) -> list[str]:
    """The model files of ``spec``: one path, or the members of ``a.keras,b.tflite``."""
    return [s.strip() for s in str(spec).split(",") if s.strip()]


def _check_keras_archive(path: Path) -> None:
    """A ``.keras`` file must be a sound zip with Keras' members; checked without TensorFlow.

    Loading happens later, in each worker, where a damaged file would fail after the run started.
    """
    import zipfile

    from deepsci.core.errors import InputError

    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise InputError(f"expected a Keras model file (.keras, a zip archive), found one that does not load: "
                         f"{str(e).splitlines()[0][:120] if str(e) else type(e).__name__}", path) from None
    if bad is not None or not {"config.json", "model.weights.h5"} <= names:
        what = f"a damaged member {bad}" if bad is not None else f"members {sorted(names)[:5]}"
        raise InputError(f"expected a Keras model file (config.json and model.weights.h5), found {what}", path)


def _check_card(card: ModelCard, path: str, *, preprocessing: bool = True) -> None:
    """The card's FFN shape (and its preprocessing, which inference needs), as their readers expect them."""
    from deepsci.core.errors import InputError

    ffn, pre = card.extra.get("ffn"), card.preprocessing or {}
    try:
        ok = (all(len(ffn[k]) == 3 and all(int(v) == v and v >= 1 for v in ffn[k]) for k in ("fov_size", "deltas"))
              and (not preprocessing
                   or (float(pre["image_stddev"]) > 0 and np.isfinite(float(pre["image_mean"])))))
    except (TypeError, KeyError, ValueError):
        ok = False
    if not ok:
        raise InputError("expected an FFN model card (extra.ffn with fov_size and deltas of 3 sizes >= 1, "
                         f"preprocessing image_mean and image_stddev > 0), found extra.ffn={ffn!r}", path)


def model_card(model_path: str | Path, *, preprocessing: bool = True) -> ModelCard:
    """The checked card of a trained FFN (FFN shape in ``extra["ffn"]``, ``preprocessing``), no TensorFlow.

    An ensemble's members must agree on the FFN shape and preprocessing; the first's card is returned.
    A ``.keras`` member must also be a sound archive (a damaged one fails here, in one line, rather
    than in a worker after the run has started). ``preprocessing=False``: a card without the image
    normalisation is accepted (a model whose weights only start a training run).
    """
    from deepsci.core.errors import InputError

    paths = model_paths(model_path)
    if not paths:
        raise InputError("expected a model file (.keras or .tflite), found an empty --model", str(model_path))
    cards = [read_card(p, expect=APP, task=TASK) for p in paths]
    for p, c in zip(paths, cards, strict=True):
        _check_card(c, p, preprocessing=preprocessing)
        if Path(p).suffix == ".keras":
            _check_keras_archive(Path(p))
    for p, c in zip(paths[1:], cards[1:], strict=True):
        if c.extra.get("ffn") != cards[0].extra.get("ffn") or c.preprocessing != cards[0].preprocessing:
            raise InputError(f"expected ensemble members of one FFN shape and preprocessing, found one that "
                             f"differs from {Path(paths[0]).name}", p)
    return cards[0]


def _member(path: str, threads: int | None) -> tuple[Callable, ModelCard]:
    if Path(path).suffix == ".tflite":
        from deepsci.core.litert import LiteRTModel

        # Loaded here rather than by load_predictor so the interpreter gets this worker's threads.
        runtime, card = LiteRTModel.load(path, expect=APP, task=TASK, threads=threads)
        return runtime.predictor(), card
    from deepsci.core.predict import load_predictor

    # Batches are as long as the queue allows (1 .. batch_size FOVs): no padding to a fixed size,
    # which would cost up to batch_size times the work of a short batch.
    return load_predictor(path, expect=APP, task=TASK, batch_size=None)


_RUNNERS: dict = {}


def load_flood_filler(model_path: str | Path, *, threads: int | None = None) -> tuple[FloodFiller, ModelCard]:
    """The model at ``model_path`` as a :class:`FloodFiller` (loaded once per process) and its card.

    ``model_path`` is a ``.keras`` or ``.tflite`` file, or a comma-separated ensemble of them.
    ``threads``: intra-op threads of this process (a Dask worker's share of the cores), set before
    the model's first op.
    """
    key = str(model_path)
    if key not in _RUNNERS:
        card = model_card(key)
        limit_tf_threads(threads)
        members = [_member(p, threads)[0] for p in model_paths(key)]
        ffn = card.extra["ffn"]
        _RUNNERS[key] = (FloodFiller(members, ffn["fov_size"], ffn["deltas"]), card)
    return _RUNNERS[key]
