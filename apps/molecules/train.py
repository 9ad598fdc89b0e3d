"""Training: data → split → featurise → MPNN ensemble trained with the core loop.

Output folder of ``train_molecules(cfg)``::

    out/run.json              the run's record: resolved config, inputs, results (validation MAE)
    out/split.json            ids of train/val/test molecules
    out/test_set.csv.gz       held-out molecules with geometry and targets (for evaluate)
    out/ensemble.json         the members (read by evaluate and predict through core.ensemble)
    out/member_<k>/           core loop state: checkpoints/, tensorboard/, history.json
    out/member_<k>/model.keras + model.card.json   one trained ensemble member and its card
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepsci.core.accelerator import AcceleratorConfig
from deepsci.core.ensemble import member_seeds, write_ensemble
from deepsci.core.errors import ConfigError
from deepsci.core.io import config_to_dict, write_json
from deepsci.core.runs import RunDir, check_output_location
from deepsci.core.training import TrainConfig

from .graphs import GraphTable, featurize_set, graph_at, make_source
from .io import MoleculeSet, bundled_subset, read_molecules, read_qm9pack, write_csv
from .model import ModelConfig, build_model, member_card
from .predict import predict_table
from .targets import TARGETS, resolve_targets

__all__ = ["MoleculeTrainConfig", "load_dataset", "split_indices", "fit_scaling", "make_loss",
           "train_molecules", "member_paths"]


def _molecules_train_defaults() -> TrainConfig:
    # Gilmer et al.'s recipe shape: Adam, learning rate halved on a fixed step schedule.
    return TrainConfig(epochs=50, batch_size=64, learning_rate=1e-3, lr_schedule="exponential",
                       decay_rate=0.5, decay_steps=20000, patience=None, monitor="val_loss")


@dataclass
class MoleculeTrainConfig:
    """Everything ``deepsci molecules train`` does.

    Attributes
    ----------
    data : str
        qm9 (all of QM9; needs the qm9 extra), subset (bundled) or a file/folder:
        .csv, .sdf (+ .sdf.csv), .xyz, a folder or .tar.bz2 of xyz files.
    out : str
        Output folder (rerun to resume the unfinished members).
    targets : list of str or None
        Comma-separated targets; none or 'all': the 12 of Gilmer present in the data.
    limit : int or None
        Use a seeded random sample of N molecules.
    split : {"random", "scaffold"}
        Random or Bemis–Murcko scaffold split.
    val, test : float
        Fractions (< 1) or counts (>= 1) of validation and test molecules;
        QM9's standard split is ``val=10000, test=10000``.
    seed : int
        Seed of sampling, split, and of member k's weights and data order (seed + k).
    loss : {"mae", "mse"}
        On standardised targets, averaged over known targets.
    ensemble : int
        Number of independently seeded models.
    time_budget : float or None
        Wall-clock minutes per model; training stops at the last epoch that
        fits (needs a ``lr_schedule`` that does not depend on the epoch count).
    smiles_column : str
        SMILES column of a CSV.
    skip_invalid : bool
        Skip unreadable molecules and report how many.
    model : ModelConfig
        Size of the network.
    train : TrainConfig
        The core loop's settings (its ``seed`` is replaced by each member's).
    accel : AcceleratorConfig
        Strategy, precision and XLA.
    """

    data: str = "subset"
    out: str = "runs/molecules"
    targets: list[str] | None = None
    limit: int | None = None
    split: str = "random"
    val: float = 0.1
    test: float = 0.1
    seed: int = 0
    loss: str = "mae"
    ensemble: int = 1
    time_budget: float | None = None
    smiles_column: str = "smiles"
    skip_invalid: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=_molecules_train_defaults)
    accel: AcceleratorConfig = field(default_factory=AcceleratorConfig)

    def target_names(self) -> list[str] | None:
        """The requested targets, or ``None`` for every Gilmer target present."""
        if self.targets is None or list(self.targets) == ["all"]:
            return None
        return resolve_targets(list(self.targets))

    def validate(self) -> MoleculeTrainConfig:
        """Raise :class:`ConfigError` for impossible values; return self unchanged."""
        checks = [
            (self.split in ("random", "scaffold"), "--split random|scaffold", repr(self.split)),
            (self.loss in ("mae", "mse"), "--loss mae|mse", repr(self.loss)),
            (self.ensemble >= 1, "--ensemble >= 1", self.ensemble),
            (self.seed >= 0, "--seed >= 0", self.seed),
            (self.limit is None or self.limit >= 2, "--limit >= 2", self.limit),
            (self.time_budget is None or self.time_budget > 0, "--time-budget > 0",
             self.time_budget),
        ]
        for k in ("val", "test"):
            v = getattr(self, k)
            checks.append((v == 0 or 0 < v < 1 or (v >= 1 and v == int(v)),
                           f"--{k} as a fraction < 1 or a count", v))
        fractions = [v for v in (self.val, self.test) if 0 < v < 1]
        checks.append((sum(fractions) < 1, "--val + --test fractions < 1 (some molecules left "
                       "to train on)", f"{self.val} + {self.test}"))
        for ok, what, found in checks:
            if not ok:
                raise ConfigError(f"expected {what}, found {found}")
        if self.time_budget is not None and self.train.lr_schedule == "cosine":
            raise ConfigError("expected a --lr-schedule other than cosine with --time-budget, "
                              "found cosine (its length depends on the epoch count)")
        try:
            self.target_names()
        except ValueError as exc:
            raise ConfigError(f"--targets: {exc}") from None
        self.model.validate()
        _check_train_options(self.train)
        self.train.validate()
        self.accel.validate()
        return self


def _check_train_options(tc: TrainConfig) -> None:
    """The core loop's numeric options, checked under the names ``train`` shows (--lr, …)."""
    import math

    def finite(v) -> bool:
        return v is not None and math.isfinite(float(v))

    checks = [
        (tc.epochs >= 1, "--epochs >= 1", tc.epochs),
        (tc.batch_size >= 1, "--batch-size >= 1", tc.batch_size),
        (finite(tc.learning_rate) and tc.learning_rate > 0, "--lr > 0", tc.learning_rate),
        (tc.steps_per_epoch is None or tc.steps_per_epoch >= 1, "--steps-per-epoch >= 1",
         tc.steps_per_epoch),
        (tc.warmup_steps >= 0, "--warmup-steps >= 0", tc.warmup_steps),
        (finite(tc.decay_rate) and 0 < tc.decay_rate <= 1, "--decay-rate in (0, 1]",
         tc.decay_rate),
        (tc.decay_steps is None or tc.decay_steps >= 1, "--decay-steps >= 1", tc.decay_steps),
        (finite(tc.weight_decay) and tc.weight_decay >= 0, "--weight-decay >= 0",
         tc.weight_decay),
        (tc.clip_norm is None or (finite(tc.clip_norm) and tc.clip_norm > 0), "--clip-norm > 0",
         tc.clip_norm),
        (tc.checkpoint_every >= 1, "--checkpoint-every >= 1", tc.checkpoint_every),
        (tc.keep_checkpoints >= 1, "--keep-checkpoints >= 1", tc.keep_checkpoints),
        (tc.patience is None or tc.patience >= 1, "--patience >= 1", tc.patience),
    ]
    for ok, what, found in checks:
        if not ok:
            raise ConfigError(f"expected {what}, found {found}")


