"""Commands built from their configs: every default declared once, in the dataclass.

:func:`config_command` turns a config dataclass into a Typer command. Each
field (nested dataclasses flattened) becomes an option spelled from the field
name or its ``metadata["cli"]``, typed from its annotation and documented from
its ``metadata["help"]`` or the class's numpydoc ``Attributes``. Only the
fields a command lists as ``shown`` appear in ``--help`` (at most 15 options in
all); the others still work and are named on the help's last line. Every
command also takes the output group: ``--config run.json`` (re-run a recorded
run; options given on the command line override it), ``--overwrite``,
``--progress auto|on|off`` and ``-v``.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import typer

from .errors import ConfigError

__all__ = ["config_command", "RunOptions", "Field", "flatten_fields", "MAX_SHOWN", "OUTPUT_OPTIONS"]

#: Options every config command adds (the output group) besides ``--help``.
OUTPUT_OPTIONS = ("--config", "--overwrite", "--progress", "--verbose")
MAX_SHOWN = 15 - len(OUTPUT_OPTIONS) - 1
#: Spellings a config field cannot take (a nested one is prefixed with its parent's name).
RESERVED = ("config", "overwrite", "progress", "verbose", "help", "v")


@dataclass
class RunOptions:
    """The output group's values, handed to a command that asks for them."""

    config: Path | None = None
    overwrite: bool = False
    progress: str = "auto"
    verbose: bool = False


@dataclass
class Field:
    """One flattened config field."""

    path: tuple[str, ...]      # ("train", "learning_rate")
    param: str                 # python identifier: "train__learning_rate"
    cli: str                   # option name without dashes: "lr"
    kind: str                  # int|float|str|bool|path|ints|floats|strs
    optional: bool
    required: bool
    default: object
    help: str


def _numpydoc_attributes(cls) -> dict[str, str]:
    doc = inspect.getdoc(cls) or ""
    m = re.search(r"^Attributes\n-+\n(.*?)(?:\n\n[A-Z][a-z]+\n-+\n|\Z)", doc, re.S | re.M)
    if not m:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    for line in m.group(1).splitlines():
        if line and not line.startswith(" "):
            names = [n.strip() for n in line.split(":")[0].split(",")]
            for n in names:
                out.setdefault(n, "")
        elif line.strip() and names:
            for n in names:
                out[n] = (out[n] + " " + line.strip()).strip()
    return out


def _kind(hint) -> tuple[str, bool]:
    """(kind, optional) of a field's type hint."""
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else str
        origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "str", optional
    if origin in (tuple, list, Sequence):
        inner = (typing.get_args(hint) or (str,))[0]
        return {int: "ints", float: "floats"}.get(inner, "strs"), optional
    if hint in (tuple, list):
        return "strs", optional
    if hint is bool:
        return "bool", optional
    if hint is int:
        return "int", optional
    if hint is float:
        return "float", optional
    if hint in (Path, os.PathLike):
        return "path", optional
    return "str", optional


def _default_of(f: dataclasses.Field, parent_default):
    if parent_default is not None:
        return getattr(parent_default, f.name), False
    if f.default is not dataclasses.MISSING:
        return f.default, False
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory(), False
    return None, True


