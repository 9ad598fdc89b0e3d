"""Benchmark of the molecules app, in one run.

1. Speed vs DFT: wall time of PySCF B3LYP/6-31G(2df,p) single points (QM9's level
   of theory, ``b3lyp-qm9``) on QM9 molecules with 9 heavy atoms, against batched
   MPNN inference on ``--inference-molecules`` QM9 molecules (featurisation timed
   separately), with this machine's measured matmul peak for context.
Then reading all of QM9 (``load_dataset("qm9")``) and featurising it, timed,
with the number of molecules skipped and why.

2. Accuracy under a CPU budget: QM9 (qm9pack) with a held-out split (standard:
   ``--val 10000 --test 10000``), our MPNN trained for ``--budget-min`` wall-clock
   minutes, all 12 targets' test MAE and ratio to chemical accuracy; with
   ``--chemprop /path/to/chemprop`` (a chemprop 2.x CLI in its own venv, never a
   project dependency) chemprop is trained on the same split and budget and
   scored on the same test molecules.

3. From SMILES (``--e2e-molecules 20``): ``molecules predict`` on SMILES (RDKit
   conformer, MPNN) against the same RDKit conformer followed by a B3LYP single
   point, both timed from the SMILES string (``bench/molecules_e2e.py`` says what
   each side includes).

Usage::

    python bench/molecules.py [--dft-molecules 5] [--e2e-molecules 20] [--inference-molecules 10000]
        [--limit 130831] [--val 10000] [--test 10000] [--budget-min 30]
        [--chemprop /tmp/chemprop-venv/bin/chemprop] [--skip-speed] [--skip-accuracy]
        [--skip-read] [--work DIR] [--results bench/RESULTS.molecules.md] [--no-record]

The goal rows a run measures (inference speed and the speed-ups over DFT unless
``--skip-speed``; test MAE beside chemprop unless ``--skip-accuracy``) replace their rows in
``bench/results/molecules.json`` and ``bench/RESULTS.md`` (:func:`result_rows`);
``--no-record`` only prints.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Options left out of the recorded command (scratch and output paths) or recorded as a
#: placeholder (a file outside the repository).
_UNRECORDED = {"--work", "--results"}
_PLACEHOLDERS = {"--chemprop": "CHEMPROP"}
_SHORT = {"mu": "μ", "alpha": "α", "homo": "HOMO", "lumo": "LUMO", "gap": "gap", "r2": "R²",
          "zpve": "ZPVE", "u0": "U0", "u": "U", "h": "H", "g": "G", "cv": "Cv"}
#: Accuracy rows: target -> how the metric names it (the first names the run's setup).
_MAE_ROWS = {"gap": "HOMO–LUMO gap", "u0": "U0"}


def _sci(x: float) -> str:
    """``9.9 × 10⁵``: two significant digits and a superscript power of ten."""
    mant, exp = f"{x:.1e}".split("e")
    sup = str(int(exp)).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return f"{mant} × 10{sup}"


def _split_size(n: float) -> str:
    return f"{n / 1000:g}k" if n >= 1000 and n % 1000 == 0 else f"{n:g}"


def _speed_rows(sp: dict) -> list[dict]:
    rows = []
    for graph, g in sp["graphs"].items():
        streams = sp["streams"]
        plain, xla = g["per_s"][f"{streams} streams"], g["per_s"][f"{streams} streams + XLA"]
        bottleneck = " (the pipeline's bottleneck)" if g["featurise_per_s"] < max(plain, xla) else ""
        rows.append({
            "metric": f"MPNN inference on {sp['cores']} CPU cores, {graph} graph, default model, "
                      f"{sp['molecules']:,} QM9 molecules, batch {sp['batch']}",
            "deepsci": f"{xla:.0f} molecules/s ({streams} streams + XLA); {plain:.0f} "
                       f"({streams} streams)",
            "peer": f"RDKit featurisation of the same molecules: {g['featurise_per_s']:.0f} "
                    f"molecules/s{bottleneck}",
            "goal": ">= 5000 molecules/s", "met": bool(max(plain, xla) >= 5000)})
        if not sp["dft_molecules"]:
            continue  # --dft-molecules 0: no speed-up
        # Other graphs than the default are named; the stored wording is the bond graph's.
        named = "" if graph == "bond" else f"{graph} graph, "
        cpu, cpu_xla = sp["dft_cpu_s"] / g["cpu_s"][0], sp["dft_cpu_s"] / g["cpu_s"][1]
        wall = sp["dft_wall_s"] / g["wall_s_with_featurisation"]
        rows.append({
            "metric": f"speed-up of MPNN inference over the DFT it learns, by CPU time ({named}"
                      f"{streams} streams; {sp['dft_molecules']} QM9 molecules with 9 heavy atoms "
                      "for DFT)",
            "deepsci": f"{_sci(cpu)} ({_sci(cpu_xla)} with XLA)",
            "peer": f"PySCF B3LYP/6-31G(2df,p) single point: {sp['dft_cpu_s']:.1f} CPU-s per "
                    "molecule",
            "goal": ">= 300,000×", "met": bool(cpu >= 3e5)})
        rows.append({
            "metric": "the same speed-up by wall time, RDKit featurisation included"
                      + (f" ({graph} graph)" if named else ""),
            "deepsci": _sci(wall),
            "peer": f"PySCF B3LYP/6-31G(2df,p): {sp['dft_wall_s']:.1f} s per molecule",
            "goal": ">= 300,000×", "met": bool(wall >= 3e5)})
    return rows


def _accuracy_rows(acc: dict) -> list[dict]:
    data = "full QM9" if acc["limit"] is None else f"{acc['limit']:,} QM9 molecules"
    budget = f"{acc['budget_min']:g}-minute CPU budget"
    ours, theirs = acc["ours"], acc.get("chemprop")
    cp = "chemprop" + (f" {acc['chemprop_version']}" if acc.get("chemprop_version") else "")
    rows = []
    for i, (name, label) in enumerate(_MAE_ROWS.items()):
        o = ours[name]
        setup = (f", {data} (random {_split_size(acc['val'])} validation / "
                 f"{_split_size(acc['test'])} test split, seed 0), {budget}" if i == 0 else
                 ", the same run")
        row = {"metric": f"{label} test MAE{setup}",
               "deepsci": f"{o['mae']:.4f} {o['unit']} ({o['ratio']:.1f} × chemical accuracy)",
               "peer": None, "goal": None, "met": None}
        if theirs:
            t = theirs[name]
            row["peer"] = (f"{cp}, same split and budget: {t['mae']:.4g} {t['unit']}" if i == 0
                           else f"{cp}: {t['mae']:.4g} {t['unit']}"
                           + (" (it regresses raw total energies)" if name == "u0" else ""))
            row.update(goal="below chemprop", met=bool(o["mae"] < t["mae"]))
        rows.append(row)
    ratios = sorted((m["ratio"], n) for n, m in ours.items() if m.get("ratio") is not None)
    best = ", ".join(f"{_SHORT.get(n, n)} {r:.1f}" for r, n in ratios[:3])
    rows.append({
        "metric": f"targets within chemical accuracy after the {acc['budget_min']:g}-minute "
                  f"budget (best ratios: {best})",
        "deepsci": f"{sum(r < 1 for r, _ in ratios)} of {len(ratios)}",
        "peer": f"Gilmer et al. 2017 trained ~3 × 10⁶ steps; this run {acc['steps']:,}",
        "goal": None, "met": None})
    return rows


def result_rows(measured: dict) -> list[dict]:
    """The goal rows of ``bench/results/molecules.json`` from one run's figures.

    ``measured["speed"]`` (None when skipped): ``cores``, ``molecules``, ``batch``,
    ``streams``, ``dft_molecules``, ``dft_cpu_s`` and ``dft_wall_s`` (per molecule) and
    ``graphs``: graph -> ``per_s`` (label of the inference variant -> molecules/s),
    ``cpu_s`` (CPU s per molecule of the ``streams`` variants, without and with XLA),
    ``featurise_per_s`` and ``wall_s_with_featurisation`` (per molecule, fastest inference).
    ``measured["e2e"]`` (None when skipped): :func:`molecules_e2e.end_to_end`'s figures.
    ``measured["accuracy"]`` (None when skipped): ``limit``, ``val``, ``test``,
    ``budget_min``, ``steps``, ``ours`` and ``chemprop`` (target -> ``target_metrics`` row;
    chemprop None without ``--chemprop``) and ``chemprop_version``.
    """
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:  # the tests load this file by path, not as a script
        sys.path.insert(0, here)
    from molecules_e2e import e2e_rows

    rows = _speed_rows(measured["speed"]) if measured.get("speed") else []
    if measured.get("e2e"):
        rows += e2e_rows(measured["e2e"])
    if measured.get("accuracy"):
        rows += _accuracy_rows(measured["accuracy"])
    return rows


def record_command(argv: list[str]) -> str:
    """This run's command as ``bench/results`` records it: scratch paths left out, CHEMPROP."""
    words, rest = [], list(argv)
    while rest:
        word = rest.pop(0)
        name, eq, _ = word.partition("=")
        if name in _UNRECORDED or name in _PLACEHOLDERS:
            if not eq and rest:
                rest.pop(0)
            words += [name, _PLACEHOLDERS[name]] if name in _PLACEHOLDERS else []
        elif name != "--no-record":
            words.append(word)
    return shlex.join(["python", f"bench/{Path(__file__).name}", *words])