def load_dataset(data: str, *, targets=None, limit=None, seed=0, smiles_column="smiles",
                 skip_invalid=False) -> MoleculeSet:
    """Read ``"qm9"``, ``"subset"`` or a user file into a :class:`MoleculeSet`."""
    if data == "qm9":
        ms = read_qm9pack(limit=limit, seed=seed)
    else:
        path = bundled_subset() if data == "subset" else Path(data)
        ms = read_molecules(path, targets=targets, smiles_column=smiles_column,
                            skip_invalid=skip_invalid, seed=seed)
        if limit is not None and limit < len(ms):
            ms = ms.subset(np.sort(np.random.default_rng(seed).choice(len(ms), limit, replace=False)))
    if targets is not None:
        missing = [t for t in targets if t not in ms.targets.columns]
        if missing:
            raise ConfigError(f"expected targets present in the data, found {missing} missing "
                              f"(available: {list(ms.targets.columns)})")
        ms.targets = ms.targets[list(targets)]
    if ms.targets.shape[1] == 0:
        raise ConfigError(f"expected target columns in {data}, found none")
    return ms


def _count(v: float, n: int) -> int:
    return int(round(v * n)) if v < 1 else int(v)


def split_indices(ms: MoleculeSet, *, kind: str, val: float, test: float, seed: int):
    """Train/val/test index arrays: a seeded random split or a scaffold split.

    The scaffold split groups molecules by Bemis–Murcko scaffold and fills the
    test and validation sets with whole groups, smallest groups first after a
    seeded shuffle, so no scaffold is shared between sets.
    """
    n = len(ms)
    n_val, n_test = _count(val, n), _count(test, n)
    if n_val + n_test >= n:
        raise ConfigError(f"expected val + test < {n} molecules, found {n_val} + {n_test}")
    rng = np.random.default_rng(seed)
    if kind == "random":
        perm = rng.permutation(n)
        return np.sort(perm[n_val + n_test:]), np.sort(perm[:n_val]), np.sort(perm[n_val:n_val + n_test])
    from rdkit.Chem.Scaffolds import MurckoScaffold

    groups: dict[str, list[int]] = {}
    for i, smi in enumerate(ms.smiles):
        try:
            key = MurckoScaffold.MurckoScaffoldSmiles(smiles=smi)
        except (ValueError, RuntimeError, AttributeError):
            key = smi
        groups.setdefault(key, []).append(i)
    sets = list(groups.values())
    order = rng.permutation(len(sets))
    # Big scaffold families go to training (as in chemprop's balanced split).
    sets = sorted((sets[i] for i in order), key=len)
    test_idx, val_idx, train_idx = [], [], []
    for g in sets:
        if len(test_idx) + len(g) <= n_test:
            test_idx += g
        elif len(val_idx) + len(g) <= n_val:
            val_idx += g
        else:
            train_idx += g
    return np.sort(train_idx), np.sort(val_idx), np.sort(test_idx)


