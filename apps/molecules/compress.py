"""``deepsci molecules export`` and ``distill``: int8/float16 LiteRT files and smaller students.

Export (:data:`EXPORT`, run by :func:`deepsci.core.compress.run_export`): the
file holds the model's fixed-slot form (:mod:`.export_model`): one molecule
per row, padded to 30 atom slots (QM9's largest molecule has 29 atoms) and
60 directed-edge slots (bond graph; n(n-1) for a complete graph), with
standardised outputs that inference scales back in float64. In an int8 file
every op is integer except the messages' segment sum to their receivers
and an index cast (the report's ``float_ops``); the GRU steps and the set2set
readout are int8. Representative and check molecules come from ``--inputs``
(any file ``predict`` reads: .smi, .csv, .sdf, .xyz, a folder or a tarball)
or, without it, a seeded random sample of QM9 from qm9pack (the bundled QM9
subset when qm9pack is missing).

Distillation (:func:`distill`): the teacher (one model or an ensemble, e.g.
``a.keras,b.keras`` or a training folder) predicts every training and
validation molecule once (cached, resumable, in ``OUT/teacher-cache``); a
smaller MPNN learns ``alpha * |s - teacher| + (1 - alpha) * |s - label|`` on
standardised targets, and molecules without DFT labels (``--unlabelled``, or
NaN cells in ``--data``) learn from the teacher alone.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepsci.core.compress import DistillSettings, ExportSpec
from deepsci.core.errors import ConfigError, InputError

from .model import APP, TASK, ModelConfig

__all__ = ["EXPORT", "draw", "compare", "DistillConfig", "distill", "TOLERANCE"]

#: Default refusal threshold of :func:`compare`: a per-target mean shift of 0.02
#: standard deviations, ~5-10 % of a QM9 model's standardised MAE (0.2-0.4 σ).
TOLERANCE = 0.02
#: Molecules per teacher-cache shard.
TEACHER_CHUNK = 256


def _molecules(source, n: int, seed: int):
    """``n`` molecules: a seeded sample of ``source`` or, without one, of QM9."""
    from deepsci.core.errors import InputError

    from .io import bundled_subset, read_molecules, read_qm9pack

    if source is None:
        try:
            return read_qm9pack(limit=n, seed=seed)
        except (InputError, ImportError, OSError):
            source = bundled_subset()
    ms = read_molecules(Path(source), targets=None, skip_invalid=True, seed=seed)
    if len(ms) > n:
        ms = ms.subset(np.sort(np.random.default_rng(seed).choice(len(ms), n, replace=False)))
    return ms


def draw(source, n: int, seed: int, card) -> dict[str, np.ndarray]:
    """``n`` molecules in the exported model's input form (fixed slots).

    Parameters
    ----------
    source : path or None
        Any molecule file ``predict`` reads; ``None``: QM9 from qm9pack,
        a random sample seeded with ``seed``.
    card : ModelCard
        The float model's card (its graph kind).

    Returns
    -------
    dict with ``atoms`` (n, 30, F_a), ``edges`` (n, E, F_e), ``pairs`` (n, E, 2)
        Fewer rows when the source has fewer molecules; molecules larger than
        the slots are left out.
    """
    from .graphs import SLOT_ATOMS, featurize_set, slot_edges, to_slots

    graph = card.input_spec.get("graph", "bond")
    table = featurize_set(_molecules(source, n, seed), graph, workers=1)
    na, ne = np.diff(table.atom_splits), np.diff(table.edge_splits)
    fits = np.flatnonzero((na < SLOT_ATOMS) & (ne <= slot_edges(graph)))[:n]
    return to_slots(table, fits, atoms=SLOT_ATOMS, edges=slot_edges(graph))


def compare(float_out, exported_out) -> float:
    """Largest per-target mean |difference| of standardised outputs (in σ of each target).

    The exported model's MAE per target is at most the float model's plus
    this many standard deviations of that target.
    """
    d = np.abs(np.asarray(float_out, np.float64) - np.asarray(exported_out, np.float64))
    return float(d.mean(axis=0).max())


def _prepare(model, card):
    from .export_model import export_form

    return export_form(model, card)


EXPORT = ExportSpec(app=APP, task=TASK, draw=draw, compare=compare, prepare=_prepare,
                    measure="largest per-target mean |shift| (standardised targets)",
                    tolerance=TOLERANCE)


def _student_default() -> ModelConfig:
    # About a quarter of the default model's FLOPs: the per-atom work scales with units².
    return ModelConfig(units=32, steps=3, edge_hidden=(32, 16), set2set_steps=2, head=(64,))


@dataclass
class DistillConfig:
    """``deepsci molecules distill``.

    Attributes
    ----------
    distill : DistillSettings
        Teacher (models, an ensemble folder or shipped names, e.g. molecules-qm9),
        temperature (not used by regression targets; recorded) and alpha.
    data : str
        Labelled molecules, as ``train --data``: qm9, subset or a file/folder.
    unlabelled : str or None
        Molecules without DFT labels (.smi one SMILES per line, .csv, .sdf, .xyz,
        a folder): added to the training set, they learn from the teacher alone
        (labels in it are ignored).
    out : str
        Output folder: a normal model folder (ensemble.json, member_0/model.keras).
    limit : int or None
        Seeded random sample of N labelled molecules.
    val, test : float
        Fractions or counts of validation and test molecules (as ``train``).
    split : {"random", "scaffold"}
    seed : int
    loss : {"mae", "mse"}
    time_budget : float or None
        Wall-clock minutes of training.
    epochs, batch_size : int
    learning_rate : float
    student : ModelConfig
        The student's size (default: units 32, edge network 32,16, set2set 2, head 64).
    """

    distill: DistillSettings = field(default_factory=DistillSettings)
    data: str = "subset"
    unlabelled: str | None = None
    out: str = "runs/molecules-student"
    limit: int | None = None
    val: float = 0.1
    test: float = 0.1
    split: str = "random"
    seed: int = 0
    loss: str = "mae"
    time_budget: float | None = None
    epochs: int = 50
    batch_size: int = 64
    learning_rate: float = 1e-3
    student: ModelConfig = field(default_factory=_student_default)

    def train_config(self):
        """The :class:`~.train.MoleculeTrainConfig` this run trains with."""
        from .train import MoleculeTrainConfig, _molecules_train_defaults

        tc = dataclasses.replace(_molecules_train_defaults(), epochs=int(self.epochs),
                                 batch_size=int(self.batch_size),
                                 learning_rate=float(self.learning_rate))
        return MoleculeTrainConfig(data=self.data, out=self.out, limit=self.limit, split=self.split,
                                   val=self.val, test=self.test, seed=self.seed, loss=self.loss,
                                   ensemble=1, time_budget=self.time_budget, model=self.student,
                                   train=tc)

    def validate(self) -> DistillConfig:
        self.distill.validate()
        for ok, what, found in ((self.epochs >= 1, "--epochs >= 1", self.epochs),
                                (self.batch_size >= 1, "--batch-size >= 1", self.batch_size),
                                (self.learning_rate > 0, "--learning-rate > 0",
                                 self.learning_rate)):
            if not ok:
                raise ConfigError(f"expected {what}, found {found}")
        if self.unlabelled is not None and not Path(self.unlabelled).exists():
            raise InputError("expected an existing --unlabelled molecule file, found none",
                             self.unlabelled)
        self.train_config().validate()
        return self


def _teacher_chunks(table, per: int | None = None) -> tuple[list[dict], list[int]]:
    """Padded disjoint-union batches of ``table`` in order, one shape, and their sizes."""
    from .graphs import collate, packing, pad_batch

    per = int(per or TEACHER_CHUNK)
    atoms, edges = packing(table, per)
    chunks, sizes = [], []
    for s in range(0, len(table), per):
        index = np.arange(s, min(len(table), s + per))
        x, _, _ = pad_batch(collate(table, index), np.zeros((len(index), 0), np.float32),
                            atoms=atoms, edges=edges, graphs=per + 1)
        chunks.append(x)
        sizes.append(len(index))
    return chunks, sizes


def _teacher_mean(settings, table, cache_dir: Path) -> tuple[np.ndarray, list[Path]]:
    """The teacher's mean prediction (M, T) in physical units for ``table``, cached."""
    from deepsci.core.compress import teacher_targets
    from deepsci.core.ensemble import model_paths
    from deepsci.core.models.registry import resolve_model

    spec = resolve_model(settings.teacher, app=APP, task=TASK)
    bad = [p for p in model_paths(spec) if p.suffix != ".keras"]
    if bad:
        raise ConfigError(f"expected .keras teacher models, found {bad[0].name} "
                          "(distil from the float models, then export)")
    chunks, sizes = _teacher_chunks(table)
    # Chunks are whole padded batches: passed to the model as they are (batch_size None).
    out, paths = teacher_targets(dataclasses.replace(settings, teacher=str(spec)), chunks, app=APP,
                                 task=TASK, cache_dir=cache_dir, heads={"output": "mean"},
                                 batch_size=None)
    per = len(out["output"]) // len(sizes)
    rows = np.concatenate([np.arange(i * per, i * per + n) for i, n in enumerate(sizes)])
    return out["output"][rows].astype(np.float64), paths


