"""One output folder, one record: every deepsci run writes exactly one ``run.json``.

:class:`RunDir` owns a run's output location. It refuses locations that would
replace something of another kind, creates the folder, keeps the resume
markers, and on exit writes ``run.json``: the resolved config (with its class,
so ``deepsci <app> <verb> --config run.json`` rebuilds it), the command line,
library versions, the machine, the input files with their sizes, the results
and the timing of each stage. A chained command (``variants run``) records
its stages inside the same file instead of overwriting one file per stage.
A run that fails leaves no empty folder behind, and under multi-worker
training only the chief writes.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError, InputError
from .io import config_from_dict, config_to_dict, read_json, remove_stale_temporaries, write_json

__all__ = ["RunDir", "StageRecord", "check_output_location", "RUN_SCHEMA", "is_chief", "read_run", "config_from_run",
           "run_record_path"]

RUN_SCHEMA = "deepsci.run/1"
STATE = ".state"
# Libraries whose versions change results; recorded when the run has imported them.
_LIBRARIES = ("numpy", "tensorflow", "keras", "scipy", "pandas", "skimage", "sklearn", "rdkit",
              "pysam", "zarr", "openslide", "dask", "pyscf")


def is_chief() -> bool:
    """Whether this process writes a run's outputs.

    True alone and for the chief of a ``TF_CONFIG`` cluster (or worker 0 when
    the cluster has no chief). Reads ``TF_CONFIG`` without importing TensorFlow.
    """
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError("expected TF_CONFIG as JSON, found text that does not parse") from None
    task = spec.get("task") or {}
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind in (None, "chief"):
        return True
    has_chief = "chief" in (spec.get("cluster") or {})
    return kind == "worker" and index == 0 and not has_chief


def run_record_path(out: str | os.PathLike, *, file_output: bool = False) -> Path:
    """Where the record of a run writing ``out`` lives."""
    out = Path(out)
    return out.with_name(out.name + ".run.json") if file_output else out / "run.json"


@dataclasses.dataclass
class StageRecord:
    """One stage of a chained run: its config, results and seconds."""

    name: str
    config: dict | None = None
    results: dict = dataclasses.field(default_factory=dict)
    seconds: float | None = None

    def record(self, **results) -> None:
        """Merge ``results`` into the stage's results."""
        self.results.update(results)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _config_dict(config) -> dict | None:
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return config_to_dict(config)
    return dict(config)


def _config_class(config) -> str | None:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return f"{type(config).__module__}:{type(config).__qualname__}"
    return None


def _versions() -> dict:
    from . import __version__

    out = {"deepsci": __version__, "python": platform.python_version()}
    for name in _LIBRARIES:
        mod = sys.modules.get(name)
        version = getattr(mod, "__version__", None) if mod is not None else None
        if version:
            out[name] = str(version)
    return out


def _machine() -> dict:
    info = {"host": socket.gethostname(), "platform": platform.platform(),
            "cpu_count": os.cpu_count()}
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            info["devices"] = [d.device_type for d in tf.config.list_logical_devices()]
        except RuntimeError:  # pragma: no cover - devices not initialised yet
            pass
    return info


