"""The default demo: the shipped MPNN vs ridge on RDKit descriptors, QM9 test-split molecules only."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from deepsci.core.errors import InputError
from deepsci.core.io import read_json, write_json, write_text
from deepsci.core.models.registry import default_model, resolve_model
from deepsci.core.report import DemoResult, DemoRow
from deepsci.core.runs import RunDir

from .io.csvfile import output_frame
from .io.outputs import sdf_text
from .model import APP, TASK

__all__ = ["shipped_demo", "held_out", "DFT_CPU_S", "DFT_SOURCE", "QUICK_MOLECULES"]

# Measured by bench/molecules.py (bench/RESULTS.md, molecules): PySCF B3LYP/6-31G(2df,p)
# single points on 5 QM9 molecules with 9 heavy atoms, on this project's 2-core machine.
DFT_CPU_S = 307.2
DFT_SOURCE = ("PySCF B3LYP/6-31G(2df,p) single point, 307.2 CPU-s per molecule "
              "(bench/molecules.py, 5 QM9 molecules with 9 heavy atoms, bench/RESULTS.md)")
QUICK_MOLECULES = 64
BASELINE = "ridge on 24 RDKit descriptors (fit on the training split)"


def held_out(folder: Path, quick: bool, work: Path):
    """The bundled-subset molecules in the shipped model's test split, and the split record.

    The subset's rows in the split are copied to ``work/held_out.csv`` first
    (the demo's data, kept), so only those molecules are built.

    Raises
    ------
    InputError
        The model folder has no ``test_split.json``, or no bundled molecule is in it.
    """
    from .io import bundled_subset, read_molecules
    from .release import qm9_index

    split_file = folder / "test_split.json"
    if not split_file.is_file():
        raise InputError("expected the shipped model's test split, found none", split_file)
    split = read_json(split_file)
    test = set(int(i) for i in split["test_qm9_indices"])
    df = pd.read_csv(bundled_subset())
    df = df[[qm9_index(i) in test for i in df["id"]]]
    if quick:
        df = df.head(QUICK_MOLECULES)
    if df.empty:
        raise InputError("expected bundled QM9 molecules in the model's test split, found none",
                         split_file)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "held_out.csv"
    tmp = work / "held_out.csv.tmp"
    df.to_csv(tmp, index=False)
    tmp.replace(path)
    return read_molecules(path), split


def _predict(path: str, sub, graph: str) -> tuple[np.ndarray, float, float]:
    """MPNN predictions (N, T), CPU-s of the network and wall-s with featurisation."""
    from .graphs import featurize_set
    from .predict import load_members, predict_table

    ens = load_members(path)
    t0 = time.perf_counter()
    table = featurize_set(sub, graph, workers=1)
    predict_table(ens, table)  # warm-up: tracing is not per-molecule cost
    c0 = time.process_time()
    pred, _ = predict_table(ens, table)
    cpu = time.process_time() - c0
    return np.asarray(pred, np.float64), cpu, time.perf_counter() - t0


def _write_predictions(path: Path, sub, names, y, pred, base) -> None:
    from .release import qm9_index

    cols = {"id": sub.ids, "qm9_index": [qm9_index(i) for i in sub.ids], "smiles": sub.smiles}
    for j, n in enumerate(names):
        cols[f"{n}_true"], cols[f"{n}_mpnn"], cols[f"{n}_ridge"] = y[:, j], pred[:, j], base[:, j]
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(cols).to_csv(tmp, index=False)
    tmp.replace(path)


def shipped_demo(out_dir: Path, *, quick: bool = False) -> DemoResult:
    """Score the default shipped model and its ridge baseline on held-out QM9 molecules."""
    from .baseline import descriptors, predict_ridge
    from .evaluate import target_metrics
    from .predict import output_units

    t0 = time.perf_counter()
    path = resolve_model(None, app=APP, task=TASK)
    m = default_model(APP, TASK)
    sub, split = held_out(m.folder, quick, Path(out_dir))
    names, units = output_units(m.card)
    y = sub.targets[names].to_numpy(np.float64)
    pred, cpu, _ = _predict(path, sub, m.card.input_spec["graph"])
    ridge = read_json(m.folder / "baseline.json")
    base = predict_ridge(ridge, descriptors(sub.mols))[:, [ridge["targets"].index(n) for n in names]]
    ours, theirs = target_metrics(y, pred, names, units), target_metrics(y, base, names, units)
    data = (f"{len(sub)} QM9 molecules of the bundled subset in {m.name}'s test split "
            f"(seed {split['seed']}, test_split.json)")
    rows = [DemoRow(f"{n} MAE [{units[n]}]", round(ours[n]["mae"], 4), round(theirs[n]["mae"], 4),
                    BASELINE, False, m.name, data) for n in names]
    ms_per = 1e3 * cpu / len(sub)
    rows.append(DemoRow("CPU ms per molecule (network vs DFT)", round(ms_per, 4),
                        DFT_CPU_S * 1e3, DFT_SOURCE, False, m.name, data))
    out_dir = Path(out_dir)
    with RunDir(out_dir, command="molecules demo", config={"quick": quick, "train": False},
                inputs=[path]) as run:
        _write_predictions(run.file("predictions.csv"), sub, names, y, pred, base)
        # The structures with the MPNN's predictions, for a chemist's viewer (as predict writes).
        frame = output_frame(ids=sub.ids, smiles=sub.smiles, units=units, mols=sub.mols,
                             columns={n: pred[:, j] for j, n in enumerate(names)})
        write_text(run.file("predictions.sdf"), sdf_text(frame, sub.mols))
        write_json(run.file("metrics.json"), {"model": m.name, "n": len(sub), "mpnn": ours,
                                              "ridge": theirs, "cpu_ms_per_molecule": ms_per})
        run.record(n=len(sub), model=m.name, data=data)
    text = (f"{m.name} (shipped) and {BASELINE} on {data}; no molecule here was used to fit "
            f"or tune either. Network time: {ms_per:.3f} CPU-ms per molecule "
            f"({DFT_CPU_S * 1e3 / max(ms_per, 1e-9):.3g}x less than DFT).")
    return DemoResult(app="molecules", title="Molecules: QM9 properties, shipped MPNN vs ridge",
                      metrics={r.metric: r.deepsci for r in rows}, text=text,
                      seconds=round(time.perf_counter() - t0, 1), rows=rows)
