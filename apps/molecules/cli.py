"""``deepsci molecules …``: train, evaluate, predict, label and demo.

Thin layer: each command is built from its stage's config dataclass
(:func:`deepsci.core.cli.config_command`), so every default is declared once,
there, and ``--config run.json`` re-runs a recorded run. TensorFlow, RDKit and
PySCF are imported inside the stages.
"""
from __future__ import annotations

import typer

from deepsci.core.cli import RunOptions, config_command
from deepsci.core.compress import ExportConfig

from .compress import DistillConfig
from .demo import DemoConfig
from .evaluate import EvaluateConfig
from .label import LabelConfig
from .predict import PredictConfig
from .train import MoleculeTrainConfig

app = typer.Typer(
    no_args_is_help=True,
    help="Quantum-chemical properties of small organic molecules with a message-passing "
         "network (Gilmer et al. 2017) trained on QM9; DFT labels with PySCF.",
)


def _skipped(n: int) -> None:
    if n:
        typer.echo(f"skipped {n} invalid molecule(s)")


# Member seeds come from --seed, progress bars from --progress, XLA from --xla.
@config_command(app, MoleculeTrainConfig, name="train",
                shown=["data", "out", "targets", "split", "epochs", "batch-size", "lr", "ensemble",
                       "seed", "strategy"],
                exclude=["train.seed", "train.progress", "train.jit_compile"])
def train(cfg: MoleculeTrainConfig, opts: RunOptions) -> None:
    """Train an MPNN (ensemble) on QM9 or your own labelled molecules."""
    from .train import train_molecules

    summary = train_molecules(cfg, overwrite=opts.overwrite)
    _skipped(summary["n_skipped"])
    typer.echo(f"trained {len(summary['members'])} model(s) on {summary['n_train']} molecules; "
               f"validation MAE:")
    for n, v in summary["val_mae"].items():
        typer.echo(f"  {n:6s} {v:.4g} {summary['units'][n]}")
    typer.echo(f"outputs in {cfg.out}")


@config_command(app, EvaluateConfig, name="evaluate",
                shown=["model", "data", "out", "batch-size", "skip-invalid"])
def evaluate(cfg: EvaluateConfig, opts: RunOptions) -> None:
    """Per-target MAE, ratio to chemical accuracy, Table-2-style report and parity plots."""
    from .evaluate import evaluate_run

    res = evaluate_run(cfg, overwrite=opts.overwrite)
    _skipped(res["n_skipped"])
    typer.echo(res["table"])
    typer.echo(f"outputs in {res['out']}")


@config_command(app, PredictConfig, name="predict", arguments=["inputs"],
                shown=["model", "out", "batch-size", "seed", "xla", "skip-invalid", "sdf"])
def predict(cfg: PredictConfig, opts: RunOptions) -> None:
    """Predict the model's targets for new molecules (with ensemble standard deviations)."""
    from .predict import predict_molecules

    res = predict_molecules(cfg, overwrite=opts.overwrite)
    _skipped(res["n_skipped"])
    typer.echo(f"predicted {len(res['targets'])} target(s) for {res['n']} molecule(s) "
               f"-> {' and '.join(str(p) for p in res['outputs'].values())}")


@config_command(app, LabelConfig, name="label", arguments=["inputs"],
                shown=["out", "method", "polarizability", "seed", "skip-invalid", "sdf"])
def label(cfg: LabelConfig, opts: RunOptions) -> None:
    """Compute DFT labels (HOMO, LUMO, gap, μ, R², α) with PySCF, resumably."""
    from .label import label_molecules

    res = label_molecules(cfg, overwrite=opts.overwrite)
    _skipped(res["n_skipped"])
    typer.echo(f"labelled {res['n']} molecule(s) with {cfg.method} -> "
               f"{' and '.join(str(p) for p in res['outputs'].values())}")


@config_command(app, DemoConfig, name="demo", shown=["out", "quick", "train"])
def demo(cfg: DemoConfig) -> None:
    """The shipped model vs ridge on held-out QM9 molecules (--train: train one first)."""
    from pathlib import Path

    from .demo import run_demo

    typer.echo(run_demo(Path(cfg.out), quick=cfg.quick, train=cfg.train).text)


@config_command(app, DistillConfig, name="distill",
                shown=["teacher", "temperature", "alpha", "data", "unlabelled", "out", "units",
                       "epochs", "time-budget", "seed"])
def distill(cfg: DistillConfig, opts: RunOptions) -> None:
    """Train a smaller MPNN on a teacher's (ensemble's) predictions beside the DFT labels.

    The teacher runs once over the training and validation molecules into
    OUT/teacher-cache (resumable). --unlabelled takes molecules without DFT labels
    (a SMILES list, SDF, xyz or CSV): they learn from the teacher alone. OUT is a
    normal model folder that predict, evaluate and export take.
    """
    from .compress import distill as run_distill

    res = run_distill(cfg, overwrite=opts.overwrite, progress=opts.progress != "off")
    d = res["distillation"]
    typer.echo(f"distilled {len(d['teacher'])} teacher model(s) (alpha={d['alpha']:g}) into "
               f"{res['members'][0]} on {res['n_train']} labelled + {res['n_unlabelled']} "
               "unlabelled molecules; validation MAE:")
    for n, v in res["val_mae"].items():
        typer.echo(f"  {n:6s} {v:.4g} {res['units'][n]}")


@config_command(app, ExportConfig, name="export", arguments=["model"],
                shown=["out", "quantize", "inputs", "samples", "check", "batch-size",
                       "tolerance", "seed"])
def export(cfg: ExportConfig, opts: RunOptions) -> None:
    """Export one model to LiteRT (.tflite): int8, float16 or float32.

    predict and evaluate take the file as --model. --inputs: molecules to calibrate
    and check on (any file predict reads); default a seeded QM9 sample (qm9pack).
    Molecules of up to 29 atoms (fixed slots). The export is refused when a
    target's mean output shifts by more than --tolerance standard deviations.
    """
    from deepsci.core.compress import run_export

    from .compress import EXPORT

    run_export(cfg, EXPORT, overwrite=opts.overwrite, say=typer.echo)
