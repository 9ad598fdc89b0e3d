"""Interruptions (issue #19): children die with a SIGKILLed parent; a killed writer's temporaries go.

A parent process starts children through :mod:`deepsci.core.parallel` (a background
child, a process pool, a local Dask cluster); each child writes its pid to a file, the
test SIGKILLs the parent once all are up and then requires every child gone within 2 s.
A writer inside a :class:`~deepsci.core.runs.RunDir` is SIGKILLed in the middle of its
first and of its second output; the rerun exits 0, leaves no ``.…tmp…`` file, and
writes the same bytes as an uninterrupted run (only run.json's timestamps, seconds and
argv may differ, so it is compared without them).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent('''
    import os, sys, time
    from pathlib import Path

    from deepsci.core.parallel import open_cluster, process_map, start_child

    def hold(folder):
        """Announce this process, then work "forever" (until killed)."""
        Path(folder, f"pid-{os.getpid()}").write_text("")
        while True:
            time.sleep(0.05)

    def pool_item(folder):
        hold(folder)

    def busy(folder):
        """Hold the GIL in one C call, as a long TensorFlow op does: the worker's loop stalls."""
        Path(folder, f"pid-{os.getpid()}").write_text("")
        while True:
            sum(range(10**12))

    if __name__ == "__main__":
        mode, folder = sys.argv[1], sys.argv[2]
        if mode == "child":
            start_child(hold, (folder,), name="holder")
            start_child(hold, (folder,), name="holder-2", context="spawn")
            time.sleep(600)
        elif mode == "pool":
            process_map(pool_item, [folder, folder], workers=2)
        elif mode == "dask":
            with open_cluster("local", 2) as (client, _):
                # a shard in each worker, as a heatmap's slides: busy, not idle, when killed
                futures = [client.submit(busy, folder, workers=[w], pure=False)
                           for w in client.run(os.getpid)]
                time.sleep(600)
''')

WRITER = textwrap.dedent('''
    import sys, time
    from pathlib import Path

    from deepsci.core.io import atomic_path
    from deepsci.core.runs import RunDir

    out, slow = Path(sys.argv[1]), sys.argv[2]
    with RunDir(out, command="test write", config={"n": 3}) as run:
        for name in ("a.bin", "b.bin"):
            if run.done(name):
                continue
            with atomic_path(run.file(name)) as tmp:
                with open(tmp, "wb") as fh:
                    for i in range(4):
                        fh.write(bytes([i]) * 50_000 + name.encode())
                        fh.flush()
                        if slow == name and i == 1:  # half-written: tell the test, then stall
                            Path(str(out) + f".writing-{name}").write_text("")
                            time.sleep(600)
            run.mark(name, {"bytes": run.file(name).stat().st_size})
        run.record(files=2)
''')


def _alive(pid: int) -> bool:
    try:
        import psutil

        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE
    except ImportError:
        status = Path(f"/proc/{pid}/status")
        try:
            return "State:\tZ" not in status.read_text()
        except OSError:
            return False
    except Exception:  # psutil.NoSuchProcess
        return False


def _wait_for(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("mode, n", [("child", 2), ("pool", 2), ("dask", 2)])
def test_children_die_with_a_sigkilled_parent(tmp_path, mode, n):
    script = tmp_path / "parent.py"
    script.write_text(SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), mode, str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pids = lambda: [int(p.name[4:]) for p in tmp_path.glob("pid-*")]  # noqa: E731
    try:
        _wait_for(lambda: len(pids()) >= n or parent.poll() is not None, 120, f"{n} children of {mode}")
        assert parent.poll() is None, parent.stderr.read().decode()[-2000:]
        children = pids()
        assert len(children) == n and parent.pid not in children
        assert all(_alive(p) for p in children)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        _wait_for(lambda: not any(_alive(p) for p in children), 2.0, f"{mode} children to die")
    finally:
        if parent.poll() is None:
            parent.kill()
        for p in pids():  # never leave a survivor behind for the rest of the suite
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def _write(out: Path, slow: str = "-"):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(out), slow],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "run.json"}


def _record(out: Path) -> dict:
    rec = json.loads((out / "run.json").read_text())
    return {k: v for k, v in rec.items() if k not in ("started", "finished", "seconds", "argv", "machine")}


def test_killed_writer_leaves_temporaries_that_the_rerun_removes(tmp_path):
    ref = tmp_path / "ref"
    assert _write(ref).wait(120) == 0
    want = _tree(ref)
    assert set(want) == {"a.bin", "b.bin", ".state/a.bin.done.json", ".state/b.bin.done.json"}
    out = tmp_path / "out"
    for point in ("a.bin", "b.bin"):  # killed while writing its first, then its second output
        victim = _write(out, slow=point)
        flag = Path(str(out) + f".writing-{point}")
        _wait_for(lambda: flag.exists() or victim.poll() is not None, 120, f"writing {point}")  # noqa: B023
        assert victim.poll() is None, victim.stderr.read().decode()[-2000:]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        stale = [p.name for p in out.glob(".*.tmp*")]
        assert stale and all(p.startswith(f".{Path(point).stem}.") for p in stale), stale
        assert not (out / point).exists() and not (out / "run.json").exists()
    rerun = _write(out)
    assert rerun.wait(120) == 0, rerun.stderr.read().decode()[-2000:]
    assert not list(out.rglob("*tmp*")), list(out.rglob("*tmp*"))
    assert _tree(out) == want
    assert _record(out) == _record(ref) | {} and _record(out)["status"] == "done"


def test_set_aside_run_comes_back_when_the_overwriting_run_fails(tmp_path):
    from deepsci.core.errors import InputError
    from deepsci.core.runs import RunDir

    out = tmp_path / "r"
    with RunDir(out, command="x", config={"n": 1}) as run:
        run.file("a.txt").write_text("first")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # a finished run with nothing to resume is replaced only with --overwrite
    with pytest.raises(InputError, match=r"expected a new output folder, found a finished run "
                                         r"\(pass --overwrite to replace it\)"):
        with RunDir(out, command="x"):
            pass
    with pytest.raises(RuntimeError), RunDir(out, command="x", overwrite=True):
        raise RuntimeError("boom before any output")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # nothing set aside is left
    with RunDir(out, command="x", overwrite=True) as run:
        run.file("b.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt", "run.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
