"""Inference: an ensemble's mean and spread for every molecule, and ``deepsci molecules predict``
(SMILES/SDF/xyz/CSV in, CSV out with one column per target and, for ensembles, its std).

Models are loaded through their cards (:mod:`deepsci.core.ensemble`; another app's
model is refused in one line) and run through :class:`deepsci.core.predict.Predictor`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deepsci.core.ensemble import Ensemble, combine, load_ensemble
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.models.registry import resolve_model
from deepsci.core.parallel import thread_map
from deepsci.core.runs import RunDir

from .graphs import GraphTable, collate, featurize_set, packing, pad_batch
from .io import available_cpus, check_outputs, read_molecules, remove_stale_outputs, write_outputs
from .model import APP, TASK

__all__ = ["PredictConfig", "predict_molecules", "check_out_name", "load_members",
           "output_units", "inference_plan", "predict_table", "prediction_columns", "unscale"]

@dataclass
class PredictConfig:
    """``deepsci molecules predict``.

    Attributes
    ----------
    inputs : str
        ``.smi``/``.txt`` (one SMILES per line), ``.csv`` (SMILES column, optional
        ``xyz``), ``.sdf``, ``.xyz``, a folder or a tarball of xyz files.
    model : str or None
        Training folder (ensemble), one ``model.keras`` or exported ``.tflite``,
        comma-separated model files, or a shipped model's name; none: the
        shipped default (molecules-qm9).
    out : str
        Output CSV (``.csv`` or ``.csv.gz``); headers ``name [unit]`` and, for
        ensembles, ``name_std [unit]``. The SDF beside it (``<stem>.sdf``)
        holds the same rows with each molecule's 3-D conformer.
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
    sdf : bool
        Also write ``<stem>.sdf``: every molecule with the conformer the model
        saw and its predictions as SD tags (for RDKit, DataWarrior, KNIME, PyMOL).
    """

    inputs: str
    model: str | None = None
    out: str = "predictions.csv"
    batch_size: int = 1024
    smiles_column: str = "smiles"
    skip_invalid: bool = False
    seed: int = 0
    xla: bool = False
    sdf: bool = True

    def validate(self) -> PredictConfig:
        if self.batch_size < 1:
            raise ConfigError(f"expected --batch-size >= 1, found {self.batch_size}")
        if self.seed < 0:
            raise ConfigError(f"expected --seed >= 0, found {self.seed}")
        check_out_name(self.out)
        return self


def check_out_name(out) -> None:
    """``--out`` names the CSV; an ``.sdf`` there would hide the SDF written beside it."""
    if str(out).lower().endswith((".sdf", ".sdf.gz")):
        raise ConfigError(f"expected --out as a .csv or .csv.gz file (the .sdf is written beside "
                          f"it), found {str(out)!r}")


def load_members(spec: str | os.PathLike | Sequence, *, xla: bool = False) -> Ensemble:
    """Load the molecules models ``spec`` names, checked against each other.

    Parameters
    ----------
    spec : path, ``"a.keras,b.keras"`` or a list
        A ``model.keras``, a comma-separated list, or a training folder
        (``ensemble.json`` or ``member_*/model.keras``); see
        :func:`deepsci.core.ensemble.model_paths`.
    xla : bool
        Compile each member's predict function with XLA.

    Raises
    ------
    InputError
        A missing model or card, another app's model, or members predicting
        other targets (or in another order) than the first.
    """
    ens = load_ensemble(spec, expect=APP, task=TASK, xla=xla)
    order = list(ens.card.outputs)
    for card, path in zip(ens.cards, ens.paths, strict=True):
        if list(card.outputs) != order:
            raise InputError(f"expected ensemble members predicting {order}, found "
                             f"{list(card.outputs)}", path)
    return ens


def output_units(card) -> tuple[list[str], dict[str, str]]:
    """Target names in the model's output order and their units, from its card."""
    return list(card.outputs), {n: o.get("unit", "") for n, o in card.outputs.items()}


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


def unscale(y_std: np.ndarray, counts: np.ndarray, scaling: dict) -> np.ndarray:
    """Standardised outputs of an exported model -> physical units, in float64.

    ``y_std`` (M, T), ``counts`` (M, n_elements) element counts, ``scaling`` the
    card's ``target_scaling``: ``y = y_std * std + mean + counts @ atomref``
    (what :class:`deepsci.core.models.mpnn.TargetScaler` does inside a Keras model).
    """
    y = np.asarray(y_std, np.float64) * np.asarray(scaling["std"]) + np.asarray(scaling["mean"])
    if scaling.get("atomref") is not None:
        ref = np.asarray(scaling["atomref"], np.float64)
        y = y + counts[:, :len(ref)] @ ref
    return y


