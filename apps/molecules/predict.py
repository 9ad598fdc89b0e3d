"""Prediction: SMILES/SDF/xyz/CSV in, CSV out with one column per target (and ensemble std)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.io import save_config, write_run_info

from .evaluate import load_members, predict_table, resolve_models
from .io import read_molecules, write_csv
from .train import featurize_set

__all__ = ["PredictConfig", "predict_molecules"]


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


def predict_molecules(cfg: PredictConfig) -> dict:
    """Predict every molecule of ``cfg.inputs``; write the CSV atomically."""
    paths = resolve_models(cfg.model)
    models, meta = load_members(paths)
    names, units = meta["targets"], meta["units"]
    # Targets in the input file are not needed; read the molecules only.
    ms = read_molecules(cfg.inputs, targets=None, smiles_column=cfg.smiles_column,
                        skip_invalid=cfg.skip_invalid, seed=cfg.seed)
    table = featurize_set(ms, meta["input_spec"]["graph"])
    mean, std = predict_table(models, table, batch_size=cfg.batch_size, jit_compile=cfg.xla)
    columns, out_units = {}, dict(units)
    for j, n in enumerate(names):
        columns[n] = mean[:, j]
        if len(models) > 1:
            columns[f"{n}_std"] = std[:, j]
            out_units[f"{n}_std"] = units[n]
    out = Path(cfg.out)
    write_csv(out, ids=ms.ids, smiles=ms.smiles, columns=columns, units=out_units, mols=ms.mols)
    save_config(cfg, out.with_name(out.name.split(".")[0] + ".config.json"))
    write_run_info(out.parent, command="molecules predict", config=cfg)
    return {"out": str(out), "n": len(ms), "n_skipped": ms.n_skipped, "targets": names,
            "members": len(models), "mean": np.asarray(mean)}