def fit_scaling(table: GraphTable, y: np.ndarray) -> dict:
    """Per-element reference values by least squares on composition, then mean/std.

    Returns ``{"atomref": (5, T), "mean": (T,), "std": (T,)}`` as lists, so that
    ``(y - counts·atomref - mean) / std`` is standardised.
    """
    counts = table.element_counts()
    t = y.shape[1]
    atomref = np.zeros((counts.shape[1], t))
    mean, std = np.zeros(t), np.ones(t)
    design = np.concatenate([counts, np.ones((len(counts), 1))], axis=1)
    for j in range(t):
        ok = np.isfinite(y[:, j])
        if ok.sum() == 0:
            continue
        # A little ridge keeps elements absent from the data at zero.
        a = design[ok]
        coef = np.linalg.solve(a.T @ a + 1e-6 * np.eye(a.shape[1]), a.T @ y[ok, j])
        atomref[:, j] = coef[:-1]
        resid = y[ok, j] - counts[ok] @ coef[:-1]
        mean[j] = resid.mean()
        std[j] = max(resid.std(), 1e-6 * max(abs(mean[j]), 1.0), 1e-12)
    return {"atomref": atomref.tolist(), "mean": mean.tolist(), "std": std.tolist()}


def make_loss(std, kind: str):
    """Per-molecule loss on standardised errors, averaged over the known targets."""
    import tensorflow as tf

    inv = tf.constant(1.0 / np.asarray(std, np.float32))

    def loss(y_true, y_pred):
        known = tf.math.is_finite(y_true)
        err = tf.where(known, tf.where(known, y_true, 0.0) - y_pred, 0.0) * inv
        per = tf.abs(err) if kind == "mae" else tf.square(err)
        k = tf.reduce_sum(tf.cast(known, tf.float32), axis=1)
        return tf.reduce_sum(per, axis=1) / tf.maximum(k, 1.0)

    return loss


