"""The shipped patch classifier: ``--model`` by name or omitted, and the demo-model warning.

The shipped model (``pathology-synthetic-demo``) was trained on deepsci's
synthetic slides only. Its warning is printed only when it is run on a slide
that deepsci did not synthesise: :func:`.synth.write_slide` puts
``{"deepsci_synthetic": ...}`` in level 0's TIFF ImageDescription, and
:func:`is_synthetic_slide` looks for it.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from deepsci.core.models.registry import resolve_model

from .model import APP, TASK
from .synth import SYNTH_MARKER

__all__ = ["is_synthetic_slide", "resolve_patch_model"]


def is_synthetic_slide(path: str | Path) -> bool:
    """Whether ``path`` is a slide written by deepsci's ``pathology synth`` (its TIFF marker)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            desc = tif.pages[0].description or ""
    except (OSError, tifffile.TiffFileError, IndexError):
        return False  # not a TIFF (e.g. .svs read by OpenSlide): a real slide
    try:
        meta = json.loads(desc)
    except json.JSONDecodeError:
        return False
    return isinstance(meta, dict) and SYNTH_MARKER in meta


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def resolve_patch_model(spec: str | None, slides: Iterable[str | Path], *,
                        say: Callable[[str], None] | None = _stderr) -> str:
    """``--model`` (a path, a shipped name, or ``None`` for the default) -> the model file.

    Parameters
    ----------
    spec : str or None
        What the user gave.
    slides : iterable of path
        The slides it will run on: the demo-model warning is said only when one
        of them is not a deepsci synthetic slide.
    say : callable or None
        Receives the one line naming the shipped model (stderr by default).

    Raises
    ------
    InputError
        No default ships, the name is unknown, or it names another app's model.
    """
    say = say or (lambda line: None)
    lines: list[str] = []
    path = resolve_model(spec, app=APP, task=TASK, say=lines.append)
    real = [s for s in slides if not is_synthetic_slide(s)]
    for line in lines:
        if line.startswith("warning:"):
            if real:
                say(f"{line} (e.g. {Path(real[0]).name})")
        else:
            say(line)
    return path
