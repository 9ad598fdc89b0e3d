"""``deepsci molecules …``: train, evaluate, predict, label and demo (thin wrappers)."""
from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="Quantum-chemical properties of small organic molecules with a message-passing "
         "network (Gilmer et al. 2017) trained on QM9; DFT labels with PySCF.",
)


def _ints(text: str, name: str) -> tuple[int, ...]:
    from deepsci.core.errors import ConfigError

    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"expected --{name} as comma-separated integers, found {text!r}") from None
    if not vals:
        raise ConfigError(f"expected --{name} as comma-separated integers, found {text!r}")
    return vals


@app.command()
def train(
    data: str = typer.Option("subset", "--data", "--dataset",
                             help="qm9 (needs deepsci[qm9]), subset (bundled), or a file/folder: "
                                  ".csv, .sdf (+ .sdf.csv), .xyz, folder or .tar.bz2 of xyz."),
    out: Path = typer.Option(Path("runs/molecules"), help="Output folder (rerun to resume)."),
    targets: str = typer.Option("all", help="Comma-separated targets, or 'all' (the 12 of Gilmer "
                                            "present in the data)."),
    limit: int = typer.Option(None, help="Use a seeded random sample of N molecules."),
    split: str = typer.Option("random", help="random | scaffold."),
    val: float = typer.Option(0.1, help="Validation fraction (<1) or count."),
    test: float = typer.Option(0.1, help="Test fraction (<1) or count."),
    seed: int = typer.Option(0, help="Seed of sampling, split and initialisation."),
    graph: str = typer.Option("bond", help="bond (chemical bonds + distances) | complete "
                                           "(all atom pairs + distances)."),
    units: int = typer.Option(64, help="Hidden size of atom states."),
    steps: int = typer.Option(3, help="Message-passing steps (tied weights)."),
    edge_hidden: str = typer.Option("64,16", help="Edge network hidden sizes."),
    epochs: int = typer.Option(50),
    batch_size: int = typer.Option(64, help="Molecules per step (all replicas)."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    lr_schedule: str = typer.Option("exponential", help="constant|cosine|exponential|step."),
    decay_steps: int = typer.Option(20000, help="Steps per halving of the learning rate."),
    loss: str = typer.Option("mae", help="mae | mse on standardised targets."),
    ensemble: int = typer.Option(1, help="Number of independently seeded models."),
    time_budget: float = typer.Option(None, help="Wall-clock minutes per model."),
    smiles_column: str = typer.Option("smiles", help="SMILES column of a CSV."),
    skip_invalid: bool = typer.Option(False, help="Skip unreadable molecules and report how many."),
    strategy: str = typer.Option("auto", help="auto|cpu|gpu|mirrored|…"),
    tensorboard: bool = typer.Option(True, help="Write TensorBoard logs."),
) -> None:
    """Train an MPNN (ensemble) on QM9 or your own labelled molecules."""
    from deepsci.core.accelerator import resolve_strategy
    from deepsci.core.training import TrainConfig

    from .model import ModelConfig
    from .train import MoleculeTrainConfig, train_molecules

    cfg = MoleculeTrainConfig(
        data=data, out=str(out), targets=None if targets == "all" else targets.split(","),
        limit=limit, split=split, val=val, test=test, seed=seed, loss=loss, ensemble=ensemble,
        time_budget=time_budget, smiles_column=smiles_column, skip_invalid=skip_invalid,
        model=ModelConfig(graph=graph, units=units, steps=steps,
                          edge_hidden=_ints(edge_hidden, "edge-hidden")),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr,
                          lr_schedule=lr_schedule, decay_steps=decay_steps, seed=seed,
                          tensorboard=tensorboard),
    ).validate()
    summary = train_molecules(cfg, strategy=resolve_strategy(strategy))
    if summary["n_skipped"]:
        typer.echo(f"skipped {summary['n_skipped']} invalid molecule(s)")
    typer.echo(f"trained {len(summary['members'])} model(s) on {summary['n_train']} molecules; "
               f"validation MAE:")
    for n, v in summary["val_mae"].items():
        typer.echo(f"  {n:6s} {v:.4g} {summary['units'][n]}")
    typer.echo(f"outputs in {out}")


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="Training folder or a member's model.keras."),
    data: Path = typer.Option(None, help="Labelled molecules; default: the folder's test set."),
    out: Path = typer.Option(None, help="Output folder (default <model>/eval)."),
    batch_size: int = typer.Option(1024),
    smiles_column: str = typer.Option("smiles"),
    skip_invalid: bool = typer.Option(False),
) -> None:
    """Per-target MAE, ratio to chemical accuracy, Table-2-style report and parity plots."""
    from .evaluate import EvaluateConfig, evaluate_run

    if out is None:
        out = (model if model.is_dir() else model.parent) / "eval"
    res = evaluate_run(EvaluateConfig(model=str(model), data=None if data is None else str(data),
                                      out=str(out), batch_size=batch_size,
                                      smiles_column=smiles_column, skip_invalid=skip_invalid))
    if res["n_skipped"]:
        typer.echo(f"skipped {res['n_skipped']} invalid molecule(s)")
    typer.echo(res["table"])
    typer.echo(f"outputs in {out}")