def member_paths(out: Path, ensemble: int) -> list[Path]:
    """Model files of the ensemble members in a training folder."""
    return [Path(out) / f"member_{k}" / "model.keras" for k in range(ensemble)]


def _data_info(cfg: MoleculeTrainConfig) -> tuple[dict, list[Path]]:
    """The card's provenance of ``cfg.data`` and the input files to record."""
    qm9 = "CC BY 4.0 (QM9: Ramakrishnan et al., Sci. Data 2014)"
    if cfg.data == "qm9":
        return {"name": "QM9 (qm9pack)", "files": [], "licence": qm9, "synthetic": False}, []
    path = bundled_subset() if cfg.data == "subset" else Path(cfg.data)
    info = {"name": "bundled QM9 subset" if cfg.data == "subset" else path.name,
            "files": [str(path)]}
    if cfg.data == "subset":
        info.update(licence=qm9, synthetic=False)
    return info, [path]


def _write_split(run: RunDir, ms: MoleculeSet, cfg: MoleculeTrainConfig, units: dict):
    """Split ``ms``; write ``split.json`` and the held-out ``test_set.csv.gz``."""
    tr, va, te = split_indices(ms, kind=cfg.split, val=cfg.val, test=cfg.test, seed=cfg.seed)
    if len(va) == 0:
        raise ConfigError("expected a validation set (--val > 0), found none")
    write_json(run.file("split.json"), {"train": [ms.ids[i] for i in tr],
                                        "val": [ms.ids[i] for i in va],
                                        "test": [ms.ids[i] for i in te], "n_skipped": ms.n_skipped})
    if len(te):
        test = ms.subset(te)
        write_csv(run.file("test_set.csv.gz"), ids=test.ids, smiles=test.smiles, mols=test.mols,
                  columns={n: test.targets[n].to_numpy() for n in units}, units=units)
    return tr, va, te


def train_molecules(cfg: MoleculeTrainConfig, *, strategy=None, dataset: MoleculeSet | None = None,
                    table: GraphTable | None = None, overwrite: bool = False) -> dict:
    """Run the whole training stage; returns the results recorded in ``run.json``.

    Resumable: a killed run restarted with the same config continues from the
    last checkpoint of the unfinished member; finished members are kept
    (their markers are in ``out/.state``). ``overwrite`` starts a finished run
    afresh. ``dataset`` skips reading ``cfg.data`` when the caller already
    holds the molecules (it must be what ``load_dataset`` returns for
    ``cfg``), and ``table`` skips featurising them
    (``featurize_set(dataset, cfg.model.graph)``).
    """
    from deepsci.core.accelerator import setup

    cfg = cfg.validate()
    data_info, inputs = _data_info(cfg)
    check_output_location(cfg.out)
    # The data first: a bad file is reported before any output folder exists.
    ms = dataset if dataset is not None else load_dataset(
        cfg.data, targets=cfg.target_names(), limit=cfg.limit, seed=cfg.seed,
        smiles_column=cfg.smiles_column, skip_invalid=cfg.skip_invalid)
    with RunDir(cfg.out, command="molecules train", config=cfg, inputs=inputs,
                overwrite=overwrite) as run:
        names = list(ms.targets.columns)
        units = {n: (TARGETS[n].unit if n in TARGETS else ms.units.get(n, "")) for n in names}
        tr, va, te = _write_split(run, ms, cfg, units)
        if table is None or len(table) != len(ms):
            table = featurize_set(ms, cfg.model.graph)
        y = ms.targets.to_numpy(np.float32)
        t_train = GraphTable.from_graphs([graph_at(table, i) for i in tr])
        t_val = GraphTable.from_graphs([graph_at(table, i) for i in va])
        scaling = fit_scaling(t_train, y[tr].astype(np.float64))
        data_info.update(n_train=len(tr), n_val=len(va), n_test=len(te),
                         seeds={"sample": cfg.seed, "split": cfg.seed})
        members = _train_members(run, cfg, (t_train, y[tr]), (t_val, y[va]), scaling, units,
                                 data_info, strategy or setup(cfg.accel))
        write_ensemble(run.path, members, info={"targets": names})
        pred, _ = predict_table(members, t_val)
        mae = {n: float(np.nanmean(np.abs(pred[:, j] - y[va, j]))) for j, n in enumerate(names)}
        summary = {"members": [str(m) for m in members], "targets": names, "units": units,
                   "n_train": len(tr), "n_val": len(va), "n_test": len(te),
                   "n_skipped": ms.n_skipped, "skipped": ms.skipped, "val_mae": mae}
        run.record(**summary)
    return summary


