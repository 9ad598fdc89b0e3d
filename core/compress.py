"""The ``distill`` and ``export`` verbs every app shares: their configs and runners.

An app supplies what only it knows — how to draw its own inputs, which
outputs are logits of which head, how to score a difference in its own
metric — as an :class:`ExportSpec` or to :func:`teacher_targets`; the
loading, splitting, calibration, accuracy check, refusal and run record are
written once here.

``export`` takes one model, not an ensemble: an ensemble is made cheap by
distilling it into one student first, then exporting the student.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .distill import (
    DEFAULT_ALPHA,
    DEFAULT_TEMPERATURE,
    TeacherCache,
    check_distill_settings,
    soft_targets,
)
from .errors import ConfigError
from .export import QUANTIZE

__all__ = ["ExportConfig", "ExportSpec", "run_export", "DistillSettings", "teacher_targets",
           "distill_loss_fn", "take_rows", "batches_of", "single_model_path"]


@dataclass
class ExportConfig:
    """Options of ``deepsci <app> export``.

    Attributes
    ----------
    model : str
        A ``.keras`` model or a shipped model's name; empty: the app's default shipped model.
    out : Path
        The ``.tflite`` file to write; its card is written beside it (``*.card.json``).
    quantize : str
        ``int8`` (weights and activations, calibrated on ``--samples`` inputs),
        ``float16`` (weights) or ``none``.
    inputs : Path, optional
        The app's own data to calibrate on and check against (each app's help
        says which kind); default: the app's built-in source.
    samples : int
        Representative inputs for int8 calibration.
    check : int
        Further inputs, not used for calibration, on which the exported model
        is scored against the float model.
    batch_size : int
        The exported file's fixed batch size (inference pads the last batch).
    tolerance : float, optional
        Refuse the export when the app's difference measure exceeds this;
        default: the app's own tolerance.
    seed : int
        Which inputs are drawn.
    """

    model: str = ""
    out: Path = Path("model_int8.tflite")
    quantize: str = "int8"
    inputs: Path | None = None
    samples: int = 256
    check: int = 256
    batch_size: int = 16
    tolerance: float | None = None
    seed: int = 0

    def validate(self) -> ExportConfig:
        if self.quantize not in QUANTIZE:
            raise ConfigError(f"expected --quantize {'|'.join(QUANTIZE)}, found {self.quantize!r}")
        if Path(self.out).suffix != ".tflite":
            raise ConfigError(f"expected --out ending in .tflite, found {str(self.out)!r}")
        for name in ("samples", "check", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"expected --{name.replace('_', '-')} >= 1, found {getattr(self, name)}")
        if self.tolerance is not None and not self.tolerance >= 0:
            raise ConfigError(f"expected --tolerance >= 0, found {self.tolerance}")
        return self


@dataclass(frozen=True)
class ExportSpec:
    """What an app tells :func:`run_export`.

    Attributes
    ----------
    app, task : str
        The card's app and task the model must have.
    draw : callable
        ``draw(source, n, seed, card) -> inputs`` with ``n`` rows (array or dict
        of arrays, shape (n, ...)), the model's own preprocessed inputs.
    compare : callable
        ``compare(float_outputs, exported_outputs) -> float``, the difference in
        the app's terms (larger is worse), named by ``measure``.
    measure : str
        What ``compare`` returns, for the report and the error.
    tolerance : float
        The default refusal threshold of ``compare``.
    prepare : callable, optional
        ``prepare(model, card) -> keras.Model``, the form of the model the file
        holds when it is not the saved one (e.g. fixed-size padded graph
        batches in place of ragged ones); ``draw`` gives that form's inputs.
    """

    app: str
    task: str | None
    draw: Callable
    compare: Callable
    measure: str
    tolerance: float
    prepare: Callable | None = None


def take_rows(x, rows):
    """Rows ``rows`` (a slice or index array) of an array or a dict of arrays."""
    if isinstance(x, dict):
        return {k: np.asarray(v)[rows] for k, v in x.items()}
    return np.asarray(x)[rows]


def _n_rows(x) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def batches_of(x, batch_size: int) -> Iterator:
    """Consecutive batches of exactly ``batch_size`` rows (a short last one is padded by repetition)."""
    n = _n_rows(x)
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size) % n
        yield take_rows(x, idx)


def single_model_path(spec: str, *, default_name: str = "model.keras") -> Path:
    """The one model ``spec`` names; an ensemble is a ConfigError saying to distil it first."""
    from .ensemble import model_paths

    paths = model_paths(spec, default_name=default_name)
    if len(paths) != 1:
        raise ConfigError(f"expected one model to export, found an ensemble of {len(paths)} "
                          "(distil it into one student with `distill`, or pass one member's .keras)")
    if paths[0].suffix != ".keras":
        raise ConfigError(f"expected a .keras model to export, found {paths[0].name}")
    return paths[0]


def run_export(cfg: ExportConfig, spec: ExportSpec, *, overwrite: bool = False,
               say: Callable[[str], None] | None = None) -> dict:
    """Export ``cfg.model`` to LiteRT as ``spec``'s app does; return the export report.

    The report (also in the card's ``extra.litert`` and the run record
    ``<out>.run.json``) holds the file size, the ops left float, and the
    difference from the float model on ``cfg.check`` held-out inputs.
    """
    from .export import export_litert
    from .models.registry import resolve_model
    from .models.serialization import load_model
    from .runs import RunDir, check_output_location, refuse_existing_file

    say = say or (lambda line: None)
    check_output_location(cfg.out, file_output=True)
    refuse_existing_file(cfg.out, overwrite=overwrite)
    path = single_model_path(resolve_model(cfg.model or None, app=spec.app, task=spec.task, say=say))
    model, card = load_model(path, expect=spec.app, task=spec.task)
    if spec.prepare is not None:
        model = spec.prepare(model, card)
    x = spec.draw(cfg.inputs, int(cfg.samples) + int(cfg.check), int(cfg.seed), card)
    n = _n_rows(x)
    if n < 2:
        raise ConfigError(f"expected at least 2 inputs to calibrate and check on, found {n}")
    # Calibration and check rows never overlap: the check is held out. The
    # same rows are checked whatever --quantize is, so exports compare.
    split = max(1, min(int(cfg.samples), n - 1))
    cal, check = take_rows(x, slice(0, split)), take_rows(x, slice(split, n))
    n_cal = split if cfg.quantize == "int8" else 0
    tolerance = spec.tolerance if cfg.tolerance is None else float(cfg.tolerance)
    with RunDir(cfg.out, command=f"{spec.app} export", config=cfg, file_output=True,
                inputs=[path, cfg.inputs], overwrite=True) as run:
        report = export_litert(model, cfg.out, card=card, quantize=cfg.quantize,
                               batch_size=int(cfg.batch_size),
                               representative=batches_of(cal, int(cfg.batch_size)) if n_cal else None,
                               check_inputs=check, compare=spec.compare, tolerance=tolerance,
                               measure=spec.measure)
        report.update(source=str(path), calibration_rows=n_cal, check_rows=_n_rows(check),
                      tolerance=tolerance, measure=spec.measure)
        run.record(**report)
    say(f"exported {path.name} -> {cfg.out} ({cfg.quantize}, {report['bytes'] / 1e6:.2f} MB, "
        f"{spec.measure} {report['difference']:.4g} on {_n_rows(check)} held-out inputs; "
        f"float ops: {', '.join(report['float_ops']) or 'none'})")
    return report


@dataclass
class DistillSettings:
    """The distillation part of an app's ``distill`` config.

    Attributes
    ----------
    teacher : str
        Comma-separated ``.keras`` models, an ensemble folder or shipped names:
        the teacher (an ensemble's members are averaged).
    temperature : float
        Softmax temperature T of the soft targets (Hinton et al.: 2-4 for small students).
    alpha : float
        Weight of the soft (teacher) term; ``1 - alpha`` weights the hard labels.
    """

    teacher: str = ""
    temperature: float = DEFAULT_TEMPERATURE
    alpha: float = DEFAULT_ALPHA

    def validate(self) -> DistillSettings:
        if not str(self.teacher).strip():
            raise ConfigError("expected --teacher (models, an ensemble folder or shipped names)")
        check_distill_settings(self.temperature, self.alpha)
        return self


def teacher_targets(settings: DistillSettings, chunks: Sequence, *, app: str, task: str | None,
                    cache_dir: str | os.PathLike, heads: dict[str, str],
                    batch_size: int = 64, progress: bool = False) -> tuple[dict[str, np.ndarray], list[Path]]:
    """The teacher's targets for ``chunks`` of inputs, computed once into ``cache_dir``.

    Parameters
    ----------
    chunks : sequence of inputs (array or dict of arrays, shape (n_i, ...))
        The student's training inputs in a fixed order; one cache shard each.
    heads : dict of output name -> ``"softmax"``, ``"sigmoid"`` or ``"mean"``
        How each teacher output becomes a target: probabilities at the
        temperature (classification) or the members' mean (regression, dense).
        A model with one unnamed output uses the name ``"output"``.

    Returns
    -------
    targets : dict of name -> array, shape (sum n_i, ...)
    teacher_paths : list of Path
        The teacher's member files (for the student's card).
    """
    from .ensemble import load_ensemble
    from .models.registry import resolve_model

    spec = resolve_model(settings.teacher, app=app, task=task)
    ensemble = load_ensemble(spec, expect=app, task=task, batch_size=batch_size)
    ident = {"models": [str(p) for p in ensemble.paths], "temperature": float(settings.temperature),
             "heads": dict(heads)}
    cache = TeacherCache(cache_dir, teacher=ident)

    def predict(x):
        members = [o if isinstance(o, dict) else {"output": o} for o in ensemble.member_outputs(x)]
        out = {}
        for name, kind in heads.items():
            outs = [m[name] for m in members]
            if kind == "mean":
                out[name] = np.mean(np.asarray(outs, np.float64), axis=0).astype(np.float32)
            elif kind in ("softmax", "sigmoid"):
                out[name] = soft_targets(outs, temperature=settings.temperature)
            else:
                raise ValueError(f"Expected head kind softmax|sigmoid|mean. Received: {kind!r}")
        return out

    cache.compute(predict, chunks, progress=progress)
    return cache.load(), list(ensemble.paths)


def distill_loss_fn(heads: dict[str, str], settings: DistillSettings, *,
                    weights: dict[str, float] | None = None, regression: str = "mae") -> Callable:
    """``loss_fn(y_true, y_pred)`` for the core loop, per example, shape (B,).

    ``y_true`` is ``{"label": labels, "teacher": teacher targets}``, each a
    tensor or a dict by head name as ``y_pred`` is; ``heads`` is as in
    :func:`teacher_targets`. Head losses are summed with ``weights``.
    """
    from .distill import distillation_loss, regression_distillation_loss

    weights = weights or {}
    T, alpha = float(settings.temperature), float(settings.alpha)

    def loss_fn(y_true, y_pred):
        labels, teacher = y_true["label"], y_true["teacher"]
        named = isinstance(y_pred, dict)
        total = 0.0
        for name, kind in heads.items():
            pick = (lambda d, n=name: d[n]) if named else (lambda d: d)
            if kind == "mean":
                term = regression_distillation_loss(pick(labels), pick(y_pred), pick(teacher),
                                                    alpha=alpha, kind=regression)
            else:
                term = distillation_loss(pick(labels), pick(y_pred), pick(teacher),
                                         temperature=T, alpha=alpha)
            total = total + weights.get(name, 1.0) * term
        return total

    return loss_fn


def distill_card_entry(settings: DistillSettings, teacher_paths: Sequence, *, data: dict | None = None,
                       student: dict | None = None) -> dict:
    """What a student's card records of its distillation (``card.training["distillation"]``)."""
    return {"teacher": [str(p) for p in teacher_paths], "temperature": float(settings.temperature),
            "alpha": float(settings.alpha), "student": dict(student or {}), "data": dict(data or {})}