@app.command()
def predict(
    model: Path = typer.Argument(..., help="Training folder or a member's model.keras."),
    inputs: Path = typer.Argument(..., help=".smi/.txt, .csv, .sdf, .xyz, folder or tarball."),
    out: Path = typer.Option(Path("predictions.csv"), help="Output CSV (.csv or .csv.gz)."),
    batch_size: int = typer.Option(1024),
    smiles_column: str = typer.Option("smiles"),
    skip_invalid: bool = typer.Option(False),
    seed: int = typer.Option(0, help="Conformer seed for SMILES input."),
    xla: bool = typer.Option(False, help="Compile inference with XLA (faster on many molecules)."),
) -> None:
    """Predict the model's targets for new molecules (with ensemble standard deviations)."""
    from .predict import PredictConfig, predict_molecules

    res = predict_molecules(PredictConfig(model=str(model), inputs=str(inputs), out=str(out),
                                          batch_size=batch_size, smiles_column=smiles_column,
                                          skip_invalid=skip_invalid, seed=seed, xla=xla))
    if res["n_skipped"]:
        typer.echo(f"skipped {res['n_skipped']} invalid molecule(s)")
    typer.echo(f"predicted {len(res['targets'])} target(s) for {res['n']} molecule(s) -> {out}")


@app.command()
def label(
    inputs: Path = typer.Argument(..., help="Molecules: .smi/.txt, .csv, .sdf, .xyz, folder."),
    out: Path = typer.Option(Path("labels.csv"), help="Output CSV, readable by `train --data`."),
    method: str = typer.Option("b3lyp-qm9", help="b3lyp-qm9 (QM9's B3LYP/6-31G(2df,p)) or "
                                                 "<method>/<basis>, e.g. hf/sto-3g."),
    polarizability: bool = typer.Option(True, help="α by finite field (6 extra SCF runs)."),
    smiles_column: str = typer.Option("smiles"),
    skip_invalid: bool = typer.Option(False),
    seed: int = typer.Option(0, help="Conformer seed for SMILES input."),
) -> None:
    """Compute DFT labels (HOMO, LUMO, gap, μ, R², α) with PySCF, resumably."""
    from .label import LabelConfig, label_molecules

    res = label_molecules(LabelConfig(inputs=str(inputs), out=str(out), method=method,
                                      polarizability=polarizability, smiles_column=smiles_column,
                                      skip_invalid=skip_invalid, seed=seed))
    if res["n_skipped"]:
        typer.echo(f"skipped {res['n_skipped']} invalid molecule(s)")
    typer.echo(f"labelled {res['n']} molecule(s) with {method} -> {out}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-molecules"), help="Output folder."),
    quick: bool = typer.Option(False, help="Tiny settings (seconds)."),
) -> None:
    """Train a small model on the bundled QM9 subset and report MAE per target."""
    from .demo import run_demo

    res = run_demo(out, quick=quick)
    typer.echo(res.text)
