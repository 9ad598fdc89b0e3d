"""Config fields that carry their own help and valid range, checked in one place.

A config dataclass declares each option once::

    batch_size: int = option(32, "Examples per step (all replicas).", min=1)

and its ``validate()`` calls :func:`check_ranges`, which reports the first
field out of range as ``expected --batch-size >= 1, found 0`` (the CLI
spelling of the field, as :func:`deepsci.core.cli.config_command` makes it).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from .errors import ConfigError

__all__ = ["option", "check_ranges", "check_choice"]


def option(default=dataclasses.MISSING, help: str = "", *, min=None, max=None,  # noqa: A002
           min_exclusive: bool = False, max_exclusive: bool = False, choices: Sequence | None = None, cli: str | None = None,
           factory=None):
    """A dataclass field with CLI help, spelling and valid range in its metadata."""
    meta = {"help": help}
    for key, value in (("min", min), ("max", max), ("choices", choices), ("cli", cli)):
        if value is not None:
            meta[key] = tuple(value) if key == "choices" else value
    if min_exclusive:
        meta["min_exclusive"] = True
    if max_exclusive:
        meta["max_exclusive"] = True
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _name(f: dataclasses.Field, prefix: str) -> str:
    return "--" + (f.metadata.get("cli") or f"{prefix}{f.name}".replace("_", "-"))


def check_choice(name: str, value, choices: Sequence) -> None:
    """ConfigError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"expected {name} {'|'.join(map(str, choices))}, found {value!r}")


def check_ranges(config, *, prefix: str = "") -> None:
    """Check every field's ``min``/``max``/``choices`` metadata (nested configs too).

    ``None`` passes (an unset optional); NaN never passes a range.
    """
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_ranges(value)
            continue
        meta = f.metadata
        if value is None:
            continue
        name = _name(f, prefix)
        if "choices" in meta:
            check_choice(name, value, meta["choices"])
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if ("min" in meta or "max" in meta) and isinstance(v, (int, float)) and not isinstance(v, bool):
                if isinstance(v, float) and math.isnan(v):
                    raise ConfigError(f"expected {name} a number, found nan")
                lo, hi = meta.get("min"), meta.get("max")
                if lo is not None and (v <= lo if meta.get("min_exclusive") else v < lo):
                    op = ">" if meta.get("min_exclusive") else ">="
                    raise ConfigError(f"expected {name} {op} {lo}, found {v}")
                if hi is not None and (v >= hi if meta.get("max_exclusive") else v > hi):
                    op = "<" if meta.get("max_exclusive") else "<="
                    raise ConfigError(f"expected {name} {op} {hi}, found {v}")