def _size(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return None


def refuse_existing_file(path: str | os.PathLike, *, overwrite: bool,
                         what: str = "output file") -> None:
    """A finished file output is the user's result: replaced only with ``--overwrite``.

    Raises
    ------
    InputError
        ``expected a new <what>, found an existing file (pass --overwrite to replace it)``.
    """
    if not overwrite and Path(path).exists():
        raise InputError(f"expected a new {what}, found an existing file (pass --overwrite "
                         "to replace it)", path)


def check_output_location(out: str | os.PathLike, *, file_output: bool = False) -> None:
    """Refuse an output path that cannot be written without replacing something of another kind.

    ``out`` must not be a file (a folder output) or a folder (a file output),
    and the nearest existing folder above it must be a writable folder.

    Raises
    ------
    InputError
        Naming the offending path: ``expected an output folder, found a file``,
        ``expected a folder on the output path, found a file`` and so on.
    """
    out = Path(out)
    if file_output:
        if out.is_dir():
            raise InputError("expected an output file, found a folder", out)
        parent = out.parent
    else:
        if out.exists() and not out.is_dir():
            raise InputError("expected an output folder, found a file", out)
        parent = out
    probe = parent
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError("expected a folder on the output path, found a file", probe)
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise InputError("expected a writable output location, found one without write "
                         "permission", probe)


#: Folders a rerun goes on from besides the markers: the core training loop's checkpoints
#: (core.training.checkpoint; distill trains in train/) and a distillation's teacher outputs.
RESUMABLE = ("checkpoints", "train/checkpoints", "teacher-cache")


class RunDir:
    """The output location of one run and its single ``run.json``.

    Parameters
    ----------
    out : path
        The output folder, or the output file when ``file_output``.
    command : str
        The command that runs, e.g. ``"molecules train"``.
    config : dataclass, optional
        The resolved, validated config (recorded with its class).
    inputs : sequence of paths
        The user's input files and folders (recorded with their sizes).
    overwrite : bool
        Remove a finished run's folder at ``out`` first; without it a rerun
        resumes from the markers an earlier attempt left.
    file_output : bool
        ``out`` is a file; its record is ``<out>.run.json`` beside it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with RunDir(out, command="demo test", config={"n": 3}) as run:
    ...     _ = run.file("a.txt").write_text("x")
    ...     run.record(score=0.5)
    >>> read_run(out / "run.json")["results"]
    {'score': 0.5}
    """

    def __init__(self, out: str | os.PathLike, *, command: str, config=None,
                 inputs: Sequence[str | os.PathLike] = (), overwrite: bool = False,
                 file_output: bool = False):
        self.out = Path(out)
        self.command = command
        self.config = config
        self.inputs = [Path(p) for p in inputs if p is not None]
        self.overwrite = overwrite
        self.file_output = file_output
        self.stages: dict[str, dict] = {}
        self.results: dict = {}
        self._created = False
        self._replaced: Path | None = None
        self._private: Path | None = None
        self._t0 = 0.0
        self._started = ""
        self.chief = is_chief()

    # -- location -----------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The folder this run writes into."""
        if self._private is not None:
            return self._private
        return self.out.parent if self.file_output else self.out

    @property
    def record_path(self) -> Path:
        """The run's ``run.json`` (``<file>.run.json`` for a file output)."""
        if self._private is not None:
            return self._private / "run.json"
        return run_record_path(self.out, file_output=self.file_output)

    @property
    def state_dir(self) -> Path:
        """Resume markers of this run."""
        if self.file_output:
            return self.path / f".{self.out.name}.state"
        return self.path / STATE

    def file(self, name: str) -> Path:
        """A path inside the output folder."""
        return self.path / name

    def _check_location(self) -> None:
        check_output_location(self.out, file_output=self.file_output)

    def _finished(self) -> bool:
        rec = self.record_path
        if not rec.exists():
            return False
        try:
            return json.loads(rec.read_text()).get("status") == "done"
        except (OSError, ValueError):
            return False

    def _has_markers(self) -> bool:
        """Something a rerun goes on from: resume markers, training checkpoints (a finished
        run asked for more epochs continues from its last one) or a teacher cache."""
        if self.state_dir.is_dir() and any(self.state_dir.iterdir()):
            return True
        return any((self.path / d).is_dir() and any((self.path / d).iterdir()) for d in RESUMABLE)

    # -- context ------------------------------------------------------------------
    def __enter__(self) -> RunDir:
        self._t0 = time.perf_counter()
        self._started = _now()
        if not self.chief:
            self._private = Path(tempfile.mkdtemp(prefix="deepsci-worker-"))
            return self
        self._check_location()
        self._replaced = None
        if not self.file_output and self._finished():
            if self.overwrite:
                self._set_aside()
            elif not self._has_markers():
                # Nothing to resume: running again would replace every output of the
                # finished run, which only --overwrite may do.
                raise InputError("expected a new output folder, found a finished run "
                                 "(pass --overwrite to replace it)", self.out)
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        # An interrupted earlier attempt's half-written files never survive a rerun.
        remove_stale_temporaries(self.path, stem=self.out.stem if self.file_output else None)
        return self

    def _set_aside(self) -> None:
        """Move a finished run out of the way; it comes back if the new run produces nothing."""
        parent = self.out.parent
        # A set-aside folder a killed attempt left behind is stale by now.
        remove_stale_temporaries(parent, stem=self.out.name)
        self._replaced = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp-replaced",
                                               dir=parent))
        os.replace(self.out, self._replaced / "run")

    def _settle_replaced(self, keep_new: bool) -> None:
        if self._replaced is None:
            return
        if not keep_new and not self.out.exists():
            os.replace(self._replaced / "run", self.out)
        shutil.rmtree(self._replaced, ignore_errors=True)
        self._replaced = None

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            return
        self._copy_native_log()
        if exc_type is None:
            self._write("done")
            if self.state_dir.exists() and not any(self.state_dir.iterdir()):
                self.state_dir.rmdir()
            self._settle_replaced(keep_new=True)
            return
        if self._created and self._holds_nothing():
            shutil.rmtree(self.path, ignore_errors=True)
            self._settle_replaced(keep_new=False)
        else:
            self._settle_replaced(keep_new=True)
            if self._has_markers():
                self._write("failed", error=f"{exc_type.__name__}: {exc}")

    def _copy_native_log(self) -> None:
        from .logs import native_log

        log = native_log()
        if log is None or not log.exists() or not log.stat().st_size or not self.path.exists():
            return
        with open(log, "rb") as src, open(self.path / "run.log", "ab") as dst:
            dst.write(src.read())
        log.write_bytes(b"")

    def _holds_nothing(self) -> bool:
        if not self.path.exists():
            return True
        return all(p.name in ("run.json", "run.log", STATE) and (p.is_file() or not any(p.iterdir()))
                   for p in self.path.iterdir())

    def _write(self, status: str, **extra) -> None:
        record = {
            "schema": RUN_SCHEMA, "command": self.command, "status": status,
            "config_class": _config_class(self.config), "config": _config_dict(self.config),
            "argv": list(sys.argv), "versions": _versions(), "machine": _machine(),
            "inputs": [{"path": str(p), "bytes": _size(p)} for p in self.inputs],
            "started": self._started, "finished": _now(),
            "seconds": round(time.perf_counter() - self._t0, 3),
            "stages": self.stages, "results": self.results, **extra,
        }
        write_json(self.record_path, record)

    # -- contents -----------------------------------------------------------------
    def record(self, **results) -> None:
        """Merge ``results`` into ``run.json["results"]``."""
        self.results.update(results)

    @contextmanager
    def stage(self, name: str, config=None) -> Iterator[StageRecord]:
        """Time one stage of a chained run and keep its config and results."""
        rec = StageRecord(name=name, config=_config_dict(config))
        t0 = time.perf_counter()
        yield rec
        rec.seconds = round(time.perf_counter() - t0, 3)
        self.stages[name] = {"config": rec.config, "seconds": rec.seconds, "results": rec.results}

    def _marker_file(self, key: str) -> Path:
        from .parallel import marker_path

        return marker_path(self.state_dir, key)

    def done(self, key: str) -> bool:
        """Whether the step ``key`` finished in this or an earlier attempt."""
        return self._marker_file(key).exists()

    def mark(self, key: str, result: dict | None = None) -> None:
        """Record that the step ``key`` finished (atomically)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_json(self._marker_file(key), {"result": result})

    def marker(self, key: str) -> dict | None:
        """The result stored by :meth:`mark`, or ``None`` when ``key`` has not finished."""
        path = self._marker_file(key)
        return read_json(path)["result"] if path.exists() else None


def read_run(path: str | os.PathLike) -> dict:
    """Read and check a ``run.json`` (or ``<file>.run.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "run.json"
    data = read_json(path)
    if not isinstance(data, dict) or data.get("schema") != RUN_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"expected a deepsci run record ({RUN_SCHEMA}), found {found!r}", path)
    return data


def config_from_run(path: str | os.PathLike, config_cls=None):
    """The config recorded in a run, rebuilt as its dataclass.

    ``config_cls`` defaults to the recorded class; when given, a record of
    another class is an error (a ``molecules train`` record given to
    ``variants train``).
    """
    data = read_run(path)
    recorded = data.get("config_class")
    if recorded is not None and not isinstance(recorded, str):
        raise InputError(f"expected the run record's config_class as text, found {recorded!r}", path)
    if config_cls is None:
        if not recorded:
            raise InputError("expected a run record with a config class, found none", path)
        module, _, qual = recorded.partition(":")
        config_cls = getattr(importlib.import_module(module), qual)
    elif recorded and recorded.split(":")[-1] != config_cls.__qualname__:
        raise InputError(f"expected a run record of {config_cls.__qualname__} "
                         f"({data.get('command')!r} is another command's)", path)
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise InputError(f"expected the run record's config as an object, found "
                         f"{type(config).__name__}", path)
    return config_from_dict(config_cls, config, path)
