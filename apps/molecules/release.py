"""Build the shipped molecules model: ``deepsci models build molecules``.

``molecules-qm9`` (the default of app molecules, task ``properties``): the
enn-s2s MPNN on the bond graph, trained through the core loop on all 12
Gilmer targets of QM9 (real B3LYP/6-31G(2df,p) labels read from the
``qm9pack`` CSVs), random split with seed 0 into 10,000 validation and
10,000 test molecules, the rest for training, with the recipe of the
benchmark's winning run (``bench/molecules.py --graph bond --train-batch 64
--steps-per-epoch 500 --decay-steps 3000``) under a wall-clock budget.

Beside ``model.keras`` and its card the folder holds ``test_split.json`` (the
QM9 indices of the test molecules, so the demo can prove it scores held-out
molecules only) and ``baseline.json`` (ridge regression on RDKit descriptors
fitted on training molecules, the demo's baseline). The card carries the
test MAE per target (scored once, after training), validation MAE, the
build's wall and CPU seconds and its number of steps.
"""
from __future__ import annotations

import resource
import shutil
import time
from pathlib import Path

import numpy as np

from deepsci.core.bench import machine_line
from deepsci.core.io import atomic_dir, config_to_dict, read_json, write_json
from deepsci.core.models.card import ModelCard, card_path
from deepsci.core.training import TrainConfig

from .model import ModelConfig
from .targets import TARGETS

__all__ = ["NAME", "build", "build_config", "qm9_index", "rebuild_command", "FULL_BUDGET_MIN"]

NAME = "molecules-qm9"
FULL_BUDGET_MIN = 50.0
# Molecules the ridge baseline is fitted on (a seeded sample of the training split).
_RIDGE_SAMPLE = 30_000
_QM9_LICENCE = ("QM9: R. Ramakrishnan, P. O. Dral, M. Rupp, O. A. von Lilienfeld, Sci. Data 1, "
                "140022 (2014), distributed under CC BY 4.0 (figshare); read from the qm9pack "
                "package (MIT licence for the package), whose metadata states no separate data "
                "licence")


def build_config(out: Path, *, tiny: bool, budget_min: float = FULL_BUDGET_MIN):
    """The training config of the shipped model (``tiny``: seconds on the bundled subset)."""
    from .train import MoleculeTrainConfig

    if tiny:
        return MoleculeTrainConfig(
            data="subset", out=str(out), limit=240, val=0.2, test=0.2, seed=0,
            model=ModelConfig(graph="bond", units=16, edge_hidden=(16, 8), steps=2,
                              set2set_steps=2, head=(32,)),
            train=TrainConfig(epochs=2, batch_size=32, lr_schedule="constant", progress=False,
                              tensorboard=False))
    return MoleculeTrainConfig(
        data="qm9", out=str(out), val=10_000, test=10_000, seed=0, time_budget=budget_min,
        model=ModelConfig(graph="bond"),
        train=TrainConfig(epochs=10_000, steps_per_epoch=500, batch_size=64, learning_rate=1e-3,
                          lr_schedule="exponential", decay_steps=3_000, decay_rate=0.5,
                          checkpoint_every=10_000, progress=False, tensorboard=False))


def qm9_index(mol_id: str) -> int:
    """QM9's molecule index from an id like ``dsgdb9nsd_000123`` (or its .xyz file name)."""
    return int(str(mol_id).split("_")[-1].split(".")[0])


def rebuild_command(tiny: bool, budget_min: float | None) -> str:
    """The command that rebuilds the model with this budget."""
    if tiny:
        return "deepsci models build molecules --tiny"
    if budget_min == FULL_BUDGET_MIN:
        return "deepsci models build molecules"
    return ("python -c 'from pathlib import Path; from deepsci.apps.molecules.release import "
            f"build; build(Path(\"data/models\"), budget_min={budget_min:g})'")


def _cpu_seconds() -> float:
    # The QM9 reader works in child processes; their CPU time counts too.
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _score(ms, idx, model_path: Path, names: list[str], ridge: dict, graph: str) -> tuple:
    """(MPNN metrics, ridge metrics) of the molecules at ``idx``."""
    from .baseline import descriptors, predict_ridge
    from .evaluate import target_metrics
    from .graphs import featurize_set
    from .predict import predict_table

    sub = ms.subset(idx)
    y = sub.targets[names].to_numpy(np.float64)
    pred, _ = predict_table([model_path], featurize_set(sub, graph))
    units = {n: TARGETS[n].unit for n in names}
    base = predict_ridge(ridge, descriptors(sub.mols))
    return target_metrics(y, pred, names, units), target_metrics(y, base, names, units)


def _metric_block(ours: dict, theirs: dict) -> dict:
    return {n: {"mae": m["mae"], "unit": m["unit"], "ratio_to_chemical_accuracy": m["ratio"],
                "chemical_accuracy": TARGETS[n].chemical_accuracy,
                "ridge_rdkit_mae": theirs[n]["mae"]} for n, m in ours.items()}


