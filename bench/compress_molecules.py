"""Issue 15 bench table for molecules: teacher ensemble, single model, distilled and
hard-label students, and the int8 student run by LiteRT, on held-out molecules.

Everything goes through the product: ``train_molecules`` (teacher members, seeds
0..N-1), ``distill`` (student; ``alpha=0`` is the hard-label control: the same
student architecture and recipe on labels only), ``run_export`` with the app's
``EXPORT`` (int8), and ``predict_table`` (every row's MAE and throughput).

quick=True: the bundled QM9 subset (600 molecules, 2 teacher members, 2 epochs,
small networks), minutes on 2 cores. Full: QM9 from qm9pack, the shipped
``molecules-qm9`` as a 1-member teacher and single model (it is the only
shipped member), students trained ``budget_min`` minutes each.

FLOPs per molecule are counted by layer (2 x multiply-adds of every matrix
product, at the held-out set's mean atom and edge counts; the int8 file
computes its 30 atom / 60 edge slots, so its count uses those). Throughput is
molecules/s of ``predict_table`` on the featurised held-out set (featurisation
excluded, as in bench/molecules.py), best of interleaved repeats on the same
cores; start-up is loading the model and predicting one molecule.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _flops(mc: dict, na: float, ne: float) -> float:
    d, k = int(mc["units"]), int(mc["edge_hidden"][-1]) + 1
    edge_net, fan = 0, 6
    for h in mc["edge_hidden"]:
        edge_net, fan = edge_net + fan * h, h
    per_step = na * (d * k * d + 2 * d * 3 * d) + ne * k * d
    s2s = int(mc["set2set_steps"]) * (3 * d * 4 * d + na * 2 * d)
    head, fan = 0, 2 * d
    for h in [*mc["head"], 12]:
        head, fan = head + fan * h, h
    return 2.0 * (na * 13 * d + ne * edge_net + int(mc["steps"]) * per_step + s2s + head)


def _bytes(paths) -> int:
    return int(sum(Path(p).stat().st_size for p in paths))


def rows(quick: bool = False, *, work: str | None = None, budget_min: float = 20.0,
         repeats: int = 3) -> dict:
    """The bench table (see the module docstring)."""
    from deepsci.apps.molecules.compress import EXPORT, DistillConfig, distill
    from deepsci.apps.molecules.graphs import featurize_set
    from deepsci.apps.molecules.io import read_molecules
    from deepsci.apps.molecules.model import ModelConfig
    from deepsci.apps.molecules.predict import load_members, predict_table
    from deepsci.apps.molecules.train import MoleculeTrainConfig, train_molecules
    from deepsci.core.compress import DistillSettings, ExportConfig, run_export
    from deepsci.core.models.registry import resolve_model
    from deepsci.core.training import TrainConfig

    work = Path(work or tempfile.mkdtemp(prefix="compress-molecules-"))
    notes = []
    small = ModelConfig(units=32, edge_hidden=(32, 16))
    student = ModelConfig(units=16, edge_hidden=(16, 8), set2set_steps=2, head=(32,))
    common = dict(data="subset", limit=600, val=0.15, test=0.2, seed=0) if quick else \
        dict(data="qm9", val=10000, test=10000, seed=0)
    if quick:
        tc = TrainConfig(epochs=2, batch_size=32, learning_rate=3e-3, lr_schedule="constant",
                         tensorboard=False)
        train_molecules(MoleculeTrainConfig(out=str(work / "teacher"), ensemble=2, model=small,
                                            train=tc, **common))
        teacher = str(work / "teacher")
        single = str(work / "teacher/member_0/model.keras")
        test_file = work / "teacher/test_set.csv.gz"
        notes.append("quick: bundled QM9 subset (600 molecules, seed-0 random split), teacher = "
                     "2 members (units 32, seeds 0-1, 2 epochs); students units 16, 2 epochs")
        extra = dict(epochs=2, batch_size=32, learning_rate=3e-3)
    else:
        teacher = single = str(resolve_model("molecules-qm9", app="molecules",
                                             task="qm9-properties"))
        test_file = None
        notes.append("full: teacher = the shipped molecules-qm9 (1 member: the only shipped "
                     "one), students trained --time-budget minutes on QM9's training split")
        extra = dict(epochs=10000, time_budget=budget_min)
    students = {}
    for name, alpha in (("distilled student", 0.7), ("hard-label student", 0.0)):
        out = work / name.replace(" ", "-")
        distill(DistillConfig(distill=DistillSettings(teacher=teacher, alpha=alpha), out=str(out),
                              student=student, **common, **extra))
        students[name] = out
    if test_file is None:
        test_file = students["distilled student"] / "test_set.csv.gz"
    int8 = work / "student_int8.tflite"
    report = run_export(ExportConfig(model=str(students["distilled student"] / "member_0/model.keras"),
                                     out=int8, quantize="int8", inputs=test_file if quick else None,
                                     samples=256, check=256, batch_size=64, tolerance=1e9),
                        EXPORT, overwrite=True)
    notes.append(f"int8 export: {report['measure']} {report['difference']:.4g}; float ops "
                 f"{report['float_ops']}")
    ms = read_molecules(test_file)
    table = featurize_set(ms, "bond", workers=1)
    na, ne = float(np.diff(table.atom_splits).mean()), float(np.diff(table.edge_splits).mean())
    specs = {"teacher ensemble fp32": teacher, "single model fp32": single,
             "distilled student fp32": str(students["distilled student"]),
             "distilled student int8 (LiteRT)": str(int8),
             "hard-label student fp32": str(students["hard-label student"])}
    loaded, out_rows = {}, []
    for name, spec in specs.items():
        t = time.perf_counter()
        ens = load_members(spec)
        predict_table(ens, _first(table), batch_size=1024)
        startup = time.perf_counter() - t
        loaded[name] = (ens, startup)
    best = {n: float("inf") for n in specs}
    preds = {}
    for _ in range(repeats):  # interleaved: every model once per round
        for name, (ens, _) in loaded.items():
            t = time.perf_counter()
            preds[name], _ = predict_table(ens, table, batch_size=1024)
            best[name] = min(best[name], time.perf_counter() - t)
    names = list(loaded["single model fp32"][0].card.outputs)
    y = ms.targets.reindex(columns=names).to_numpy(np.float64)
    for name, (ens, startup) in loaded.items():
        mcs = [c.extra.get("model_config") or c.training.get("config", {}).get("model")
               for c in ens.cards]
        slots = name.endswith("(LiteRT)")
        flops = sum(_flops(mc, 30 if slots else na, 60 if slots else ne) for mc in mcs)
        row = {"model": name, "items_per_s": len(table) / best[name],
               "bytes": _bytes(ens.paths), "flops": flops, "startup_s": startup}
        for j, n in enumerate(names):
            ok = np.isfinite(y[:, j])
            row[f"{n}_mae"] = float(np.mean(np.abs(preds[name][ok, j] - y[ok, j])))
        out_rows.append(row)
    notes.append(f"{len(table)} held-out molecules; MAE in each target's unit "
                 f"({json.dumps({n: o.get('unit') for n, o in ens.card.outputs.items()})})")
    return {"app": "molecules", "rows": out_rows, "notes": notes}


def _first(table):
    from deepsci.apps.molecules.graphs import GraphTable, graph_at

    return GraphTable.from_graphs([graph_at(table, 0)])


if __name__ == "__main__":
    import sys

    print(json.dumps(rows(quick="--full" not in sys.argv), indent=1))
