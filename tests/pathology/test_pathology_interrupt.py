"""Issue #19: a SIGKILLed pathology run leaves nothing a rerun trips on, and no process behind.

``synth`` writes its slides one file at a time (slide TIFF, ASAP XML, mask TIFF per slide): it
is killed as soon as its first file appears, and again later in a second attempt; a third
attempt must exit 0 with the same bytes as an uninterrupted run (only ``run.json``'s
timestamps, argv, machine and durations may differ), and no temporary file is left.
``heatmap`` on a local Dask cluster is killed once its workers run (they are loading the model):
every process it started (the workers, multiprocessing's resource tracker) must be gone within
seconds. A kill while the workers are still starting is not tested: Dask's workers notice
their parent's death only once started (tens of seconds on a loaded machine).
No TensorFlow is loaded in this process; kill points are found by polling for files.
"""
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

CLI = [sys.executable, "-m", "deepsci.apps.cli"]
ENV = {**os.environ, "DEEPSCI_PROGRESS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
SYNTH = ["pathology", "synth", "--tumour", "2", "--normal", "2", "--size", "640", "--mpp", "1.0", "--seed", "4"]
# run.json fields that say when, where and how long, not what
VOLATILE = ("argv", "started", "finished", "seconds", "machine", "versions", "inputs")


def _start(args):
    return subprocess.Popen([*CLI, *map(str, args)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def _wait_for(proc, ready, timeout=90.0):
    """Poll ``ready()`` every 20 ms while ``proc`` runs; fail if it ends first."""
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"ended (exit {proc.returncode}) before the kill point: {proc.stderr.read()}"
        assert time.monotonic() - t0 < timeout, "kill point not reached"
        time.sleep(0.02)


def _kill_and_check_children(proc, out: Path, settle: float = 10.0) -> None:
    """SIGKILL ``proc``; every process it started and every one naming ``out`` must be gone."""
    kids = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + settle
    alive = kids
    while time.monotonic() < deadline:
        alive = [k for k in kids if _alive(k)]
        alive += [p for p in psutil.process_iter(["cmdline"]) if str(out) in " ".join(p.info["cmdline"] or [])
                  and _alive(p)]
        if not alive:
            return
        time.sleep(0.1)
    for k in alive:  # do not leave them to the next test
        k.kill()
    pytest.fail(f"still running {settle:g} s after the parent was killed: {[k.pid for k in alive]}")


def _alive(p) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "run.json"}


def _record(root: Path) -> dict:
    rec = json.loads((root / "run.json").read_text())
    rec["config"] = {k: v for k, v in rec["config"].items() if k != "out"}
    return {k: v for k, v in rec.items() if k not in VOLATILE}


def test_killed_synth_reruns_to_the_same_bytes(tmp_path):
    from deepsci.apps.cli import main

    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main([*SYNTH[:2], str(ref), *SYNTH[2:]]) == 0
    argv = [*SYNTH[:2], out, *SYNTH[2:]]
    # attempt 1: killed as its first file (or its temporary) appears
    proc = _start(argv)
    _wait_for(proc, lambda: out.is_dir() and any(out.iterdir()))
    _kill_and_check_children(proc, out)
    assert not (out / "run.json").exists()
    # attempt 2: killed later, once the second slide is on disk
    proc = _start(argv)
    _wait_for(proc, lambda: (out / "tumor_002.tif").exists())
    _kill_and_check_children(proc, out)
    # attempt 3 completes
    done = subprocess.run([*CLI, *map(str, argv)], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], "temporaries left"
    assert not (out / ".state").exists()
    want, got = _files(ref), _files(out)
    assert sorted(got) == sorted(want)
    assert [k for k in want if want[k] != got[k]] == []
    assert _record(out) == _record(ref) and _record(out)["status"] == "done"


def _fake_model(root: Path) -> Path:
    """A Keras-shaped archive with a valid card: the run gets as far as starting its workers."""
    from deepsci.core.models.card import ModelCard, card_path

    model = root / "m.keras"
    with zipfile.ZipFile(model, "w") as z:
        for member in ("metadata.json", "config.json", "model.weights.h5"):
            z.writestr(member, "{}")
    card = ModelCard(app="pathology", task="patch-tumour",
                     input_spec={"patch_size": 32, "magnifications": [10.0], "center_size": 32})
    card_path(model).write_text(json.dumps(card.to_dict()))
    return model


def test_killed_heatmap_takes_its_dask_workers_with_it(tmp_path):
    from deepsci.apps.pathology.synth import SynthConfig, make_slides

    make_slides(tmp_path / "slides", n_tumour=1, n_normal=1, seed=2,
                config=SynthConfig(width=256, height=256, mpp=1.0, tumour_radius_um=(40.0, 50.0)))
    out = tmp_path / "hm"
    proc = _start(["pathology", "heatmap", "--model", _fake_model(tmp_path), "--slides", tmp_path / "slides",
                   "--out", out, "--scheduler", "local", "--workers", "2"])
    parent = psutil.Process(proc.pid)

    def workers_running() -> bool:
        # run_shards makes .state/ once the cluster is up, its workers told to die with this
        # process and the model's warm-up submitted to them
        time.sleep(0.05)
        spawned = [c for c in parent.children(recursive=True) if "spawn_main" in " ".join(c.cmdline())]
        return len(spawned) >= 2 and (out / ".state").is_dir()

    _wait_for(proc, workers_running, timeout=150)
    _kill_and_check_children(proc, out, settle=5.0)