def flatten_fields(config_cls, *, _prefix=(), _default=None, _taken=None) -> list[Field]:
    """The command-line fields of ``config_cls``, nested dataclasses flattened."""
    hints = typing.get_type_hints(config_cls)
    docs = _numpydoc_attributes(config_cls)
    taken = set(RESERVED) if _taken is None else _taken
    out: list[Field] = []
    nested = []
    for f in dataclasses.fields(config_cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        hint = hints[f.name]
        default, required = _default_of(f, _default)
        if dataclasses.is_dataclass(hint):
            nested.append((f, hint, default))
            continue
        kind, optional = _kind(hint)
        cli = f.metadata.get("cli") or f.name.replace("_", "-")
        if cli in taken:
            if not _prefix:
                raise ValueError(f"Expected config fields whose options differ from the output "
                                 f"group's. Received: {f.name!r} in {config_cls.__name__}")
            cli = f"{_prefix[-1].replace('_', '-')}-{cli}"
        taken.add(cli)
        path = (*_prefix, f.name)
        out.append(Field(path=path, param="__".join(path), cli=cli, kind=kind,
                         optional=optional or default is None, required=required, default=default,
                         help=f.metadata.get("help") or docs.get(f.name, "")))
    for f, hint, default in nested:  # outer names first, so inner ones give way on a clash
        out.extend(flatten_fields(hint, _prefix=(*_prefix, f.name), _default=default, _taken=taken))
    return out


_PY_TYPES = {"int": int, "float": float, "bool": bool, "path": Path}


def _show_default(f: Field) -> str:
    if isinstance(f.default, (tuple, list)):
        return ",".join(str(v) for v in f.default)
    return f.default


def _parameter(f: Field, *, hidden: bool, argument: bool) -> inspect.Parameter:
    py = _PY_TYPES.get(f.kind, str)
    help_text = f.help or None
    if argument:
        info = typer.Argument(None, help=help_text, show_default=False, metavar=f.cli.upper())
        annotation = typing.Optional[py]  # noqa: UP045 - typer reads it
        if f.kind in ("ints", "floats", "strs"):  # a list field takes any number of values
            annotation = typing.Optional[list[str]]  # noqa: UP045
    elif f.kind == "bool":
        info = typer.Option(bool(f.default), f"--{f.cli}/--no-{f.cli}", help=help_text, hidden=hidden)
        annotation = bool
    else:
        default = f.default
        if f.kind in ("ints", "floats", "strs"):
            default = None if default is None else _show_default(f)
            py = str
        info = typer.Option(default, f"--{f.cli}", help=help_text, hidden=hidden)
        annotation = typing.Optional[py] if default is None else py  # noqa: UP045
    return inspect.Parameter(f.param, inspect.Parameter.KEYWORD_ONLY, default=info,
                             annotation=annotation)


def _convert(f: Field, value):
    if value is None:
        return None
    if f.kind in ("ints", "floats", "strs") and isinstance(value, (str, list, tuple)):
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
        else:  # a variadic argument: each value as given (paths may hold commas)
            parts = [str(v) for v in value]
        cast = {"ints": int, "floats": float, "strs": str}[f.kind]
        try:
            return tuple(cast(p) for p in parts) if f.kind != "strs" else parts
        except ValueError:
            noun = "integers" if f.kind == "ints" else "numbers"
            raise ConfigError(f"expected --{f.cli} as comma-separated {noun}, "
                              f"found {value!r}") from None
    if f.kind == "path":
        return str(value)
    return value


def _nest(flat: dict[tuple[str, ...], object]) -> dict:
    out: dict = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def _recorded(config_cls, path: Path) -> dict:
    from .io import config_to_dict
    from .runs import config_from_run

    return config_to_dict(config_from_run(path, config_cls))


def _lookup(data: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return dataclasses.MISSING
        data = data[key]
    return data


def build_config(config_cls, fields: list[Field], values: dict, given: set[str],
                 recorded: Path | None):
    """The config from defaults <- a recorded run <- the options given on the command line."""
    from .io import config_from_dict

    base = _recorded(config_cls, recorded) if recorded is not None else {}
    flat = {}
    for f in fields:
        value = values.get(f.param)
        if f.param in given or recorded is None:
            chosen = _convert(f, value) if f.param in given and value not in (None, [], ()) else (
                f.default if not f.required else None)
        else:
            chosen = _lookup(base, f.path)
            if chosen is dataclasses.MISSING:
                chosen = f.default
        if chosen is None and f.required:
            raise ConfigError(f"expected {f.cli.upper() if f.kind != 'bool' else '--' + f.cli} "
                              f"(or --config run.json), found none")
        if isinstance(chosen, list) and f.kind in ("ints", "floats"):
            chosen = tuple(chosen)
        flat[f.path] = chosen
    return config_from_dict(config_cls, _nest(flat))


def _apply_output_group(opts: RunOptions) -> None:
    if opts.progress not in ("auto", "on", "off"):
        raise ConfigError(f"expected --progress auto|on|off, found {opts.progress!r}")
    os.environ["DEEPSCI_PROGRESS"] = {"auto": os.environ.get("DEEPSCI_PROGRESS", "auto"),
                                      "on": "1", "off": "0"}[opts.progress]
    if opts.verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        os.environ["DEEPSCI_VERBOSE"] = "1"


def _output_parameters() -> list[inspect.Parameter]:
    kw = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter("_config", kw, annotation=typing.Optional[Path],  # noqa: UP045
                          default=typer.Option(None, "--config", help="Re-run a recorded run: its "
                                               "run.json; options given here override it.")),
        inspect.Parameter("_overwrite", kw, annotation=bool, default=typer.Option(
            False, "--overwrite", help="Replace a finished run's outputs.")),
        inspect.Parameter("_progress", kw, annotation=str, default=typer.Option(
            "auto", "--progress", help="auto (on a terminal) | on | off.")),
        inspect.Parameter("_verbose", kw, annotation=bool, default=typer.Option(
            False, "--verbose", "-v", help="Show library and TensorFlow logs.")),
    ]


def config_command(app: typer.Typer, config_cls, *, name: str, shown: Sequence[str] = (),
                   arguments: Sequence[str] = (), help: str | None = None,  # noqa: A002
                   exclude: Sequence[str] = ()) -> Callable:
    """Register ``func(cfg[, opts])`` as command ``name`` of ``app``, built from ``config_cls``.

    Parameters
    ----------
    app : typer.Typer
    config_cls : dataclass type
        Has ``validate() -> self``; its fields are the command's options.
    name : str
    shown : sequence of str
        Fields (dotted paths or CLI names) listed in ``--help``; at most
        :data:`MAX_SHOWN`. The rest are hidden but work.
    arguments : sequence of str
        Fields taken as positional arguments.
    help : str, optional
        The command's help (default: the function's docstring).
    exclude : sequence of str
        Fields that are not options (set by the command itself).
    """
    fields = [f for f in flatten_fields(config_cls)
              if ".".join(f.path) not in exclude and f.cli not in exclude]
    by_name = {**{".".join(f.path): f for f in fields}, **{f.cli: f for f in fields}}
    unknown = [s for s in (*shown, *arguments) if s not in by_name]
    if unknown:
        raise ValueError(f"Expected fields of {config_cls.__name__}. Received: {unknown}")
    shown_set = {by_name[s].param for s in shown}
    arg_set = {by_name[s].param for s in arguments}
    if len(shown_set - arg_set) > MAX_SHOWN:
        raise ValueError(f"Expected at most {MAX_SHOWN} shown options. Received: {len(shown_set)}")

    def decorator(func: Callable) -> Callable:
        wants_opts = len(inspect.signature(func).parameters) > 1
        hidden = [f for f in fields if f.param not in shown_set and f.param not in arg_set]
        epilog = ("More options (rarely needed; also settable in a --config run.json): "
                  + ", ".join(f"--{f.cli}" for f in hidden)) if hidden else None

        def command(ctx: typer.Context, **kwargs):
            from typer._click.core import ParameterSource

            opts = RunOptions(config=kwargs.pop("_config"), overwrite=kwargs.pop("_overwrite"),
                              progress=kwargs.pop("_progress"), verbose=kwargs.pop("_verbose"))
            _apply_output_group(opts)
            given = {p for p in kwargs if ctx.get_parameter_source(p) in
                     (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
            cfg = build_config(config_cls, fields, kwargs, given, opts.config).validate()
            return func(cfg, opts) if wants_opts else func(cfg)

        args = [f for f in fields if f.param in arg_set]
        args.sort(key=lambda f: [by_name[a].param for a in arguments].index(f.param))
        params = _output_parameters()
        params[1:1] = [_parameter(f, hidden=False, argument=True) for f in args]
        params += [_parameter(f, hidden=f.param not in shown_set, argument=False)
                   for f in fields if f.param not in arg_set]
        params.sort(key=lambda p: p.kind)
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__doc__ = help or func.__doc__
        command.__name__ = func.__name__
        app.command(name=name, epilog=epilog)(command)
        return func

    return decorator