def _loss(std, settings, kind: str, n_targets: int):
    """Per-molecule loss on standardised targets; ``y_true`` is (B, 2T): labels, teacher."""
    import tensorflow as tf

    from deepsci.core.compress import distill_loss_fn

    core = distill_loss_fn({"output": "mean"}, settings, regression=kind)
    inv = tf.constant(1.0 / np.asarray(std, np.float32))

    def loss(y_true, y_pred):
        s = y_pred * inv
        label, teacher = y_true[:, :n_targets] * inv, y_true[:, n_targets:] * inv
        # Padding molecules (weight 0) have no teacher row: make their term 0, not NaN.
        teacher = tf.where(tf.math.is_finite(teacher), teacher, tf.stop_gradient(s))
        return core({"label": label, "teacher": teacher}, s)

    return loss


def _sets(cfg: DistillConfig, names: list[str]):
    """Labelled molecules (labels of ``names``, NaN where missing) and the unlabelled ones."""
    from .io import read_molecules
    from .train import load_dataset

    ms = load_dataset(cfg.data, limit=cfg.limit, seed=cfg.seed)
    ms.targets = ms.targets.reindex(columns=names)
    unl = None
    if cfg.unlabelled:
        unl = read_molecules(Path(cfg.unlabelled), targets=None, skip_invalid=True, seed=cfg.seed)
    return ms, unl


