"""A killed ``retinopathy preprocess`` resumes to the same outputs (issue #19).

The command runs as a child process (``python -m deepsci.apps.cli``) on the
session's tiny synthetic set and is SIGKILLed twice: once as soon as its first
cache entry exists, once when about half the photographs are cached. The
third, uninterrupted run must exit 0 and leave exactly what a clean run in
another folder leaves: the same cached PNGs (bytes), the same ``quality.csv``
(with each cache path taken relative to its own run folder) and the same
``run.json`` results; only ``run.json``'s timestamps, timings, argv and output
paths may differ. No temporary file (``.…tmp…``) and no process naming the
output folder may survive.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from deepsci.apps.cli import main


def _command(labels: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "deepsci.apps.cli", "retinopathy", "preprocess", "--labels",
            str(labels), "--out", str(out), "--size", "32", "--workers", "1"]


def _env() -> dict:
    return {**os.environ, "DEEPSCI_PROGRESS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _kill_when(cmd: list[str], cache: Path, n_entries: int, timeout: float = 60.0) -> int:
    """Start ``cmd``, SIGKILL it once ``cache`` holds ``n_entries`` finished entries (.json);
    return how many there were when it died (the run may also finish first)."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if cache.is_dir() and len(list(cache.glob("*.json"))) >= n_entries:
                break
            time.sleep(0.01)
        # The whole group: a child the command started must not outlive it either.
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    return len(list(cache.glob("*.json"))) if cache.is_dir() else 0


def _outputs(out: Path) -> tuple[dict, pd.DataFrame, dict]:
    """The cached PNGs by name, quality.csv with run-relative cache paths, run.json results."""
    pngs = {p.name: p.read_bytes() for p in sorted((out / "cache").glob("*.png"))}
    q = pd.read_csv(out / "quality.csv", dtype=str, keep_default_na=False)
    q["cache"] = [str(Path(c).relative_to(out)) if c else "" for c in q["cache"]]
    return pngs, q, json.loads((out / "run.json").read_text())


def _survivors(out: Path) -> list[int]:
    """Processes whose command line names ``out`` (from /proc; psutil is not required)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(out) in cmdline:
            found.append(int(d.name))
    return found


def test_killed_preprocess_resumes_to_the_same_outputs(tiny, tmp_path):
    clean, out = tmp_path / "clean", tmp_path / "out"
    # The reference run in-process (same code, no second interpreter start-up to pay).
    assert main(_command(tiny.labels, clean)[3:]) == 0
    n = len(list((clean / "cache").glob("*.json")))
    assert n == len(tiny.photos)

    first = _kill_when(_command(tiny.labels, out), out / "cache", 1)
    second = _kill_when(_command(tiny.labels, out), out / "cache", max(first + 1, n // 2))
    assert first < n and second < n, "the command finished before it could be killed"
    assert not (out / "run.json").exists()  # nothing claims the killed runs finished

    done = subprocess.run(_command(tiny.labels, out), env=_env(), timeout=300,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    pngs, q, rec = _outputs(out)
    pngs0, q0, rec0 = _outputs(clean)
    assert pngs == pngs0
    pd.testing.assert_frame_equal(q, q0)
    assert rec["status"] == "done" and rec["results"] == rec0["results"]
    assert {k: v for k, v in rec["config"].items() if k != "out"} == {
        k: v for k, v in rec0["config"].items() if k != "out"}
    leftovers = [str(p.relative_to(out)) for p in out.rglob("*") if ".tmp" in p.name]
    assert leftovers == [], leftovers
    assert _survivors(out) == []