def _litert_outputs(pred, card, table: GraphTable, streams: int) -> np.ndarray:
    """Every molecule of ``table`` through an exported model (fixed slots), in physical units.

    One interpreter per stream (an interpreter serves one thread at a time),
    each on one core, fed chunks of whole file batches.
    """
    import queue

    from deepsci.core.litert import LiteRTModel

    from .graphs import to_slots

    runtime = pred.model
    # The slot sizes are the file's own input shapes (atoms in_0, edges in_1).
    details = runtime._runner.get_input_details()
    atoms, edges = int(details["in_0"]["shape"][1]), int(details["in_1"]["shape"][1])
    n = len(table)
    chunk = runtime.batch_size * max(1, 2048 // runtime.batch_size)
    pool: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(streams):
        pool.put(LiteRTModel(runtime.blob, batch_size=runtime.batch_size, out_keys=runtime.out_keys,
                             n_inputs=runtime.n_inputs, threads=1, path=runtime.path).predictor())

    def run(start):
        index = np.arange(start, min(n, start + chunk))
        x = to_slots(table, index, atoms=atoms, edges=edges)
        p = pool.get()
        try:
            return np.asarray(p(x))
        finally:
            pool.put(p)

    y = np.concatenate(thread_map(run, list(range(0, n, chunk)), workers=streams))
    return unscale(y, table.element_counts(), card.preprocessing["target_scaling"])


def _predictors(models, jit_compile: bool) -> list:
    """Predictors of ``models``: an Ensemble, Keras models, predictors, or model paths."""
    from deepsci.core.predict import BatchedPredictor, predictor

    if isinstance(models, Ensemble):
        return models.predictors
    if isinstance(models, (str, os.PathLike)) or (
            models and isinstance(models[0], (str, os.PathLike))):
        return load_members(models, xla=jit_compile).predictors
    return [m if isinstance(m, BatchedPredictor) else predictor(m, xla=jit_compile)
            for m in models]


def predict_table(models, table: GraphTable, *, batch_size: int = 1024, streams: int | None = None,
                  jit_compile: bool = False):
    """Ensemble mean and standard deviation for every molecule of ``table``.

    Batches are packed to one padded shape (see :func:`inference_plan`), so
    each member's :class:`~deepsci.core.predict.Predictor` is traced once
    (and, with ``jit_compile``, compiled once by XLA), and ``streams``
    threads run batches concurrently: the gather/scatter ops of message
    passing use one core each, so one stream per core keeps all cores busy.

    Parameters
    ----------
    models : Ensemble, list of keras.Model or Predictor, or model paths
    table : GraphTable
        M molecules.
    batch_size : int
        Molecules per inference batch (at most).
    streams : int, optional
        Concurrent inference threads; default: one per available CPU.
    jit_compile : bool
        Compile the predict function with XLA (models given as Keras models or paths).

    Returns
    -------
    mean, std : (M, T) float64
        Members' mean and sample standard deviation (0 for a single model).
    """
    from deepsci.core.litert import LiteRTPredictor
    from deepsci.core.models.card import read_card

    predictors = _predictors(models, jit_compile)
    cards = models.cards if isinstance(models, Ensemble) else [None] * len(predictors)
    batches, n_atoms, n_edges = inference_plan(table, batch_size)
    if not batches:
        t = len(cards[0].outputs) if cards[0] is not None else int(
            predictors[0].model.output_shape[-1])
        return np.zeros((0, t)), np.zeros((0, t))
    streams = max(1, min(int(streams or available_cpus()), len(batches)))
    graphs = max(1, min(int(batch_size), len(table))) + 1
    outs = []
    for pred, card in zip(predictors, cards, strict=True):
        if isinstance(pred, LiteRTPredictor):
            card = card or read_card(pred.model.path, expect=APP, task=TASK)
            outs.append(_litert_outputs(pred, card, table, max(1, int(streams or 1))))
            continue
        def run(index, pred=pred):
            x, _, _ = pad_batch(collate(table, index), np.zeros((len(index), 0), np.float32),
                                atoms=n_atoms, edges=n_edges, graphs=graphs)
            return np.asarray(pred(x))[:len(index)]

        first = run(batches[0])  # traced here, before threads share the function
        rest = thread_map(run, batches[1:], workers=streams)
        outs.append(np.concatenate([first, *rest]).astype(np.float64))
    return combine(outs)


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


def predict_molecules(cfg: PredictConfig, *, overwrite: bool = False) -> dict:
    """Predict every molecule of ``cfg.inputs``; write the CSV, its SDF and ``<out>.run.json``.

    An existing output (the CSV or the SDF) is replaced only with
    ``overwrite``, atomically; an output that is the input never.
    """
    cfg.validate()
    check_outputs(cfg.out, inputs=[cfg.inputs], sdf=cfg.sdf, overwrite=overwrite)
    ens = load_members(resolve_model(cfg.model, app=APP, task=TASK), xla=cfg.xla)
    names, units = output_units(ens.card)
    # Targets in the input file are not needed; read the molecules only.
    ms = read_molecules(cfg.inputs, targets=None, smiles_column=cfg.smiles_column,
                        skip_invalid=cfg.skip_invalid, seed=cfg.seed)
    with RunDir(cfg.out, command="molecules predict", config=cfg, inputs=[cfg.inputs, *ens.paths],
                overwrite=overwrite, file_output=True) as run:
        table = featurize_set(ms, ens.card.input_spec["graph"])
        mean, std = predict_table(ens, table, batch_size=cfg.batch_size)
        columns, out_units = prediction_columns(mean, std, names, units, members=len(ens))
        remove_stale_outputs(cfg.out)
        written = write_outputs(cfg.out, ids=ms.ids, smiles=ms.smiles, columns=columns,
                                units=out_units, mols=ms.mols, sdf=cfg.sdf)
        run.record(n=len(ms), n_skipped=ms.n_skipped, skip_reasons=ms.skip_reasons,
                   skipped=ms.skipped, targets=names, members=len(ens),
                   outputs={k: str(v) for k, v in written.items()})
    return {"out": str(cfg.out), "outputs": written, "n": len(ms), "n_skipped": ms.n_skipped,
            "targets": names, "members": len(ens), "mean": np.asarray(mean)}
