"""``deepsci demo`` hook: the shipped MPNN beside a ridge baseline on held-out QM9 molecules.

Default (``train=False``): the shipped default model (``molecules-qm9``) and
its ridge-on-RDKit-descriptors baseline (fitted on the model's training split,
stored beside it) predict the molecules of the bundled QM9 subset that lie in
the model's TEST split (``test_split.json``: QM9 indices), so no molecule the
model or the baseline was fitted or tuned on is scored. ``train=True``: the
old demo, training a small model on the bundled subset from scratch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from deepsci.core.report import DemoResult, find_viewer_outputs
from deepsci.core.runs import RunDir

#: The files for the field's viewer that the demo report links (those the run wrote).
VIEWERS = (("**/predictions.sdf", "PyMOL or Avogadro"),)


__all__ = ["DemoConfig", "run_demo"]


@dataclass
class DemoConfig:
    """``deepsci molecules demo``.

    Attributes
    ----------
    out : str
        Output folder (the training run in train/, its evaluation in eval/).
    quick : bool
        Tiny settings (seconds).
    train : bool
        Train a small model from scratch instead of using the shipped one.
    """

    out: str = "demo-molecules"
    quick: bool = False
    train: bool = False

    def validate(self) -> DemoConfig:
        return self


def run_demo(out_dir: Path, *, quick: bool = False, train: bool = False) -> DemoResult:
    """The shipped model on held-out QM9 molecules beside the ridge baseline (``train``: train one).

    Parameters
    ----------
    out_dir : Path
        Folder of ``predictions.csv`` (labels and both predictions per molecule),
        ``metrics.json`` and ``run.json``.
    quick : bool
        Score the first 64 held-out molecules only.
    train : bool
        Run the old train-from-scratch demo (:func:`train_demo`).

    Returns
    -------
    DemoResult
        One row per target (MAE, deepsci vs ridge) and one of CPU time per molecule vs DFT.
    """
    if train:
        result = train_demo(out_dir, quick=quick)
    else:
        from .shipped_demo import shipped_demo

        result = shipped_demo(Path(out_dir), quick=quick)
    result.viewers = find_viewer_outputs(out_dir, VIEWERS)
    return result


def train_demo(out_dir: Path, *, quick: bool = False) -> DemoResult:
    """Train a small enn-s2s MPNN on the bundled QM9 subset and evaluate it on held-out molecules.

    Parameters
    ----------
    out_dir : Path
        Folder for the training run and the evaluation report.
    quick : bool
        Tiny settings for tests (a few hundred molecules, two epochs).

    Returns
    -------
    DemoResult
        MAE and MAE / chemical accuracy per target, and the parity plot.
    """
    from deepsci.core.training import TrainConfig

    from .evaluate import EvaluateConfig, evaluate_run
    from .model import ModelConfig
    from .train import MoleculeTrainConfig, train_molecules

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if quick:
        cfg = MoleculeTrainConfig(
            data="subset", out=str(out_dir / "train"), limit=240, val=0.2, test=0.2,
            model=ModelConfig(units=16, edge_hidden=(16, 8), steps=2, set2set_steps=2, head=(32,)),
            train=TrainConfig(epochs=2, batch_size=32, lr_schedule="constant", progress=False,
                              tensorboard=False))
    else:
        cfg = MoleculeTrainConfig(
            data="subset", out=str(out_dir / "train"), val=0.1, test=0.1,
            train=TrainConfig(epochs=30, batch_size=32, learning_rate=1e-3,
                              lr_schedule="exponential", decay_steps=1000, decay_rate=0.5))
    with RunDir(out_dir, command="molecules demo", config=DemoConfig(str(out_dir), quick, True)) as run:
        summary = train_molecules(cfg)
        res = evaluate_run(EvaluateConfig(model=cfg.out, out=str(out_dir / "eval")))
        run.record(n_train=summary["n_train"], n_test=res["n"], test_metrics=res["metrics"])
    metrics: dict[str, float | str] = {}
    for n, m in res["metrics"].items():
        metrics[f"{n} MAE [{m['unit']}]"] = round(m["mae"], 4)
        if m["ratio"] is not None:
            metrics[f"{n} MAE/chem.acc."] = round(m["ratio"], 2)
    text = (f"enn-s2s MPNN trained on {summary['n_train']} molecules of the bundled QM9 subset "
            f"({cfg.train.epochs} epochs, {cfg.model.graph} graph), tested on {res['n']} held-out "
            f"molecules. Ratios below 1 reach chemical accuracy; full QM9 training is "
            f"`deepsci molecules train --data qm9`.\n\n{res['table']}")
    return DemoResult(app="molecules", title="Molecules: QM9 properties with an MPNN",
                      metrics=metrics, figures=[Path(res["out"]) / "parity.png"], text=text,
                      seconds=round(time.perf_counter() - t0, 1))
