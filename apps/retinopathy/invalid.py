"""The rule for a user's unreadable photographs, and the output folder's guard.

Every command that reads photographs in bulk (``preprocess``, ``train``,
``predict``, ``evaluate``, ``explain``) applies :func:`refuse_invalid`: an
unreadable, corrupt or oversized file is an error naming it; with
``--skip-invalid`` it is skipped, counted and named in the outputs
(:func:`skipped_list`), and it is still an error when nothing readable is
left. :func:`removed_on_error` keeps a refused run from leaving a half-made
output folder or writing into another command's.
"""
from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from deepsci.core.errors import ConfigError, InputError


def refuse_invalid(df: pd.DataFrame, *, skip_invalid: bool) -> pd.DataFrame:
    """Apply the rule for unreadable photographs to a :func:`preprocess_table` table.

    Without ``skip_invalid`` the first unreadable file is an error naming it;
    with it the unreadable rows stay in the table (``skipped`` holds the
    reason) for the command to list, and it is still an error when no
    readable photograph is left. A readable photograph of poor quality is
    not an input error: it stays flagged ungradable.

    Returns
    -------
    pandas.DataFrame
        ``df`` plus the column ``skipped`` ("" for every readable row).

    Raises
    ------
    InputError
    """
    bad = (df["error"] != "").to_numpy()
    if bad.any() and not skip_invalid:
        first = df[bad].iloc[0]
        more = int(bad.sum()) - 1
        hint = f"; {more} more unreadable" if more else ""
        raise InputError(f"{first['error']}{hint} (--skip-invalid skips unreadable photographs)",
                         first["path"])
    if len(df) and bad.all():
        raise InputError(f"expected at least one readable photograph, found none ({len(df)} "
                         "unreadable, skipped)", df["path"].iloc[0])
    return df.assign(skipped=df["error"])


def skipped_list(df: pd.DataFrame) -> list[dict]:
    """The rows :func:`refuse_invalid` kept as skipped: ``[{"image", "path", "reason"}]``."""
    rows = df[df.get("skipped", pd.Series("", index=df.index)) != ""]
    return [{"image": str(r["image"]), "path": str(r["path"]), "reason": str(r["skipped"])}
            for _, r in rows.iterrows()]


@contextmanager
def removed_on_error(out: str | Path, command: str):
    """Guard the output folder of one ``command`` (e.g. ``"retinopathy predict"``).

    An ``out`` holding another command's ``run.json`` (a model folder given as
    predict's ``--out``) is refused, with or without ``--overwrite``. And
    :class:`~deepsci.core.runs.RunDir` keeps a folder that holds files, so a
    run refused after caching photographs inside its own new folder would
    leave a half-made output: ``out`` is removed when this run created it and
    failed on the user's input. A folder that existed (a resumed run), or one
    with finished steps, is left alone.
    """
    out = Path(out)
    record = out / "run.json"
    if record.is_file():
        try:
            found = json.loads(record.read_bytes().decode("utf-8")).get("command")
        except (ValueError, AttributeError, OSError):
            found = "unreadable"
        if found != command:
            raise InputError(f"expected a new folder or a {command!r} run as --out, found a "
                             f"{found!r} run", out)
    if (out / "ensemble.json").is_file() and command not in ("retinopathy train",
                                                              "retinopathy distill"):
        # Writing here would mix outputs into a model, and --overwrite would remove it.
        raise InputError("expected a new folder as --out, found a model folder (ensemble.json)",
                         out)
    existed = out.exists()
    try:
        yield
    except (InputError, ConfigError):
        state = out / ".state"
        if not existed and out.is_dir() and not (state.is_dir() and any(state.iterdir())):
            shutil.rmtree(out, ignore_errors=True)
        raise
