"""The field's metrics: MAE per target in its unit and as a ratio to chemical accuracy
(Faber et al. 2017; Gilmer et al. 2017, Table 2), with parity plots, and
``deepsci molecules evaluate`` (inference itself is :mod:`.predict`'s).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import save_figure, write_json, write_text
from deepsci.core.models.registry import resolve_model
from deepsci.core.runs import RunDir

from .graphs import featurize_set
from .io import read_molecules, write_csv
from .model import APP, TASK
from .predict import load_members, output_units, predict_table, prediction_columns
from .targets import TARGETS

__all__ = ["EvaluateConfig", "target_metrics", "metrics_table", "parity_plot", "evaluate_run"]


@dataclass
class EvaluateConfig:
    """``deepsci molecules evaluate``.

    Attributes
    ----------
    model : str or None
        A training folder (all members), one ``model.keras``, comma-separated model
        files or a shipped model's name; none: the shipped default (molecules-qm9).
    data : str or None
        Labelled molecules (any readable format); ``None``: the training folder's
        ``test_set.csv.gz`` (a shipped model needs ``--data``).
    out : str or None
        Output folder for metrics.json, metrics.md, parity.png and predictions.csv;
        ``None``: ``<training folder>/eval``.
    batch_size : int
        Molecules per inference batch (at most).
    smiles_column : str
        SMILES column of a CSV.
    skip_invalid : bool
        Skip unreadable molecules and report how many.
    """

    model: str | None = None
    data: str | None = None
    out: str | None = None
    batch_size: int = 1024
    smiles_column: str = "smiles"
    skip_invalid: bool = False

    def validate(self) -> EvaluateConfig:
        if self.batch_size < 1:
            raise ConfigError(f"expected --batch-size >= 1, found {self.batch_size}")
        return self


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


def _training_folder(spec: str) -> Path:
    """The training folder of a model spec: the folder itself, or a member file's grandparent."""
    first = Path(str(spec).split(",")[0].strip())
    return first if first.is_dir() else first.parent.parent


def evaluate_run(cfg: EvaluateConfig, *, overwrite: bool = False) -> dict:
    """Score a trained model (or ensemble) on labelled molecules; write the report files.

    Outputs in ``cfg.out`` (default ``<training folder>/eval``): ``metrics.json``,
    ``metrics.md``, ``parity.png``, ``predictions.csv`` and ``run.json``.
    """
    cfg.validate()
    model = resolve_model(cfg.model, app=APP, task=TASK)
    ens = load_members(model)
    data = cfg.data
    if data is None:
        folder = _training_folder(model)
        data = folder / "test_set.csv.gz"
        if not data.exists():
            raise InputError("expected --data or a test_set.csv.gz in the training folder, found "
                             "neither", folder)
    names, units = output_units(ens.card)
    ms = read_molecules(data, targets=None, smiles_column=cfg.smiles_column,
                        skip_invalid=cfg.skip_invalid)
    have = [n for n in names if n in ms.targets.columns]
    if not have:
        raise InputError(f"expected labels for at least one of {names}, found columns "
                         f"{list(ms.targets.columns)}", data)
    if cfg.out is None and cfg.model is None:
        raise ConfigError("expected --out with the shipped default model, found none")
    out = Path(cfg.out) if cfg.out else _training_folder(model) / "eval"
    with RunDir(out, command="molecules evaluate", config=cfg, inputs=[data, *ens.paths],
                overwrite=overwrite) as run:
        table = featurize_set(ms, ens.card.input_spec["graph"], workers=1)
        mean, std = predict_table(ens, table, batch_size=cfg.batch_size)
        y_true = ms.targets[have].to_numpy(np.float64)
        y_pred = mean[:, [names.index(n) for n in have]]
        metrics = target_metrics(y_true, y_pred, have, units)
        md = metrics_table(metrics)
        write_text(run.file("metrics.md"), f"# Evaluation on {Path(data).name}\n\nmodel: "
                   f"{model} ({len(ens)} member(s)); {len(ms)} molecules, {ms.n_skipped} "
                   f"skipped\n\n{md}\n")
        summary = {"data": str(data), "n": len(ms), "n_skipped": ms.n_skipped,
                   "members": [str(p) for p in ens.paths], "targets": metrics}
        write_json(run.file("metrics.json"), summary)
        parity_plot(y_true, y_pred, have, units, run.file("parity.png"))
        columns, out_units = prediction_columns(mean, std, names, units, members=len(ens))
        write_csv(run.file("predictions.csv"), ids=ms.ids, smiles=ms.smiles, columns=columns,
                  units=out_units)
        run.record(**summary, skipped=ms.skipped)
    return {"metrics": metrics, "table": md, "n": len(ms), "n_skipped": ms.n_skipped,
            "out": str(out)}
