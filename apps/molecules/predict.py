"""Inference: an ensemble's mean and spread for every molecule, and ``deepsci molecules predict``
(SMILES/SDF/xyz/CSV in, CSV out with one column per target and, for ensembles, its std).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import save_config, write_run_info

from .graphs import GraphTable, collate, featurize_set, packing, pad_batch
from .io import available_cpus, read_molecules, write_csv

__all__ = ["PredictConfig", "predict_molecules", "resolve_models", "load_members",
           "inference_plan", "predict_table", "prediction_columns"]


@dataclass
class PredictConfig:
    """``deepsci molecules predict``.

    Attributes
    ----------
    model : str
        Training folder (ensemble) or one ``model.keras``.
    inputs : str
        ``.smi``/``.txt`` (one SMILES per line), ``.csv`` (SMILES column, optional
        ``xyz``), ``.sdf``, ``.xyz``, a folder or a tarball of xyz files.
    out : str
        Output CSV (``.csv`` or ``.csv.gz``); headers ``name [unit]`` and, for
        ensembles, ``name_std [unit]``.
    batch_size : int
        Molecules per inference batch (at most).
    smiles_column : str
        SMILES column of a CSV input.
    skip_invalid : bool
        Skip unreadable molecules and report how many.
    seed : int
        Conformer seed for SMILES input.
    xla : bool
        Compile inference with XLA: fewer CPU-seconds per molecule on large
        inputs, a few seconds of compilation first.
    """

    model: str
    inputs: str
    out: str = "predictions.csv"
    batch_size: int = 1024
    smiles_column: str = "smiles"
    skip_invalid: bool = False
    seed: int = 0
    xla: bool = False

    def validate(self) -> PredictConfig:
        if self.batch_size < 1:
            raise ConfigError(f"expected --batch-size >= 1, found {self.batch_size}")
        return self


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
    atoms, edges = packing(table, per)
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
        M molecules.
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


def prediction_columns(mean: np.ndarray, std: np.ndarray, names: list[str], units: dict[str, str],
                       *, members: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """CSV columns of predictions: ``name`` (M,) per target and, for ensembles, ``name_std``.

    Returns
    -------
    columns : dict
        Column name → (M,) values, in target order.
    units : dict
        Column name → unit (a ``_std`` column has its target's unit).
    """
    columns, out_units = {}, dict(units)
    for j, n in enumerate(names):
        columns[n] = mean[:, j]
        if members > 1:
            columns[f"{n}_std"] = std[:, j]
            out_units[f"{n}_std"] = units[n]
    return columns, out_units


def predict_molecules(cfg: PredictConfig) -> dict:
    """Predict every molecule of ``cfg.inputs``; write the CSV atomically."""
    cfg.validate()
    paths = resolve_models(cfg.model)
    models, meta = load_members(paths)
    names, units = meta["targets"], meta["units"]
    # Targets in the input file are not needed; read the molecules only.
    ms = read_molecules(cfg.inputs, targets=None, smiles_column=cfg.smiles_column,
                        skip_invalid=cfg.skip_invalid, seed=cfg.seed)
    table = featurize_set(ms, meta["input_spec"]["graph"])
    mean, std = predict_table(models, table, batch_size=cfg.batch_size, jit_compile=cfg.xla)
    columns, out_units = prediction_columns(mean, std, names, units, members=len(models))
    out = Path(cfg.out)
    write_csv(out, ids=ms.ids, smiles=ms.smiles, columns=columns, units=out_units, mols=ms.mols)
    save_config(cfg, out.with_name(out.name.split(".")[0] + ".config.json"))
    write_run_info(out.parent, command="molecules predict", config=cfg)
    return {"out": str(out), "n": len(ms), "n_skipped": ms.n_skipped, "targets": names,
            "members": len(models), "mean": np.asarray(mean)}
