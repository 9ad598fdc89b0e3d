"""TensorFlow's start-up lines never reach the terminal (issue #19): a user error is one line.

Each app's ``export`` verb is given a damaged ``.keras`` (a text file) with that app's
card, exactly as a user runs it: the console script, no ``TF_CPP_MIN_LOG_LEVEL`` in the
environment. By then TensorFlow is imported (its absl and CUDA-probe lines go to
descriptor 2), so stderr being the single ``error:`` line shows the capture holds for
every app. ``deepsci devices`` initialises the devices (the ``E0000 ... cuInit`` line of
CI logs on a machine without a GPU driver) and must print nothing on stderr; with the
capture off (``DEEPSCI_NATIVE_LOG=0``) the same runs print those lines, so these checks
fail where the capture does not hold. The runs go in parallel.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DEEPSCI = Path(sys.executable).with_name("deepsci")
APPS = {"retinopathy": "dr-grade", "pathology": "patch-tumour", "variants": "genotype",
        "molecules": "qm9-properties", "connectomics": "ffn"}


def _env() -> dict:
    return {k: v for k, v in os.environ.items()
            if k not in ("TF_CPP_MIN_LOG_LEVEL", "DEEPSCI_NATIVE_LOG", "PYTEST_CURRENT_TEST")}


def _damaged(folder: Path, app: str) -> Path:
    d = folder / app
    d.mkdir()
    (d / "model.keras").write_text("a text file, not a zip archive\n")
    (d / "model.card.json").write_text(json.dumps({"schema": "deepsci.card/1", "app": app,
                                                   "task": APPS[app]}))
    return d / "model.keras"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start every run at once (they spend their time importing TensorFlow); name -> result."""
    root = tmp_path_factory.mktemp("quiet")
    procs = {}
    for app in APPS:
        model = _damaged(root, app)
        procs[app] = subprocess.Popen([str(DEEPSCI), app, "export", str(model), "--out",
                                       str(root / f"{app}.tflite")], cwd=root, env=_env(),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs["devices"] = subprocess.Popen([str(DEEPSCI), "devices"], cwd=root, env=_env(),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    try:
        for name, p in procs.items():
            stdout, stderr = p.communicate(timeout=240)
            out[name] = (p.returncode, stdout, stderr)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    out["root"] = root
    return out


@pytest.mark.parametrize("app", list(APPS))
def test_a_user_error_is_exactly_one_line(runs, app):
    rc, _, err = runs[app]
    lines = err.splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: expected a Keras model file"), lines
    assert lines[0].endswith(f"{app}/model.keras)") and "not a zip archive" in lines[0]
    assert not (runs["root"] / f"{app}.tflite").exists()


def test_device_start_up_is_silent(runs):
    rc, out, err = runs["devices"]
    assert rc == 0 and "auto ->" in out
    # With DEEPSCI_NATIVE_LOG=0 (no capture) this same run prints absl's preamble, "Could
    # not find cuda drivers" and "E0000 ... failed call to cuInit" on a machine without a GPU.
    assert err == "", err
