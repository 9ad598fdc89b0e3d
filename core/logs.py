"""Quiet by default: native libraries' start-up chatter goes to a log file, not the terminal.

TensorFlow's C++ runtime, CUDA probes and tools such as BWA write straight to
file descriptor 2, below Python, so Python's logging settings cannot silence
them. :func:`capture_native_stderr` points descriptor 2 at a log file while
Python's own ``sys.stderr`` (deepsci's messages, progress bars, tracebacks of
real bugs) keeps the terminal. A :class:`~deepsci.core.runs.RunDir` copies
what was captured into its folder's ``run.log``.
"""
from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["capture_native_stderr", "native_log", "quiet_python_logs", "note", "held_notes",
           "flush_notes"]

# Notes printed before a command's work begins (e.g. which shipped model it took) are held
# while a command runs, so that a mistake found before any work is its one error line.
_held: list[str] | None = None


def note(line: str) -> None:
    """Tell the user something on stderr: at once, or when the held notes are flushed."""
    if _held is None:
        print(line, file=sys.stderr)
    else:
        _held.append(line)


def flush_notes() -> None:
    """Print the held notes now (the work has begun: a progress bar, or the command ended)."""
    global _held
    if _held:
        for line in _held:
            print(line, file=sys.stderr)
        _held.clear()


@contextmanager
def held_notes() -> Iterator[None]:
    """Hold :func:`note` lines until :func:`flush_notes` or a normal end; drop them on an error.

    The CLI wraps each command in this: an error before any work is then the only line on
    stderr, as the error promise says; a run that ends or starts its work shows them.
    """
    global _held
    outer, _held = _held, []
    try:
        yield
        flush_notes()
    finally:
        _held = outer

_LOG: Path | None = None


def native_log() -> Path | None:
    """The file native stderr is captured in, or ``None`` when it is not captured."""
    return _LOG


def quiet_python_logs() -> None:
    """Silence TensorFlow's, absl's and Python warnings' routine messages (``-v`` skips this)."""
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("tensorflow", "absl", "h5py", "distributed", "numexpr"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


@contextmanager
def capture_native_stderr() -> Iterator[Path | None]:
    """Send descriptor 2 to a temporary log while ``sys.stderr`` keeps the terminal.

    Yields the log's path. The log is removed at exit unless the block raised
    something other than ``SystemExit`` (a bug), when its path is printed.
    """
    global _LOG
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a daemon): nothing to capture
        yield None
        return
    fd, name = tempfile.mkstemp(prefix="deepsci-native-", suffix=".log")
    old_stderr = sys.stderr
    sys.stderr.flush()
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    os.dup2(fd, 2)
    os.close(fd)
    _LOG = Path(name)
    keep = False
    try:
        yield _LOG
    except SystemExit:
        raise
    except BaseException:
        keep = True
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr.close()
        sys.stderr = old_stderr
        log, _LOG = _LOG, None
        if keep and log.stat().st_size:
            print(f"native library log: {log}", file=sys.stderr)
        else:
            log.unlink(missing_ok=True)
