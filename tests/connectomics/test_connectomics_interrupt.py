"""Issue #19: a killed ``connectomics synth`` or ``segment`` leaves nothing a rerun keeps.

Each command runs as its own process (``python -m deepsci.apps.cli``) and is SIGKILLed at
points found by polling for the files it writes (its output folder, its temporary
``.…tmp.zarr`` store, a block's completion marker). The rerun must exit 0 with outputs equal
to an uninterrupted run's: the same arrays in every zarr array of the store (run.json may
differ in timestamps, durations, argv and the output path, and ``segment``'s
``block_seconds``). No temporary file and no process naming the output path may survive.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

#: Four blocks of a tiny volume, one process (the block results do not depend on where they run).
SEGMENT = ["--preset", "ffn", "--block-size", "16,20,20", "--overlap", "4,4,4", "--scheduler", "inline",
           "--min-segment-size", "20", "--no-consensus", "--progress", "off"]


def _start(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "DEEPSCI_PROGRESS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "deepsci.apps.cli", *map(str, argv)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; False when it exited first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    proc.kill()
    raise AssertionError("the kill point never came")


def _finish(argv) -> None:
    proc = _start(argv)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]


def _temporaries(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if ".tmp" in p.name)


def _arrays(store: Path) -> dict[str, np.ndarray]:
    import zarr

    out = {}

    def walk(group, prefix=""):
        for name, arr in group.arrays():
            out[prefix + name] = arr[...]
        for name, sub in group.groups():
            walk(sub, f"{prefix}{name}/")

    walk(zarr.open_group(str(store), mode="r"))
    return out


def _survivors(path: Path) -> list[str]:
    """Command lines of live processes that name ``path`` (children a killed run left)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmd:
            found.append(cmd)
    return found


def _same_store(a: Path, b: Path) -> None:
    got, want = _arrays(a), _arrays(b)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_killed_synth_leaves_nothing_a_rerun_keeps(tmp_path):
    from deepsci.apps.cli import main

    args = ["--shape", "48,96,96", "--neurites", "10", "--seed", "3"]
    assert main(["connectomics", "synth", str(tmp_path / "ref.zarr"), *args]) == 0
    out = tmp_path / "v.zarr"
    killed_mid_write = False
    for _ in range(3):  # the write lasts a fraction of a second: try again if the process won the race
        proc = _start(["connectomics", "synth", out, *args])
        if _kill_when(proc, lambda: any(p.name.startswith(".v.") for p in tmp_path.iterdir())):
            killed_mid_write = True
            break
        shutil.rmtree(out)
    assert killed_mid_write, "never killed while the temporary store was being written"
    assert _temporaries(tmp_path), "the kill left no temporary store, so the rerun's cleaning is untested"
    _finish(["connectomics", "synth", out, *args])
    assert _temporaries(tmp_path) == []
    _same_store(out, tmp_path / "ref.zarr")
    assert json.loads((out / "run.json").read_text())["status"] == "done"
    assert _survivors(out) == []


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    from deepsci.apps.connectomics.io import write_volume
    from deepsci.apps.connectomics.synth import synthetic_volume

    d = tmp_path_factory.mktemp("cx_kill")
    img, _ = synthetic_volume(shape=(16, 32, 32), n_neurites=3, radius=(3.0, 5.0), gap=3, seed=5)
    write_volume(d / "vol.zarr", {"image": img}, voxel_size=(8, 8, 8))
    return d


def test_killed_segment_resumes_to_the_same_result(volume):
    from deepsci.apps.cli import main

    d = volume
    base = ["connectomics", "segment", "--model", "connectomics-synthetic-ffn", "--image", f"{d}/vol.zarr:image",
            *SEGMENT]
    assert main([*base, "--out", str(d / "ref")]) == 0
    out = d / "run"
    argv = [*base, "--out", out]

    def markers():
        return list((out / ".state" / "blocks").rglob("*.done.json")) if out.exists() else []

    # 1: after the first block's marker; 2: while the stitched store is written (blocks all done).
    assert _kill_when(_start(argv), lambda: len(markers()) >= 1), "segment finished before its first block"
    done = len(markers())
    assert not (out / "segmentation.zarr").exists()
    n_blocks = json.loads((d / "ref" / "run.json").read_text())["results"]["blocks"]
    assert done < n_blocks
    stitching = _kill_when(_start(argv), lambda: any(p.name.startswith(".segmentation.") for p in out.iterdir()))
    if stitching:  # else the rerun won the race and finished: the last run then re-stitches a finished run
        assert len(markers()) == n_blocks and _temporaries(out)
    _finish(argv)
    assert _temporaries(out) == []
    _same_store(out / "segmentation.zarr", d / "ref" / "segmentation.zarr")
    rec, ref = (json.loads((p / "run.json").read_text()) for p in (out, d / "ref"))
    assert rec["status"] == "done"
    keep = ("objects", "blocks", "levels", "fov_evals", "voxels")
    assert {k: rec["results"][k] for k in keep} == {k: ref["results"][k] for k in keep}
    assert _survivors(out) == []
