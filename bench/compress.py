"""Cheaper inference, side by side in one run: distillation and int8 LiteRT per app.

For each app, ``bench/compress_<app>.py::rows(quick)`` measures, by calling only
the product (``deepsci <app> distill`` / ``export`` and the inference verbs):

- the teacher ensemble (fp32, Keras), one member (fp32, Keras),
- the distilled student (fp32, Keras) and the same student exported int8 (LiteRT),
- the student's architecture trained on hard labels only (the control),

each with the app's own metric on held-out data, throughput (items/s,
interleaved repeats on the same cores), file size, FLOPs per item and start-up
time. This script prints one table per app, keeps the raw tables in
``bench/results/raw/compress_<app>.json`` and, unless ``--quick``, records the
goals of issue #15 in ``bench/results/<app>.json`` (the results page):

- int8 LiteRT >= 2.5x the throughput of the same fp32 model run by Keras,
  within the app's metric tolerance, with a file >= 3.5x smaller;
- a distilled student at <= 1/4 of the teacher's FLOPs recovers >= 50 % of the
  gap between the hard-label student and the teacher, never doing worse.

usage: python bench/compress.py [--quick] [--apps retinopathy,molecules] [--no-record]
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

APPS = ("retinopathy", "pathology", "variants", "molecules", "connectomics")

#: app -> (metric key in the rows, higher is better, "abs"|"rel" loss, largest int8 loss allowed)
GOALS = {
    "retinopathy": ("referable_auc", True, "abs", 0.005),
    "pathology": ("froc", True, "abs", 0.01),
    "variants": ("snp_f1", True, "abs", 0.002),
    "molecules": ("gap_mae", False, "rel", 0.05),
    "connectomics": ("vi_total", False, "rel", 0.02),
}
SPEEDUP_GOAL, SIZE_GOAL, GAP_GOAL, FLOPS_GOAL = 2.5, 3.5, 0.5, 0.25


def find(rows: list[dict], *words: str, without: tuple[str, ...] = ()) -> dict | None:
    """The first row whose model name has every word in ``words`` and none of ``without``."""
    for r in rows:
        name = str(r.get("model", "")).lower()
        if all(w in name for w in words) and not any(w in name for w in without):
            return r
    return None


def _loss(fp32: float, int8: float, higher: bool, kind: str) -> float:
    worse = (fp32 - int8) if higher else (int8 - fp32)
    return worse / abs(fp32) if kind == "rel" and fp32 else worse


def goal_rows(app: str, table: dict) -> list[dict]:
    """The results-page rows of one app's table: int8 speed, loss, size; distillation gap."""
    key, higher, kind, max_loss = GOALS[app]
    key = table.get("primary", key)
    rows = table["rows"]
    out = []
    fp32 = find(rows, "student", without=("int8", "hard"))
    int8 = find(rows, "student", "int8", without=("hard",))
    if fp32 and int8 and key in fp32 and key in int8:
        speed = int8["items_per_s"] / fp32["items_per_s"]
        loss = _loss(fp32[key], int8[key], higher, kind)
        size = fp32["bytes"] / int8["bytes"]
        unit = "relative" if kind == "rel" else "absolute"
        ok_loss = loss <= max_loss
        out += [
            {"metric": "int8 LiteRT student: throughput over the same fp32 model in Keras",
             "deepsci": round(speed, 2), "unit": "x", "peer": "fp32 Keras, same batch and cores",
             "goal": f">= {SPEEDUP_GOAL}x at <= {max_loss:g} {unit} {key} loss",
             "met": bool(speed >= SPEEDUP_GOAL and ok_loss)},
            {"metric": f"int8 LiteRT student: {key} loss against fp32 ({unit})",
             "deepsci": round(loss, 5), "peer": round(fp32[key], 5),
             "goal": f"<= {max_loss:g}", "met": bool(ok_loss)},
            {"metric": "int8 LiteRT student: file size reduction", "deepsci": round(size, 2),
             "unit": "x", "peer": int(fp32["bytes"]), "goal": f">= {SIZE_GOAL}x", "met": bool(size >= SIZE_GOAL)},
        ]
    teacher = find(rows, "teacher")
    hard = find(rows, "hard")
    if fp32 and teacher and hard and all(key in r for r in (fp32, teacher, hard)):
        sign = 1.0 if higher else -1.0
        gap = sign * (teacher[key] - hard[key])
        gained = sign * (fp32[key] - hard[key])
        share = gained / gap if gap > 0 else float("nan")
        flops = fp32["flops"] / teacher["flops"] if teacher.get("flops") else float("nan")
        met = bool(gap > 0 and share >= GAP_GOAL and gained >= 0 and flops <= FLOPS_GOAL)
        out.append({"metric": f"distilled student: share of the hard-label-to-teacher {key} gap recovered",
                    "deepsci": round(share, 3) if gap > 0 else "no gap (hard-label student as good)",
                    "peer": round(hard[key], 5),
                    "goal": f">= {GAP_GOAL:.0%} at <= {FLOPS_GOAL:g} of the teacher's FLOPs "
                            f"(student/teacher FLOPs: {flops:.3g})",
                    "met": met})
    return out


def render(table: dict) -> str:
    from deepsci.core.bench import table as md

    cols = sorted({k for r in table["rows"] for k in r} - {"model"})
    lead = [c for c in ("items_per_s", "bytes", "flops", "startup_s") if c in cols]
    cols = ["model"] + [c for c in cols if c not in lead] + lead
    notes = "".join(f"\n- {n}" for n in table.get("notes", []))
    return f"### {table['app']}\n\n{md(table['rows'], cols)}\n{notes}\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny synthetic settings (minutes)")
    ap.add_argument("--apps", default=",".join(APPS))
    ap.add_argument("--no-record", action="store_true", help="do not write bench/results")
    args = ap.parse_args(argv)
    from deepsci.core.bench import machine_line
    from deepsci.core.io import write_json

    raw = HERE / "results" / "raw"
    for app in [a.strip() for a in args.apps.split(",") if a.strip()]:
        if app not in APPS:
            ap.error(f"expected --apps from {','.join(APPS)}, found {app!r}")
        t0 = time.perf_counter()
        table = importlib.import_module(f"compress_{app}").rows(quick=args.quick)
        table.setdefault("app", app)
        table["seconds"] = round(time.perf_counter() - t0, 1)
        table["quick"] = bool(args.quick)
        table["machine"] = machine_line()
        table["goals"] = goal_rows(app, table)
        print(render(table))
        for g in table["goals"]:
            print(f"  {'met' if g['met'] else 'NOT met'}: {g['metric']} = {g['deepsci']} (goal {g['goal']})")
        write_json(raw / f"compress_{app}{'_quick' if args.quick else ''}.json", table)
        if not args.quick and not args.no_record and table["goals"]:
            from render_results import write_app_results

            write_app_results(app, table["goals"], machine=table["machine"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