def _train_members(run: RunDir, cfg: MoleculeTrainConfig, train_set, val_set, scaling: dict,
                   units: dict, data_info: dict, strategy, *, loss_fn=None,
                   command: str = "molecules train", training_extra: dict | None = None
                   ) -> list[Path]:
    """Train (or keep, when a marker says it finished) every member; save each with its card.

    ``loss_fn`` replaces the label loss (``distill`` passes targets (M, 2T):
    labels, then the teacher's mean; the first T columns are the labels
    scored here); ``training_extra`` is merged into each card's ``training``.
    """
    from deepsci.core.models.serialization import save_model
    from deepsci.core.training import train

    (t_train, y_train), (t_val, y_val) = train_set, val_set
    names = list(units)
    tc = cfg.train
    members = []
    seeds = member_seeds(cfg.seed, cfg.ensemble)
    for k, (path, seed) in enumerate(zip(member_paths(run.path, cfg.ensemble), seeds, strict=True)):
        key = f"member_{k}"
        if run.done(key) and path.exists():
            members.append(path)
            continue
        mcfg = dataclasses.replace(tc, seed=seed)
        src = make_source(t_train, y_train, global_batch=tc.batch_size, shuffle=True, seed=seed)
        val_src = make_source(t_val, y_val, global_batch=tc.batch_size, shuffle=False)
        build = lambda: build_model(len(names), cfg.model, scaling)  # noqa: E731
        loss = loss_fn or make_loss(scaling["std"], cfg.loss)
        result = _train_member(train, build, src, val_src, loss, mcfg, path.parent, strategy,
                               cfg.time_budget)
        pred, _ = predict_table([result.model], t_val)
        val_mae = {n: float(np.nanmean(np.abs(pred[:, j] - y_val[:, j])))
                   for j, n in enumerate(names)}
        card = member_card(
            units=units, graph=cfg.model.graph, scaling=scaling, data=data_info,
            training={"command": command, "config": config_to_dict(cfg), "member": k,
                      "seed": seed, "epochs_run": len(result.history), "steps": result.steps,
                      **(training_extra or {})},
            metrics={"validation": {n: {"mae": v, "unit": units[n]} for n, v in val_mae.items()}},
            extra={"member": k, "model_config": dataclasses.asdict(cfg.model),
                   "history_tail": result.history[-1] if result.history else {}})
        save_model(result.model, path, card=card)
        run.mark(key, {"path": str(path), "val_mae": val_mae})
        members.append(path)
    return members


def _train_member(train, build, src, val_src, loss, tc, out_dir: Path, strategy, budget):
    """One member; with a time budget, epoch by epoch until the next would not fit."""
    if budget is None:
        return train(build, src, loss, tc, out_dir, val_data=val_src, strategy=strategy)
    start = time.perf_counter()
    epoch, result, last = 1, None, 0.0
    while epoch <= tc.epochs:
        t0 = time.perf_counter()
        result = train(build, src, loss, dataclasses.replace(tc, epochs=epoch), out_dir,
                       val_data=val_src, strategy=strategy)
        last = time.perf_counter() - t0
        elapsed = time.perf_counter() - start
        if elapsed + last > budget * 60:
            break
        epoch += 1
    return result