def distill(cfg: DistillConfig, *, overwrite: bool = False, progress: bool = False) -> dict:
    """Distil ``cfg.distill.teacher`` into a smaller MPNN; write a normal model folder.

    The folder has ``train``'s layout (``split.json``, ``test_set.csv.gz``,
    ``ensemble.json``, ``member_0/model.keras`` with its card, whose
    ``training["distillation"]`` records teacher, T, alpha and data), so
    ``predict``, ``evaluate`` and ``export`` take it. Resumable: teacher shards
    and a finished student are kept.
    """
    from deepsci.core.accelerator import setup
    from deepsci.core.compress import distill_card_entry
    from deepsci.core.ensemble import model_paths, write_ensemble
    from deepsci.core.models.card import read_card
    from deepsci.core.models.registry import resolve_model
    from deepsci.core.runs import RunDir

    from .graphs import GraphTable, featurize_set, graph_at
    from .predict import predict_table
    from .train import _data_info, _train_members, _write_split, fit_scaling

    cfg = cfg.validate()
    tcfg = cfg.train_config()
    first = model_paths(resolve_model(cfg.distill.teacher, app=APP, task=TASK))[0]
    tcard = read_card(first, expect=APP, task=TASK)
    names = list(tcard.outputs)
    units = {n: o.get("unit", "") for n, o in tcard.outputs.items()}
    data_info, inputs = _data_info(tcfg)
    with RunDir(cfg.out, command="molecules distill", config=cfg, overwrite=overwrite,
                inputs=[*inputs, *([cfg.unlabelled] if cfg.unlabelled else [])]) as run:
        ms, unl = _sets(cfg, names)
        tr, va, te = _write_split(run, ms, tcfg, units)
        table = featurize_set(ms, cfg.student.graph)
        graphs = [graph_at(table, i) for i in tr]
        n_unl = 0
        if unl is not None:
            t_unl = featurize_set(unl, cfg.student.graph)
            graphs += [graph_at(t_unl, i) for i in range(len(t_unl))]
            n_unl = len(t_unl)
        t_train = GraphTable.from_graphs(graphs)
        t_val = GraphTable.from_graphs([graph_at(table, i) for i in va])
        y = ms.targets.to_numpy(np.float32)
        y_train = np.concatenate([y[tr], np.full((n_unl, len(names)), np.nan, np.float32)])
        both = GraphTable.from_graphs(graphs + [graph_at(table, i) for i in va])
        teacher, t_paths = _teacher_mean(cfg.distill, both, run.path / "teacher-cache")
        t_tr, t_va = teacher[:len(t_train)], teacher[len(t_train):]
        # Scaling from the teacher's predictions: defined for unlabelled molecules too.
        scaling = fit_scaling(t_train, t_tr)
        entry = distill_card_entry(cfg.distill, t_paths, student=dataclasses.asdict(cfg.student),
                                   data={"labelled": cfg.data, "n_labelled_train": int(len(tr)),
                                         "unlabelled": cfg.unlabelled, "n_unlabelled": n_unl})
        data_info.update(n_train=len(tr), n_val=len(va), n_test=len(te), n_unlabelled=n_unl,
                         seeds={"sample": cfg.seed, "split": cfg.seed})
        members = _train_members(
            run, tcfg, (t_train, np.concatenate([y_train, t_tr], 1).astype(np.float32)),
            (t_val, np.concatenate([y[va], t_va], 1).astype(np.float32)), scaling, units,
            data_info, setup(tcfg.accel), loss_fn=_loss(scaling["std"], cfg.distill, cfg.loss,
                                                         len(names)),
            command="molecules distill", training_extra={"distillation": entry})
        write_ensemble(run.path, members, info={"targets": names})
        pred, _ = predict_table(members, t_val)
        mae = {n: float(np.nanmean(np.abs(pred[:, j] - y[va, j]))) for j, n in enumerate(names)}
        summary = {"members": [str(m) for m in members], "targets": names, "units": units,
                   "n_train": len(tr), "n_unlabelled": n_unl, "n_val": len(va), "n_test": len(te),
                   "val_mae": mae, "distillation": entry}
        run.record(**summary)
    return summary
