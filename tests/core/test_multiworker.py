"""Two training processes on localhost under MultiWorkerMirroredStrategy."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORKER = Path(__file__).with_name("train_worker.py")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _weights(path):
    with np.load(path) as z:
        return [z[k] for k in z.files if k != "history"], json.loads(str(z["history"]))


def _files(root: Path) -> set[str]:
    try:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    except FileNotFoundError:  # a worker removed a folder while we looked
        return set()


def test_two_process_run_agrees_and_only_the_chief_writes(tmp_path):
    out, results = tmp_path / "out", tmp_path / "results"
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    tmp_dirs = [tmp_path / f"tmp{i}" for i in range(2)]
    procs = []
    for i in range(2):
        tmp_dirs[i].mkdir()
        tf_config = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), str(out), "multi-worker", "--results", str(results),
             "--tensorboard", "--val"],
            env={**os.environ, "TF_CONFIG": tf_config, "TMPDIR": str(tmp_dirs[i])},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    seen_private = set()  # what worker 1 saved into its private folder during the run
    deadline = time.time() + 300
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        seen_private |= _files(tmp_dirs[1])
        time.sleep(0.02)
    for p in procs:
        assert p.wait(timeout=10) == 0, p.stderr.read().decode()[-3000:]

    w0, h0 = _weights(results / "final-0.npz")
    w1, h1 = _weights(results / "final-1.npz")
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    drop_time = [{k: v for k, v in h.items() if k != "seconds"} for h in h0]
    assert drop_time == [{k: v for k, v in h.items() if k != "seconds"} for h in h1]
    assert h0[-1]["loss"] < h0[0]["loss"] and len(h0) == 4
    chief = json.loads((results / "worker-0.json").read_text())
    assert chief["chief"] and not json.loads((results / "worker-1.json").read_text())["chief"]

    # Every worker saved (collective ops need all of them), worker 1 only privately ...
    private = {f.split("/", 1)[1] for f in seen_private if f.startswith("deepsci-worker1-")}
    assert {"checkpoints/checkpoint", "best/weights.index"} <= private
    # ... and removed that folder at the end; the chief never needed one.
    assert _files(tmp_dirs[0]) == set() and _files(tmp_dirs[1]) == set()
    # out_dir holds exactly the chief's files: 4 epochs x 12 steps, a checkpoint
    # every 2 steps, the last 3 kept, and one TensorBoard log from the chief's process.
    files = _files(out)
    logs = [f for f in files if f.startswith("tensorboard/")]
    assert len(logs) == 1 and f".{chief['pid']}." in logs[0]
    ckpt = {f"checkpoints/ckpt-{n}.{ext}" for n in (44, 46, 48)
            for ext in ("index", "data-00000-of-00001")}
    assert files - set(logs) == {"history.json", "checkpoints/checkpoint",
                                 "best/weights.index", "best/weights.data-00000-of-00001", *ckpt}
    assert json.loads((out / "history.json").read_text()) == h0
