"""A killed ``molecules label`` resumes to the outputs of an uninterrupted run (issue #19).

``label`` writes one resume marker per molecule and the CSV and SDF at the end.
It is run as a child process and SIGKILLed twice (after its first marker appears,
then, resumed, after its second); the third run finishes. Its CSV and SDF must equal
those of an uninterrupted run: ids, SMILES, geometries and every structure line
byte for byte, the DFT numbers to 1e-7 relative (PySCF's threaded sums may differ in
the last bits between processes, which 8 printed digits rarely show); timestamps
and timings in ``labels.csv.run.json`` differ legitimately. No temporary file, no
marker folder and no process working on the output may be left.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SMILES = "O water\nN ammonia\nC methane\n"


def _command(smi: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "deepsci.apps.cli", "molecules", "label", str(smi), "--out",
            str(out), "--method", "hf/sto-3g"]


def _markers(out: Path) -> int:
    state = out.parent / f".{out.name}.state"
    return len([p for p in state.glob("*.done.json") if not p.name.startswith(".")]) \
        if state.is_dir() else 0


def _kill_after(cmd: list[str], out: Path, markers: int, timeout: float = 120) -> None:
    """Start ``cmd``; SIGKILL it as soon as ``markers`` resume markers exist."""
    env = {**os.environ, "DEEPSCI_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    t0 = time.monotonic()
    try:
        while _markers(out) < markers:
            assert proc.poll() is None, f"finished before marker {markers}: " \
                                        f"{proc.stderr.read().decode()}"
            assert time.monotonic() - t0 < timeout, "no marker in time"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert not out.exists(), "outputs before the last molecule"


def _survivors(needle: str) -> list[int]:
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid != os.getpid() and needle in " ".join(p.info["cmdline"] or []):
                found.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _sdf_parts(path: Path):
    """Structure lines of every record (byte-equal expected) and the tag values."""
    records = path.read_text().split("$$$$\n")[:-1]
    blocks, tags = [], []
    for rec in records:
        head, _, tail = rec.partition("M  END\n")
        blocks.append(head)
        lines = tail.splitlines()
        tags.append({lines[i][4:-1]: lines[i + 1] for i in range(0, len(lines) - 1, 3)})
    return blocks, tags


def test_killed_label_resumes_to_the_uninterrupted_outputs(tmp_path, capsys):
    pytest.importorskip("pyscf")
    pytest.importorskip("psutil")
    from deepsci.apps.cli import main

    smi = tmp_path / "mols.smi"
    smi.write_text(SMILES)
    ref = tmp_path / "ref" / "labels.csv"
    rc = main(["molecules", "label", str(smi), "--out", str(ref), "--method", "hf/sto-3g"])
    assert rc == 0, capsys.readouterr().err

    out = tmp_path / "run" / "labels.csv"
    cmd = _command(smi, out)
    _kill_after(cmd, out, 1)
    _kill_after(cmd, out, 2)  # the rerun resumed: it starts with one marker
    assert _markers(out) == 2  # the last run has one molecule left to label
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DEEPSCI_PROGRESS": "0", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr

    a, b = pd.read_csv(ref), pd.read_csv(out)
    assert list(a.columns) == list(b.columns) and len(b) == 3
    for col in ("id", "smiles", "xyz"):
        assert list(a[col]) == list(b[col]), col
    numbers = [c for c in a.columns if c not in ("id", "smiles", "xyz")]
    np.testing.assert_allclose(b[numbers].to_numpy(float), a[numbers].to_numpy(float),
                               rtol=1e-7, atol=1e-9)
    blocks_a, tags_a = _sdf_parts(ref.with_suffix(".sdf"))
    blocks_b, tags_b = _sdf_parts(out.with_suffix(".sdf"))
    assert blocks_a == blocks_b and [list(t) for t in tags_a] == [list(t) for t in tags_b]
    for ta, tb in zip(tags_a, tags_b, strict=True):
        assert (ta["id"], ta["smiles"]) == (tb["id"], tb["smiles"])
        np.testing.assert_allclose([float(tb[c]) for c in numbers],
                                   [float(ta[c]) for c in numbers], rtol=1e-7, atol=1e-9)
    # Nothing half-written or left over: only the two outputs and their record.
    left = sorted(p.name for p in out.parent.iterdir())
    assert left == ["labels.csv", "labels.csv.run.json", "labels.sdf"], left
    assert not _survivors(str(out)), "a process working on the output survived"
