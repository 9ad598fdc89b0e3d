"""Issue #19: a killed ``variants simulate`` or ``variants run --shards`` leaves nothing
behind that survives the rerun, and the rerun's outputs equal an uninterrupted run's.

Each command runs as a subprocess (``python -m deepsci.apps.cli``) and is killed (SIGKILL)
when a file shows it reached a given point (polled, not slept for); its reference run is
in-process (TensorFlow is then loaded once). What may differ between runs: run.json
(timestamps, seconds, the command line), the VCF's ``##deepsci_command`` header line and
gzip headers (mtime); the data themselves are compared.
"""
from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pysam
import pytest

from deepsci.apps.cli import main

REGION = "chr1:2001-9000"


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "deepsci.apps.cli", *map(str, args)]


def _env() -> dict:
    return {**os.environ, "DEEPSCI_PROGRESS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _kill_when(cmd: list[str], ready, timeout: float = 120.0) -> bool:
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` is true; False if it ended first."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.time()
    try:
        while proc.poll() is None and time.time() - t0 < timeout:
            if ready():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.01)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _survivors(path: Path, wait: float = 3.0) -> list[int]:
    """Live processes whose command line names ``path`` (forked children inherit it),
    after waiting up to ``wait`` s for them to die; they are then killed, by pid."""
    import psutil

    def alive():
        out = []
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            try:
                if p.info["status"] != psutil.STATUS_ZOMBIE and p.pid != os.getpid() \
                        and str(path) in " ".join(p.info["cmdline"] or []):
                    out.append(p)
            except psutil.Error:
                pass
        return out

    t0 = time.time()
    while alive() and time.time() - t0 < wait:
        time.sleep(0.05)
    left = alive()
    for p in left:
        p.kill()
    return [p.pid for p in left]


def _temporaries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name)


def _records(bam) -> list[str]:
    with pysam.AlignmentFile(str(bam)) as f:
        return [r.to_string() for r in f.fetch(until_eof=True)]


def _vcf(path) -> tuple[list[str], list[str]]:
    """(header lines but the command, records) of a VCF."""
    with pysam.VariantFile(str(path)) as f:
        head = [str(h) for h in f.header.records if h.key != "deepsci_command"]
        return head, [str(r) for r in f]


def test_killed_simulate_reruns_to_the_same_outputs(tmp_path):
    args = ["variants", "simulate", "--length", "3000", "--coverage", "6", "--seed", "5",
            "--threads", "1"]
    ref_out, out = tmp_path / "reference", tmp_path / "killed"
    assert main([*args, "--out", str(ref_out)]) == 0
    cmd = _cli(*args, "--out", out)
    # Kill 1: the truth VCF is written, the reads not yet. Kill 2: BWA's unsorted BAM is
    # being written (the temporary a killed run used to leave as reads.bam.unsorted.bam).
    points = [lambda: (out / "truth.vcf.gz").exists(),
              lambda: any(out.glob(".reads.unsorted.*.tmp*")) or (out / "reads.bam").exists()]
    killed = [_kill_when(cmd, ready) for ready in points]
    assert killed[0], "simulate ended before the first kill point"
    assert not _survivors(out)
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _temporaries(out) == [] and not _survivors(out)
    # run.log: the console script's native log, which the in-process reference has not.
    names = {p.name for p in ref_out.iterdir()} - {"run.log"}
    assert {p.name for p in out.iterdir()} - {"run.log"} == names
    for name in ("ref.fa", "ref.fa.fai", "confident.bed"):
        assert (out / name).read_bytes() == (ref_out / name).read_bytes(), name
    for name in ("reads_1.fq.gz", "reads_2.fq.gz"):
        assert gzip.open(out / name).read() == gzip.open(ref_out / name).read(), name
    assert _vcf(out / "truth.vcf.gz") == _vcf(ref_out / "truth.vcf.gz")
    assert _records(out / "reads.bam") == _records(ref_out / "reads.bam")
    assert len(_records(out / "reads.bam")) > 100


@pytest.fixture(scope="module")
def het_model(tmp_path_factory):
    """A width-4 model that calls every candidate het (its head ignores the image)."""
    import keras
    import numpy as np

    from deepsci.apps.variants.model import build_model, genotype_card
    from deepsci.core.models.serialization import save_model

    keras.utils.set_random_seed(0)
    model = build_model("small", width=4)
    kernel, bias = [w for w in model.weights if "kernel" in w.path or "bias" in w.path][-2:]
    kernel.assign(np.zeros(kernel.shape, "float32"))
    bias.assign(np.array([0.0, 4.0, 0.0], "float32"))
    path = tmp_path_factory.mktemp("interrupt_model") / "model.keras"
    save_model(model, path, card=genotype_card(training={}, data={}, metrics={}, extra={}))
    return path


def test_killed_sharded_run_reruns_to_the_same_calls(tiny_sim, het_model, tmp_path):
    args = ["variants", "run", "--reads", tiny_sim["bam"], "--ref", tiny_sim["ref"],
            "--model", het_model, "--regions", REGION, "--shards", "3", "--scheduler",
            "inline", "--batch-size", "8"]
    ref_out, out = tmp_path / "reference", tmp_path / "killed"
    assert main([*map(str, args), "--out", str(ref_out)]) == 0
    cmd = _cli(*args, "--out", out)
    ex = out / "examples"
    # Kill 1: the first shard is half-written (its temporary exists). Kill 2 (the rerun
    # resumes): a shard is finished and marked, the next not yet.
    points = [lambda: any(ex.glob(".examples-*.tmp*")),
              lambda: any((ex / ".state").glob("*.done.json"))]
    survived = []
    for ready in points:
        assert _kill_when(cmd, ready), "run ended before the kill point"
        survived += _survivors(out)
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _temporaries(out) == [], "a killed run's temporary survived the rerun"
    assert _vcf(out / "calls.vcf.gz") == _vcf(ref_out / "calls.vcf.gz")
    assert len(_vcf(out / "calls.vcf.gz")[1]) >= 5
    assert gzip.open(out / "calls.tsv.gz").read() == gzip.open(ref_out / "calls.tsv.gz").read()
    shards = sorted(p.name for p in ex.glob("examples-*.tfrecord.gz"))
    assert shards == sorted(p.name for p in (ref_out / "examples").glob("examples-*"))
    assert not _survivors(out)
    # make-examples runs in a forked child of `run`: it must die with its parent
    # (deepsci.core.parallel.start_child sets PR_SET_PDEATHSIG, issue #19).
    assert survived == [], f"children outlived the killed run: {survived}"
