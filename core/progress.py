"""Progress bars with rate and ETA for long work (tqdm on stderr)."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from tqdm.auto import tqdm

__all__ = ["progress", "enabled"]


def enabled() -> bool:
    """Whether progress bars are shown.

    ``DEEPSCI_PROGRESS``: ``1``/``on`` always, ``0``/``off`` never, unset or
    ``auto`` only when stderr is a terminal (a log file gets no bar lines).
    """
    value = os.environ.get("DEEPSCI_PROGRESS", "auto").lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool | None = None,
    initial: int = 0,
) -> tqdm:
    """Wrap ``iterable`` (or count manually) with a bar showing rate and ETA.

    Parameters
    ----------
    iterable : iterable, optional
        Items to iterate; omit and call ``.update(n)`` to count by hand.
    total : int, optional
        Expected number of items, needed for the ETA when it cannot be inferred.
    desc, unit : str
        Label and unit shown in the bar, e.g. ``desc="train", unit="step"``.
    disable : bool, optional
        Force the bar off; by default it follows :func:`enabled`.
    initial : int
        Starting count (a resumed run starts where it left off).
    """
    from .logs import flush_notes

    flush_notes()                # work begins: the notes held before it are due now
    if disable is None:
        disable = not enabled()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=disable,
        initial=initial,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
        smoothing=0.1,
    )