def _fit_baseline(ms, tr: np.ndarray, names: list[str], seed: int) -> dict:
    from .baseline import DESCRIPTORS, descriptors, fit_ridge

    pick = tr if len(tr) <= _RIDGE_SAMPLE else np.sort(
        np.random.default_rng(seed).choice(tr, _RIDGE_SAMPLE, replace=False))
    sub = ms.subset(pick)
    fit = fit_ridge(descriptors(sub.mols), sub.targets[names].to_numpy(np.float64))
    fit.update(targets=names, descriptors=list(DESCRIPTORS), n_fit=int(len(pick)),
               fitted_on="a seeded sample of the training split")
    return fit


def _card(run: Path, cfg, summary: dict, scores: dict, split: dict, timing: dict,
          tiny: bool) -> ModelCard:
    """The shipped card: the member's card with provenance, held-out metrics and build record."""
    member = Path(summary["members"][0])
    card = ModelCard.from_dict(read_json(card_path(member)), card_path(member))
    card.name = NAME
    card.data = {**card.data, "name": card.data.get("name"), "licence": _QM9_LICENCE,
                 "synthetic_only": False, "split": {"kind": "random", "seed": cfg.seed,
                 "n_train": summary["n_train"], "n_val": summary["n_val"],
                 "n_test": summary["n_test"], "test_indices": "test_split.json"},
                 "seeds": {"sample": cfg.seed, "split": cfg.seed, "weights": cfg.seed}}
    card.metrics = {"validation": _metric_block(*scores["validation"]),
                    "test": _metric_block(*scores["test"])}
    hist = read_json(member.parent / "history.json") if (member.parent / "history.json").exists() \
        else []
    steps = card.training.get("steps")
    card.training = {"command": rebuild_command(tiny, cfg.time_budget),
                     "config": config_to_dict(cfg), "steps": steps, "epochs_run": len(hist),
                     "time_budget_min": cfg.time_budget, "wall_seconds": timing["wall"],
                     "cpu_seconds": timing["cpu"], "baseline": "baseline.json (ridge on "
                     "RDKit descriptors, training molecules only)"}
    card.intended_use = (
        "Fast estimates of the 12 QM9 properties (DFT B3LYP/6-31G(2df,p): mu, alpha, HOMO, LUMO, "
        "gap, R2, ZPVE, U0, U, H, G, Cv) of small neutral organic molecules made of C, H, O, N, "
        "F with at most 9 heavy atoms, at a QM9-like (B3LYP-relaxed) geometry or an RDKit "
        "conformer from SMILES.")
    card.limitations = (
        "Not trained on: molecules with more than 9 heavy atoms, other elements (S, Cl, P, Br, "
        "metals...), charged species or radicals, conformers other than QM9's relaxed minima "
        "(RDKit/MMFF conformers from SMILES shift the predictions), other levels of theory. "
        "Test MAE is above chemical accuracy for every target (see metrics.test).")
    card.extra = {**card.extra, "shipped": {
        "default": True, "build_seconds": round(timing["wall"], 1),
        "build_cpu_seconds": round(timing["cpu"], 1), "build_steps": steps,
        "build_machine": machine_line()}}
    return card


def build(out_root: Path, *, tiny: bool = False, budget_min: float = FULL_BUDGET_MIN) -> list[Path]:
    """Build ``molecules-qm9`` into ``out_root/molecules-qm9/`` (atomically) and return its model path.

    Parameters
    ----------
    out_root : Path
        The registry folder (e.g. ``data/models``); the old model folder is replaced.
    tiny : bool
        Seconds-long settings on the bundled QM9 subset (for the test).
    budget_min : float
        Wall-clock training budget in minutes of the full build.

    Returns
    -------
    list of Path
        ``[out_root/molecules-qm9/model.keras]``.
    """
    from .train import load_dataset, split_indices, train_molecules

    t0, c0 = time.perf_counter(), _cpu_seconds()
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    work = out_root / f".{NAME}.work"
    if work.exists():
        shutil.rmtree(work)
    cfg = build_config(work / "run", tiny=tiny, budget_min=budget_min)
    ms = load_dataset(cfg.data, limit=cfg.limit, seed=cfg.seed)
    summary = train_molecules(cfg, dataset=ms)
    names = summary["targets"]
    tr, va, te = split_indices(ms, kind=cfg.split, val=cfg.val, test=cfg.test, seed=cfg.seed)
    ridge = _fit_baseline(ms, tr, names, cfg.seed)
    member = Path(summary["members"][0])
    scores = {k: _score(ms, idx, member, names, ridge, cfg.model.graph)
              for k, idx in (("validation", va), ("test", te))}
    split = {"source": cfg.data, "seed": cfg.seed, "kind": cfg.split,
             "test_ids": [ms.ids[i] for i in te],
             "test_qm9_indices": [qm9_index(ms.ids[i]) for i in te],
             "train_qm9_indices_count": int(len(tr)), "val_qm9_indices_count": int(len(va))}
    timing = {"wall": time.perf_counter() - t0, "cpu": _cpu_seconds() - c0}
    card = _card(work / "run", cfg, summary, scores, split, timing, tiny)
    with atomic_dir(out_root / NAME) as tmp:
        shutil.copy2(member, tmp / "model.keras")
        write_json(tmp / "test_split.json", split)
        write_json(tmp / "baseline.json", ridge)
        write_json(card_path(tmp / "model.keras"), card.to_dict())
    shutil.rmtree(work)
    return [out_root / NAME / "model.keras"]
