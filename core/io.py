"""Outputs that are never half-written, and the records written beside them.

Every file deepsci writes goes to a temporary name in the destination folder
and is renamed into place only when complete, so an interrupted run leaves
either the old file or no file — never a truncated one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

__all__ = [
    "atomic_path",
    "atomic_dir",
    "write_text",
    "write_json",
    "read_json",
    "config_to_dict",
    "config_from_dict",
    "save_figure",
    "reading",
    "remove_stale_temporaries",
]


def _tmp_name(path: Path) -> Path:
    # Same folder so the final rename is atomic; same suffix so libraries that
    # pick a format by extension (zarr, PNG, .keras, .vcf.gz) still work.
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{''.join(path.suffixes)}",
                                dir=path.parent)
    os.close(fd)
    os.unlink(name)
    return Path(name)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(out) as tmp:
    ...     _ = tmp.write_text("done")
    >>> out.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Like :func:`atomic_path` for a directory (zarr stores, shard folders).

    An existing directory at ``path`` is replaced only once the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            old = _tmp_name(path)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _jsonable(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return config_to_dict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically (dataclasses, paths, numpy allowed)."""
    return write_text(path, json.dumps(obj, indent=2, default=_jsonable, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike):
    """Read a JSON file, raising :class:`InputError` when it is missing or malformed.

    A folder, a binary file, a file that is not UTF-8 and one that cannot be
    read are each one line naming the file, like a syntax error.
    """
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise InputError("expected a JSON file, found no file", path) from None
    except IsADirectoryError:
        raise InputError("expected a JSON file, found a folder", path) from None
    except json.JSONDecodeError as e:
        raise InputError(f"expected valid JSON, found a syntax error at line {e.lineno}", path) from None
    except UnicodeDecodeError:
        raise InputError("expected a JSON file (UTF-8 text), found binary data", path) from None
    except RecursionError:  # "[[[[..." nested deeper than the parser's stack
        raise InputError("expected valid JSON, found nesting too deep to read", path) from None
    except OSError as e:
        raise InputError(f"expected a readable JSON file, found {e.strerror or e}", path) from None


def config_to_dict(config) -> dict:
    """A dataclass config as a plain JSON-ready dict (nested dataclasses too)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=_jsonable))


def _type_name(hint) -> str | None:
    """What a recorded value of type ``hint`` must be, in words; ``None``: not checked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + "|".join(map(str, args))
    if origin in (tuple, list) or hint in (tuple, list) or origin is typing.get_origin(
            typing.Sequence[int]):
        return "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "text",
            Path: "a path (text)", os.PathLike: "a path (text)"}.get(hint)


def _fits(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if _type_name(hint) == "a list":
        if not isinstance(value, (list, tuple)):
            return False
        inner = [a for a in args if a is not Ellipsis]
        return len(inner) != 1 or all(_fits(v, inner[0]) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (str, Path, os.PathLike):
        return isinstance(value, (str, os.PathLike))
    return True  # a type this check does not know: the config's validate() decides


def _check_field(cls, f, value, hint, path) -> None:
    # A recorded run's values come from a file the user may have edited: a wrong type
    # must be one line here, not a TypeError deep inside the command.
    if value is None and f.default is None:
        return
    if not _fits(value, hint):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        what = _type_name(hint) or (_type_name(args[0]) if len(args) == 1 else None) or "another type"
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise InputError(f"expected {cls.__name__}.{f.name} as {what}, found {shown}", path)


def config_from_dict(cls, data: dict, path=None):
    """Rebuild dataclass ``cls`` from :func:`config_to_dict` output; unknown keys are an error.

    With ``path`` (the data came from a user's file) every value must also fit
    its field's type: a wrong one is an :class:`InputError` naming the field.
    """
    if not isinstance(data, dict):
        raise InputError(f"expected a config of {cls.__name__} (JSON object), "
                         f"found {type(data).__name__}", path)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"expected fields of {cls.__name__}, found unknown {unknown}", path)
    kwargs = {}
    for key, value in data.items():
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint) and (isinstance(value, dict) or path is not None):
            if not isinstance(value, dict):
                raise InputError(f"expected {cls.__name__}.{key} as an object, found "
                                 f"{type(value).__name__}", path)
            value = config_from_dict(hint, value, path)
        else:
            if path is not None and hint is not None:
                _check_field(cls, fields[key], value, hint, path)
            if isinstance(value, list) and (hint is tuple or typing.get_origin(hint) is tuple):
                value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field missing from the record
        if path is None:
            raise
        raise InputError(f"expected a complete config of {cls.__name__}, found {e}", path) from None


def save_figure(fig, path: str | os.PathLike, *, dpi: int | None = None) -> Path:
    """Save a matplotlib figure as PNG atomically, close it, and return the path.

    ``dpi=None`` keeps the figure's own resolution.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi if dpi is not None else "figure", format="png")
    finally:
        plt.close(fig)
    return path


#: Exceptions that libraries raise on a damaged or mis-typed file (codecs, zip, gzip, TIFF, HDF5).
DECODE_ERRORS = (OSError, EOFError, ValueError, UnicodeDecodeError, KeyError, IndexError,
                 RuntimeError, __import__("zlib").error)


@contextmanager
def reading(path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Turn a library's decoding error inside the block into one line naming the file.

    Examples
    --------
    >>> import tempfile, gzip, pathlib
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "calls.tsv.gz"
    >>> _ = bad.write_text("not gzip")
    >>> with reading(bad, "a gzip-compressed table"):
    ...     _ = gzip.open(bad).read()
    Traceback (most recent call last):
    ...
    deepsci.core.errors.InputError: expected a gzip-compressed table, found a file that does not decode: Not a gzipped file (b'no') (...calls.tsv.gz)
    """
    path = Path(path)
    try:
        yield path
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"expected {what}, found no file", path) from None
    except IsADirectoryError:
        raise InputError(f"expected {what}, found a folder", path) from None
    except DECODE_ERRORS as e:
        text = str(e).strip()
        first = text.splitlines()[0][:160] if text else type(e).__name__
        raise InputError(f"expected {what}, found a file that does not decode: {first}", path) from None


def remove_stale_temporaries(folder: str | os.PathLike, *, stem: str | None = None) -> list[Path]:
    """Remove temporaries an interrupted run left in ``folder``; return what was removed.

    :func:`atomic_path` names them ``.<stem>.<random>.tmp<suffixes>``. Only
    names of that form are touched (those of ``stem`` alone when given); a
    rerun of the same command calls this before it writes.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    pattern = f".{stem}.*.tmp*" if stem else ".*.*.tmp*"
    for p in folder.glob(pattern):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed
