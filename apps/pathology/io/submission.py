"""Camelyon16 lesion submissions: one ``prob,X,Y`` CSV per slide (level-0 pixels)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deepsci.core.errors import InputError
from deepsci.core.io import atomic_path, reading

__all__ = ["submission_rows", "write_detections_csv", "read_detections_csv"]


def submission_rows(probs, xs, ys) -> list[tuple[float, int, int]]:
    """The values a submission holds: ``(prob to 6 decimals, X, Y rounded to level-0 pixels)``.

    The CSV and the QuPath detections (:mod:`.qupath`) are written from these, so both hold
    the same numbers.
    """
    return [(float(f"{float(p):.6f}"), int(round(float(x))), int(round(float(y))))
            for p, x, y in zip(probs, xs, ys, strict=True)]


def write_detections_csv(path: str | os.PathLike, probs, xs, ys) -> Path:
    """Camelyon16 lesion submission: one ``prob,X,Y`` line per detection (level-0 px), no header."""
    lines = [f"{p:.6f},{x},{y}" for p, x, y in submission_rows(probs, xs, ys)]
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines))
    return path


def read_detections_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a ``prob,X,Y`` CSV (an optional header line is skipped) -> (probs, xs, ys).

    Raises
    ------
    InputError
        The file is missing or not text, a line is not three numbers, a probability is
        not in [0, 1] (NaN included) or a coordinate is negative or not finite: such a
        file would otherwise be scored, wrongly, without a word.
    """
    path = Path(path)
    with reading(path, "a detection CSV (prob,X,Y lines)"):
        text = path.read_bytes().decode("utf-8")
    probs, xs, ys = [], [], []
    for n, line in enumerate(text.splitlines(), 1):
        parts = [p.strip() for p in line.split(",")]
        if not line.strip():
            continue
        try:
            p, x, y = float(parts[0]), float(parts[1]), float(parts[2])
        except (ValueError, IndexError):
            if n == 1:
                continue  # header
            raise InputError(f"expected 'prob,X,Y' numbers on line {n}, found {line[:60]!r}", path) from None
        if not 0.0 <= p <= 1.0:
            raise InputError(f"expected a probability in [0, 1] on line {n}, found {parts[0][:20]!r}", path)
        if not (np.isfinite(x) and np.isfinite(y) and x >= 0 and y >= 0 and max(x, y) < 2**53):
            raise InputError(f"expected level-0 pixel coordinates >= 0 on line {n}, found "
                             f"X={parts[1][:20]!r} Y={parts[2][:20]!r}", path)
        probs.append(p)
        xs.append(int(x))
        ys.append(int(y))
    return np.asarray(probs, float), np.asarray(xs, np.int64), np.asarray(ys, np.int64)
