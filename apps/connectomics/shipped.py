"""The shipped models behind ``--model`` and ``--agglo-classifier`` (no TensorFlow).

``segment`` without ``--model`` takes the default FFN of the package and, for the
``learned`` pipeline without ``--agglo-classifier``, the pair classifier built with
that FFN (its card's ``extra["agglo_model"]``): a classifier's FFN features mean
something only with its own FFN, so a model given as a path needs its classifier
given as well. Names of shipped models are accepted wherever a path is.
"""
from __future__ import annotations

import sys
from pathlib import Path

from deepsci.core.models.registry import default_model, resolve_model, shipped

from .predict import APP, TASK, model_card

__all__ = ["AGGLO_TASK", "resolve_ffn", "resolve_segment_models"]

AGGLO_TASK = "agglo"


def _is_name(spec: str) -> bool:
    return not (Path(spec).exists() or "/" in spec or spec.endswith((".keras", ".tflite", ".json")))


def resolve_ffn(spec: str | None) -> str | None:
    """``train-agglo --model``: a shipped FFN's name becomes its path (``None`` stays ``None``)."""
    if spec is None or not _is_name(str(spec)):
        return spec
    return resolve_model(spec, app=APP, task=TASK)


def resolve_segment_models(model: str | None, classifier: str | None, *, wants_classifier: bool,
                           say=None) -> tuple[str, str | None]:
    """The FFN path and the classifier path (or ``None``) that ``segment`` runs with.

    Parameters
    ----------
    model : str or None
        ``--model``: ``None`` for the default, a shipped name, or a path.
    classifier : str or None
        ``--agglo-classifier``: a shipped name, a path, or ``None``.
    wants_classifier : bool
        The pipeline agglomerates with a classifier (``--preset learned``): a missing one is
        taken from a shipped FFN's card.
    say : callable, optional
        Receives the one line naming the shipped models used (default: stderr).

    Returns
    -------
    (str, str or None)
    """
    say = say or (lambda line: print(line, file=sys.stderr))
    lines: list[str] = []
    name = None
    if model is None or str(model).strip() == "":
        m = default_model(APP, TASK)
        name = m.name if m is not None else None
        path = resolve_model(None, app=APP, task=TASK, say=lines.append)
    elif _is_name(str(model)):
        name = str(model)
        path = resolve_model(model, app=APP, task=TASK, say=lines.append)
    else:
        path = str(model)
        # The model's own mistakes (missing, no card, another app's) before those of the pipeline's options.
        model_card(path)
    if classifier is not None:
        if _is_name(str(classifier)):
            classifier = resolve_model(classifier, app=APP, task=AGGLO_TASK, say=lines.append)
    elif wants_classifier and name is not None:
        agglo = shipped(name).card.extra.get("agglo_model")
        if agglo:
            classifier = resolve_model(agglo, app=APP, task=AGGLO_TASK, say=None)
            if lines:
                lines[0] += f" with {agglo}"
    # Each demo model's warning once, after the line naming the models.
    for line in dict.fromkeys(lines):
        say(line)
    return path, classifier