def _record(rows: list[dict], argv: list[str], load: tuple[float, ...]) -> None:
    """Replace the rows of the same metric in ``bench/results/molecules.json`` and the page."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from render_results import write_app_results

    from deepsci.core.bench import machine_info, machine_line

    machine = (f"{machine_line()}, TensorFlow {machine_info().get('tensorflow')}; load average "
               f"{load[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the end of the run")
    cmd = record_command(argv)
    path = write_app_results("molecules", [{**r, "command": cmd} for r in rows], machine=machine)
    print(f"recorded {len(rows)} row(s) in {path}")


def _chemprop_version(cli: str) -> str | None:
    """chemprop's version from the Python beside its CLI (its own virtual environment)."""
    python = Path(cli).with_name("python")
    try:
        out = subprocess.run([str(python), "-c", "import chemprop; print(chemprop.__version__)"],
                             capture_output=True, text=True, timeout=120, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _dataset(limit, seed=0):
    from deepsci.apps.molecules.io import bundled_subset, read_molecules, read_qm9pack

    try:
        return read_qm9pack(limit=limit, seed=seed), "QM9 (qm9pack)"
    except Exception as exc:  # noqa: BLE001 - fall back to the bundled subset
        print(f"qm9pack unavailable ({exc}); using the bundled subset")
        return read_molecules(bundled_subset()), "bundled QM9 subset"


def speed(args) -> tuple[str, dict]:
    """Part 1: DFT single points vs. MPNN inference per molecule."""
    from deepsci.apps.molecules.graphs import featurize_set
    from deepsci.apps.molecules.label import label_molecule
    from deepsci.apps.molecules.model import ModelConfig, build_model
    from deepsci.apps.molecules.predict import predict_table
    from deepsci.core.bench import matmul_peak_gflops, table

    ms, source = _dataset(args.inference_molecules, seed=1)
    heavy = [sum(a.GetAtomicNum() > 1 for a in m.GetAtoms()) for m in ms.mols]
    nine = [i for i, h in enumerate(heavy) if h == 9][: args.dft_molecules]
    dft_times, dft_cpu = [], []
    for i in nine:
        t, c = time.perf_counter(), time.process_time()
        label_molecule(ms.mols[i], method="b3lyp-qm9", polarizability=False)
        dft_times.append(time.perf_counter() - t)
        dft_cpu.append(time.process_time() - c)
        print(f"  B3LYP/6-31G(2df,p) {ms.ids[i]} ({ms.mols[i].GetNumAtoms()} atoms): "
              f"{dft_times[-1]:.1f} s wall, {dft_cpu[-1]:.1f} s CPU", flush=True)
    # --dft-molecules 0 measures only the MPNN side (speed-ups then read as NaN).
    dft = float(np.mean(dft_times)) if dft_times else float("nan")
    dftc = float(np.mean(dft_cpu)) if dft_cpu else float("nan")
    # CPU seconds are reported beside wall time because the machine is shared:
    # their ratio does not depend on how many other jobs compete for the cores.
    rows = [{"method": f"PySCF B3LYP/6-31G(2df,p) single point ({len(nine)} mol, 9 heavy atoms)",
             "molecules": len(nine), "s / molecule": dft, "molecules / s": 1 / dft if dft_times else None,
             "CPU s / molecule": dftc, "speed-up vs DFT (wall)": 1.0,
             "speed-up vs DFT (CPU)": 1.0}]
    info = {"dft_s_per_mol": dft, "dft_cpu_s_per_mol": dftc}
    measured = {"cores": len(os.sched_getaffinity(0)), "molecules": len(ms),
                "batch": args.batch_size, "streams": args.streams, "dft_molecules": len(nine),
                "dft_cpu_s": dftc, "dft_wall_s": dft, "graphs": {}}
    variants = [("1 stream", 1, False), (f"{args.streams} streams", args.streams, False),
                (f"{args.streams} streams + XLA", args.streams, True)]
    for graph in args.graphs.split(","):
        t, c = time.perf_counter(), time.process_time()
        tab = featurize_set(ms, graph, desc=f"featurise {graph}")
        feat = (time.perf_counter() - t) / len(ms)
        # Child-process CPU is not in process_time; featurisation CPU is reported as wall x workers.
        featc = feat * min(len(os.sched_getaffinity(0)), -(-len(ms) // 1000))
        model = build_model(12, ModelConfig(graph=graph), {"mean": [0.0] * 12, "std": [1.0] * 12,
                                                      "atomref": None})

        def row(name, w, c):
            return {"method": name, "molecules": len(ms), "s / molecule": w, "molecules / s": 1 / w,
                    "CPU s / molecule": c, "speed-up vs DFT (wall)": dft / w,
                    "speed-up vs DFT (CPU)": dftc / c}

        best_per = float("inf")
        g = measured["graphs"][graph] = {"per_s": {}, "cpu_s": []}
        for label, streams, jit in variants:
            def run(model=model, tab=tab, streams=streams, jit=jit):
                predict_table([model], tab, batch_size=args.batch_size, streams=streams,
                              jit_compile=jit)

            run()  # warm-up (a new predict function per call, so tracing is inside each call)
            best, bestc = float("inf"), float("inf")
            for _ in range(args.repeats):
                t, c = time.perf_counter(), time.process_time()
                run()
                best = min(best, time.perf_counter() - t)
                bestc = min(bestc, time.process_time() - c)
            per, perc = best / len(ms), bestc / len(ms)
            best_per = min(best_per, per)
            rows.append(row(f"MPNN inference, {graph} graph, {label} (default size, batch "
                            f"{args.batch_size})", per, perc))
            info[f"mpnn_{graph}_{label}_mol_per_s"] = 1 / per
            g["per_s"][label] = 1 / per
            if streams == args.streams:
                g["cpu_s"].append(perc)
        g.update(featurise_per_s=1 / feat, wall_s_with_featurisation=feat + best_per)
        rows.append(row(f"RDKit featurisation, {graph} graph (processes: "
                        f"{len(os.sched_getaffinity(0))})", feat, featc))
        rows.append(row(f"featurisation + fastest inference, {graph} graph", feat + best_per,
                        float("nan")))
    peak = matmul_peak_gflops()
    md = table(rows, ["method", "molecules", "s / molecule", "molecules / s", "CPU s / molecule",
                      "speed-up vs DFT (wall)", "speed-up vs DFT (CPU)"])
    md += (f"\n\nData: {source}. Measured float32 matmul peak now: {peak:.0f} GFLOP/s. "
           f"Default model: units 64, 3 tied steps, edge network (64, 16), set2set 3, head 128.")
    info["matmul_peak_gflops"] = peak
    info["measured"] = measured
    info["load"] = os.getloadavg()
    md += f" Load average (1, 5, 15 min) at the end of this part: {info['load']}."
    return md, info


def _chemprop_start(args, work: Path, tr, va, te, names):
    """Start chemprop on the same split in the background; it is stopped at the budget."""
    import pandas as pd

    d = work / "chemprop"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for name, part in (("train", tr), ("val", va), ("test", te)):
        pd.DataFrame({"smiles": part.smiles, **{n: part.targets[n].to_numpy() for n in names}}) \
            .to_csv(d / f"{name}.csv", index=False)
    cmd = [args.chemprop, "train", "--data-path", str(d / "train.csv"), str(d / "val.csv"),
           str(d / "test.csv"), "--task-type", "regression", "--output-dir", str(d / "out"),
           "--epochs", "1000", "--num-workers", "0", "--batch-size", "64"]
    print("  " + " ".join(cmd), flush=True)
    log = open(d / "train.log", "w")  # noqa: SIM115 - closed in _chemprop_finish
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return {"proc": proc, "log": log, "dir": d, "t0": time.perf_counter()}


def _chemprop_finish(args, job, names):
    """Stop chemprop at the budget, then predict the test set with its best checkpoint."""
    import pandas as pd

    proc, d = job["proc"], job["dir"]
    left = args.budget_min * 60 - (time.perf_counter() - job["t0"])
    try:
        proc.wait(timeout=max(left, 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    job["log"].close()
    seconds = time.perf_counter() - job["t0"]
    ckpts = sorted((d / "out").rglob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise RuntimeError(f"chemprop wrote no checkpoint in {seconds:.0f} s; see {d / 'train.log'}")
    pred_csv = d / "test_pred.csv"
    subprocess.run([args.chemprop, "predict", "--test-path", str(d / "test.csv"),
                    "--model-paths", str(ckpts[-1]), "--preds-path", str(pred_csv),
                    "--num-workers", "0"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    pred = pd.read_csv(pred_csv)
    # chemprop 2.3 echoes the input columns and adds pred_0..pred_{T-1} in target order.
    cols = [f"pred_{j}" if f"pred_{j}" in pred.columns else n for j, n in enumerate(names)]
    return np.stack([pred[c].to_numpy(np.float64) for c in cols], axis=1), seconds, ckpts[-1].name


def read_all(args):
    """Part 0: read QM9 (qm9pack) and featurise every molecule, timed."""
    from deepsci.apps.molecules.graphs import featurize_set
    from deepsci.apps.molecules.train import load_dataset
    from deepsci.core.bench import table

    t = time.perf_counter()
    ms = load_dataset("qm9", limit=args.limit, seed=0)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    tab = featurize_set(ms, args.graph)
    feat_s = time.perf_counter() - t
    n = len(ms) + ms.n_skipped
    why = "; ".join(f"{k}: {v}" for k, v in ms.skip_reasons.items()) or "none"
    rows = [{"stage": "load_dataset('qm9') (bonds from SMILES template + geometry)", "molecules": n,
             "seconds": read_s, "molecules / s": n / read_s},
            {"stage": f"featurise, {args.graph} graph", "molecules": len(ms), "seconds": feat_s,
             "molecules / s": len(ms) / feat_s},
            {"stage": "total", "molecules": len(ms), "seconds": read_s + feat_s,
             "molecules / s": len(ms) / (read_s + feat_s)}]
    md = table(rows, ["stage", "molecules", "seconds", "molecules / s"])
    md += (f"\n\nKept {len(ms)} of {n} molecules; skipped {ms.n_skipped} ({why}). "
           f"Processes: {len(os.sched_getaffinity(0))} (one per available core).")
    return md, ms, tab


def accuracy(args, ms=None, tab=None) -> tuple[str, dict]:
    """Part 2: test MAE per target after a fixed wall-clock training budget.

    chemprop (when given) trains at the same time as our model, so both see the
    same machine load over the same budget.
    """
    from deepsci.apps.molecules.evaluate import target_metrics
    from deepsci.apps.molecules.graphs import featurize_set
    from deepsci.apps.molecules.model import ModelConfig
    from deepsci.apps.molecules.predict import predict_table
    from deepsci.apps.molecules.targets import GILMER_TARGETS, TARGETS
    from deepsci.apps.molecules.train import (
        MoleculeTrainConfig,
        load_dataset,
        split_indices,
        train_molecules,
    )
    from deepsci.core.bench import table
    from deepsci.core.training import TrainConfig

    work = Path(args.work)
    run = work / "mpnn"
    if run.exists():
        shutil.rmtree(run)
    if ms is None:
        ms = load_dataset("qm9", limit=args.limit, seed=0)
    tr, va, te = split_indices(ms, kind="random", val=args.val, test=args.test, seed=0)
    test = ms.subset(te)
    names = list(GILMER_TARGETS)
    job = _chemprop_start(args, work, ms.subset(tr), ms.subset(va), test, names) \
        if args.chemprop else None
    cfg = MoleculeTrainConfig(
        data="qm9", out=str(run), limit=args.limit, val=args.val, test=args.test, seed=0,
        time_budget=args.budget_min, model=ModelConfig(graph=args.graph),
        train=TrainConfig(epochs=10_000, steps_per_epoch=args.steps_per_epoch,
                          batch_size=args.train_batch, learning_rate=1e-3,
                          lr_schedule="exponential", decay_steps=args.decay_steps, decay_rate=0.5,
                          checkpoint_every=10_000))
    t0 = time.perf_counter()
    summary = train_molecules(cfg, dataset=ms, table=tab)
    ours_s = time.perf_counter() - t0
    y = test.targets[names].to_numpy(np.float64)
    pred, _ = predict_table(summary["members"], featurize_set(test, args.graph))
    units = {n: TARGETS[n].unit for n in names}
    ours = target_metrics(y, pred, names, units)
    theirs, cp_s = None, None
    if job:
        cp_pred, cp_s, ckpt = _chemprop_finish(args, job, names)
        theirs = target_metrics(y, cp_pred, names, units)
    rows = []
    for n in names:
        r = {"target": n, "unit": units[n], "chem. acc.": TARGETS[n].chemical_accuracy,
             "MPNN MAE": ours[n]["mae"], "MPNN ratio": ours[n]["ratio"]}
        if theirs:
            r["chemprop MAE"] = theirs[n]["mae"]
            r["chemprop ratio"] = theirs[n]["ratio"]
        rows.append(r)
    cols = ["target", "unit", "chem. acc.", "MPNN MAE", "MPNN ratio"]
    if theirs:
        cols += ["chemprop MAE", "chemprop ratio"]
    md = table(rows, cols)
    import json

    hist = run / "member_0" / "history.json"
    last = json.loads(hist.read_text())[-1] if hist.exists() else {}
    md += (f"\n\nSplit: {summary['n_train']} train / {summary['n_val']} val / {summary['n_test']} "
           f"test molecules (random, seed 0, from {len(ms) + ms.n_skipped} QM9 molecules; "
           f"{ms.n_skipped} skipped: {ms.skip_reasons or 'none'}). Our MPNN "
           f"({args.graph} graph, default size, QM9's 3-D geometries): {args.budget_min:g} min "
           f"training budget, {last.get('step', '?')} steps of {args.train_batch} molecules, Adam "
           f"lr 1e-3 decayed x0.5 every {args.decay_steps} steps; the training stage took "
           f"{ours_s / 60:.1f} min.")
    if theirs:
        md += (f" chemprop 2.3.1 (D-MPNN on SMILES only, its default size, batch 64, trained "
               f"concurrently): same split, stopped at the same budget ({cp_s / 60:.1f} min), "
               f"best checkpoint by validation loss ({ckpt}).")
    measured = {"limit": args.limit, "val": args.val, "test": args.test,
                "budget_min": args.budget_min, "steps": last.get("step", 0), "ours": ours,
                "chemprop": theirs,
                "chemprop_version": _chemprop_version(args.chemprop) if theirs else None}
    return md, {"ours": ours, "chemprop": theirs, "measured": measured}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="molecules benchmark")
    p.add_argument("--dft-molecules", type=int, default=5)
    p.add_argument("--inference-molecules", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--streams", type=int, default=2, help="concurrent inference threads")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (best is kept)")
    p.add_argument("--graphs", default="bond,complete", help="graph kinds timed in part 1")
    p.add_argument("--limit", type=int, default=None, help="QM9 molecules sampled (default all)")
    p.add_argument("--val", type=float, default=10_000)
    p.add_argument("--test", type=float, default=10_000)
    p.add_argument("--budget-min", type=float, default=30.0)
    p.add_argument("--graph", default="bond")
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--steps-per-epoch", type=int, default=500)
    p.add_argument("--decay-steps", type=int, default=3_000)
    p.add_argument("--chemprop", default=None, help="chemprop CLI to compare against")
    p.add_argument("--e2e-molecules", type=int, default=20,
                   help="part 3: SMILES -> conformer -> MPNN vs -> B3LYP on this many (0 skips)")
    p.add_argument("--e2e-heavy", type=int, default=9, help="heavy atoms of part 3's molecules")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--skip-read", action="store_true", help="skip timing the full QM9 read")
    p.add_argument("--work", default="/tmp/deepsci-bench-molecules")
    p.add_argument("--results", default=None, help="Also write the section to this file")
    p.add_argument("--no-record", action="store_true",
                   help="do not write bench/results/molecules.json (and bench/RESULTS.md)")
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    load = os.getloadavg()
    from deepsci.core.bench import machine_info

    info = machine_info()
    head = (f"## molecules ({dt.date.today().isoformat()}, {info['cores']} cores, {info['cpu']}, "
            f"TensorFlow {info.get('tensorflow')})\n\nCommand: `python bench/molecules.py "
            f"{' '.join(argv)}`\n")
    parts = [head]

    def save():
        # Written after each part so a long run that dies later keeps what it measured.
        if args.results:
            Path(args.results).write_text("\n".join(parts) + "\n")

    measured: dict = {"speed": None, "e2e": None, "accuracy": None}
    if not args.skip_speed:
        md, part = speed(args)
        measured["speed"] = part["measured"]
        parts += ["### Speed: MPNN inference vs. the DFT it learns\n", md, ""]
        print(md, flush=True)
        save()
    if args.e2e_molecules > 0:
        from molecules_e2e import end_to_end

        md, measured["e2e"] = end_to_end(args, Path(args.work) / "e2e")
        parts += ["### From SMILES, both sides paying for their own conformer\n", md, ""]
        print(md, flush=True)
        save()
    ms = tab = None
    if not args.skip_read:
        md, ms, tab = read_all(args)
        parts += ["### Reading and featurising QM9\n", md, ""]
        print(md, flush=True)
        save()
    if not args.skip_accuracy:
        md, acc = accuracy(args, ms, tab)
        measured["accuracy"] = acc["measured"]
        parts += [f"### Accuracy on QM9 after a {args.budget_min:g}-minute CPU budget "
                  "(test MAE; ratio = MAE / chemical accuracy)\n", md, ""]
        print(md, flush=True)
        save()
    print("\n".join(parts))
    rows = result_rows(measured)
    if rows and not args.no_record:
        _record(rows, argv, load)


if __name__ == "__main__":
    main()
