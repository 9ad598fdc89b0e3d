"""Inference with an ensemble, and the field's metrics: MAE per target in its unit
and as a ratio to chemical accuracy (Faber et al. 2017; Gilmer et al. 2017, Table 2),
with parity plots.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.errors import InputError
from deepsci.core.io import (
    save_config,
    save_figure,
    write_json,
    write_run_info,
    write_text,
)

from .graphs import GraphTable, _packing, collate, pad_batch
from .io import available_cpus
from .targets import TARGETS

__all__ = ["EvaluateConfig", "load_members", "inference_plan", "predict_table", "target_metrics",
           "metrics_table", "parity_plot", "evaluate_run", "resolve_models"]


@dataclass
class EvaluateConfig:
    """``deepsci molecules evaluate``.

    Attributes
    ----------
    model : str
        A training folder (all members) or one ``model.keras``.
    data : str or None
        Labelled molecules (any readable format); ``None``: the folder's ``test_set.csv.gz``.
    out : str
        Output folder for metrics.json, metrics.md, parity.png and predictions.csv.
    batch_size : int
    skip_invalid : bool
    """

    model: str
    data: str | None = None
    out: str = "runs/molecules/eval"
    batch_size: int = 1024
    smiles_column: str = "smiles"
    skip_invalid: bool = False


def resolve_models(model: str | Path) -> list[Path]:
    """Member model files of a training folder, or the single file given."""
    p = Path(model)
    if p.is_dir():
        found = sorted(p.glob("member_*/model.keras"))
        if not found:
            raise InputError("expected a training folder with member_*/model.keras, found none", p)
        return found
    if p.suffix != ".keras":
        raise InputError(f"expected a .keras model or a training folder, found {p.suffix or 'a file'}",
                         p)
    if not p.exists():
        raise InputError("expected a trained model, found no file", p)
    return [p]


def load_members(paths):
    """Load ensemble members; all must share targets and graph kind."""
    from deepsci.core.models.serialization import load_model

    models, meta = [], None
    for p in paths:
        m, side = load_model(p)
        if side.get("app") != "molecules":
            raise InputError(f"expected a molecules model, found one from app {side.get('app')!r}", p)
        if meta is not None and (side["targets"] != meta["targets"]
                                 or side["input_spec"] != meta["input_spec"]):
            raise InputError("expected ensemble members with the same targets and features, "
                             "found a mismatch", p)
        models.append(m)
        meta = meta or side
    return models, meta


_PREDICT_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _predict_fn(model, jit_compile: bool):
    """One predict function per model and XLA setting, kept while the model lives.

    Packed batches of one table share their shapes, so it traces (and, with
    XLA, compiles) once per table shape rather than once per call.
    """
    import tensorflow as tf

    fns = _PREDICT_FNS.setdefault(model, {})
    if jit_compile not in fns:
        fns[jit_compile] = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)
    return fns[jit_compile]


def inference_plan(table: GraphTable, batch_size: int) -> tuple[list[np.ndarray], int, int]:
    """Molecules of ``table`` in order, packed into batches of one fixed shape.

    Returns
    -------
    batches : list of (b,) int64 arrays, b <= batch_size
    atoms, edges : int
        Padded atom and edge counts of every batch (multiples of 256); a batch
        closes early rather than overflow them, so one trace serves all.
    """
    n = len(table)
    if n == 0:
        return [], 0, 0
    per = max(1, min(int(batch_size), n))
    atoms, edges = _packing(table, per)
    atoms, edges = -(-atoms // 256) * 256, -(-edges // 256) * 256
    na, ne = np.diff(table.atom_splits), np.diff(table.edge_splits)
    batches, start, a, e = [], 0, 0, 0
    for i in range(n):
        if i > start and (i - start == per or a + na[i] >= atoms or e + ne[i] > edges):
            batches.append(np.arange(start, i))
            start, a, e = i, 0, 0
        a += na[i]
        e += ne[i]
    batches.append(np.arange(start, n))
    return batches, atoms, edges


def predict_table(models, table: GraphTable, *, batch_size: int = 1024, streams: int | None = None,
                  jit_compile: bool = False):
    """Ensemble mean and standard deviation for every molecule of ``table``.

    Batches are packed to one padded shape (see :func:`inference_plan`), so
    the predict function is traced once (and, with ``jit_compile``, compiled
    once by XLA), and ``streams`` threads run batches concurrently: the
    gather/scatter ops of message passing use one core each, so one stream
    per core is what keeps all cores busy.

    Parameters
    ----------
    models : list of keras.Model or list of paths
    table : GraphTable
    batch_size : int
        Molecules per inference batch (at most).
    streams : int, optional
        Concurrent inference threads; default: one per available CPU.
    jit_compile : bool
        Compile the predict function with XLA.

    Returns
    -------
    mean, std : (M, T) float64
        ``std`` is 0 for a single model.
    """
    from concurrent.futures import ThreadPoolExecutor

    if models and not hasattr(models[0], "predict"):
        models, _ = load_members(models)
    batches, n_atoms, n_edges = inference_plan(table, batch_size)
    streams = max(1, min(int(streams or available_cpus()), len(batches) or 1))
    graphs = max(1, min(int(batch_size), len(table))) + 1
    outs = []
    for model in models:
        fn = _predict_fn(model, jit_compile)

        def run(index, fn=fn):
            x, _, _ = pad_batch(collate(table, index), np.zeros((len(index), 0), np.float32),
                                atoms=n_atoms, edges=n_edges, graphs=graphs)
            return np.asarray(fn(x))[:len(index)]

        if not batches:
            outs.append(np.zeros((0, int(model.output_shape[-1])), np.float64))
            continue
        first = run(batches[0])  # traced here, before threads share the function
        with ThreadPoolExecutor(streams) as pool:
            rest = list(pool.map(run, batches[1:]))
        outs.append(np.concatenate([first, *rest]).astype(np.float64))
    stack = np.stack(outs)
    return stack.mean(axis=0), (stack.std(axis=0) if len(outs) > 1 else np.zeros_like(stack[0]))


def target_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: list[str],
                   units: dict[str, str]) -> dict[str, dict]:
    """MAE, RMSE, R² and MAE / chemical accuracy per target (NaN labels ignored)."""
    out = {}
    for j, n in enumerate(names):
        ok = np.isfinite(y_true[:, j])
        t, p = y_true[ok, j], y_pred[ok, j]
        if len(t) == 0:
            continue
        mae = float(np.mean(np.abs(p - t)))
        var = float(np.var(t))
        ca = TARGETS[n].chemical_accuracy if n in TARGETS else None
        out[n] = {"unit": units.get(n, ""), "n": int(len(t)), "mae": mae,
                  "rmse": float(np.sqrt(np.mean((p - t) ** 2))),
                  "r2": float(1 - np.mean((p - t) ** 2) / var) if var > 0 else float("nan"),
                  "chemical_accuracy": ca, "ratio": (mae / ca) if ca else None}
    return out


def metrics_table(metrics: dict[str, dict]) -> str:
    """A Markdown table like Gilmer et al. Table 2 (error ratio < 1 = chemical accuracy)."""
    from deepsci.core.bench import table

    rows = []
    for n, m in metrics.items():
        rows.append({"target": n, "unit": m["unit"], "n": m["n"], "MAE": f"{m['mae']:.4g}",
                     "chem. acc.": "" if m["chemical_accuracy"] is None else m["chemical_accuracy"],
                     "MAE / chem. acc.": "" if m["ratio"] is None else f"{m['ratio']:.2f}",
                     "R²": f"{m['r2']:.3f}"})
    return table(rows, ["target", "unit", "n", "MAE", "chem. acc.", "MAE / chem. acc.", "R²"])


def parity_plot(y_true: np.ndarray, y_pred: np.ndarray, names: list[str], units: dict[str, str],
                path: str | Path) -> Path:
    """Predicted vs. DFT value per target, one panel each, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(names)
    cols = min(k, 4)
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for j, n in enumerate(names):
        ax = axes[j // cols][j % cols]
        ok = np.isfinite(y_true[:, j])
        t, p = y_true[ok, j], y_pred[ok, j]
        ax.scatter(t, p, s=4, alpha=0.5, lw=0)
        if len(t):
            lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_title(f"{n}  MAE {np.mean(np.abs(p - t)):.3g} {units.get(n, '')}", fontsize=9)
        ax.set_xlabel(f"DFT [{units.get(n, '')}]", fontsize=8)
        ax.set_ylabel("MPNN", fontsize=8)
        ax.tick_params(labelsize=7)
    for j in range(k, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    path = Path(path)
    return save_figure(fig, path, dpi=110)


def evaluate_run(cfg: EvaluateConfig) -> dict:
    """Score a trained model (or ensemble) on labelled molecules; write the report files."""
    from .featurize import featurize
    from .io import read_molecules, write_csv

    paths = resolve_models(cfg.model)
    data = cfg.data
    if data is None:
        folder = Path(cfg.model) if Path(cfg.model).is_dir() else Path(cfg.model).parent.parent
        data = folder / "test_set.csv.gz"
        if not data.exists():
            raise InputError("expected --data or a test_set.csv.gz in the training folder, found "
                             "neither", folder)
    models, meta = load_members(paths)
    names, units = meta["targets"], meta["units"]
    ms = read_molecules(data, targets=None, smiles_column=cfg.smiles_column,
                        skip_invalid=cfg.skip_invalid)
    have = [n for n in names if n in ms.targets.columns]
    if not have:
        raise InputError(f"expected labels for at least one of {names}, found columns "
                         f"{list(ms.targets.columns)}", data)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.json")
    write_run_info(out, command="molecules evaluate", config=cfg)
    table = GraphTable.from_graphs([featurize(m, graph=meta["input_spec"]["graph"]) for m in ms.mols])
    mean, std = predict_table(models, table, batch_size=cfg.batch_size)
    cols = [names.index(n) for n in have]
    y_true = ms.targets[have].to_numpy(np.float64)
    y_pred = mean[:, cols]
    metrics = target_metrics(y_true, y_pred, have, units)
    md = metrics_table(metrics)
    write_text(out / "metrics.md", f"# Evaluation on {Path(data).name}\n\nmodel: {cfg.model} "
               f"({len(models)} member(s)); {len(ms)} molecules, {ms.n_skipped} skipped\n\n{md}\n")
    write_json(out / "metrics.json", {"data": str(data), "n": len(ms), "n_skipped": ms.n_skipped,
                                      "members": [str(p) for p in paths], "targets": metrics})
    parity_plot(y_true, y_pred, have, units, out / "parity.png")
    columns = {}
    for j, n in enumerate(names):
        columns[n] = mean[:, j]
        if len(models) > 1:
            columns[f"{n}_std"] = std[:, j]
    write_csv(out / "predictions.csv", ids=ms.ids, smiles=ms.smiles, columns=columns,
              units={**units, **{f"{n}_std": units[n] for n in names}})
    return {"metrics": metrics, "table": md, "n": len(ms), "n_skipped": ms.n_skipped,
            "out": str(out)}
