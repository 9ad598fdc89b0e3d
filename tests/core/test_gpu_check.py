"""bench/gpu_check.py --dry-run: every check runs on the CPU with tiny sizes."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"
ROWS = [  # (check name starts with, unit)
    ("matmul", "GFLOP/s"), ("matmul", "GFLOP/s"),
    ("Inception-small 32² inference", "images/s"), ("Inception-small 32² train step", "images/s"),
    ("Inception-small 32² inference", "images/s"), ("Inception-small 32² train step", "images/s"),
    ("FFN tiny", "FOVs/s"), ("FFN tiny", "FOVs/s"),
    ("MPNN", "molecules/s"), ("2-replica equivalence", "examples/s"),
    ("one epoch", "images/s"),
]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    return proc, json.loads(out.read_text())


def test_dry_run_has_every_row_with_measured_rates(dry_run):
    proc, report = dry_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["errors"] == [] and report["dry_run"] is True
    rows = report["rows"]
    assert [(r["check"][:len(name)], r["unit"]) for r, (name, _) in zip(rows, ROWS, strict=True)] \
        == ROWS
    for r in rows:
        assert r["seconds"] > 0 and r["items"] > 0
        assert r["rate"] * r["seconds"] == pytest.approx(r["items"], rel=1e-9)
    # float32 first, then mixed (bfloat16 on the CPU) with XLA.
    assert [(r["precision"], r["xla"]) for r in rows[2:8]] == (
        [("float32", False)] * 2 + [("mixed_bfloat16", True)] * 2
        + [("float32", False), ("mixed_bfloat16", True)])
    assert rows[0]["precision"] == "float32" and rows[1]["precision"] == "bfloat16"
    inference = rows[2]
    # GFLOP/s derive from the analytic flop count and the same measured rate.
    assert inference["GFLOP/s"] / inference["rate"] == pytest.approx(
        rows[3]["GFLOP/s"] / rows[3]["rate"] / 3, rel=1e-9)
    assert inference["% of peak"] == pytest.approx(100 * inference["GFLOP/s"] / rows[0]["rate"])
    assert rows[9]["agrees"] and rows[9]["max_rel_diff"] < 1e-4
    assert rows[10]["precision"] == "mixed_bfloat16" and rows[10]["finite"]
    assert rows[10]["items"] == 2 * 2  # batch 2, two steps: one epoch


def test_dry_run_prints_devices_and_the_table(dry_run):
    proc, report = dry_run
    auto = report["devices"]["auto"]
    assert f"auto -> {auto['strategy']} with {auto['replicas']} replica(s)" in proc.stdout
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(report["rows"])  # header + one line per row
