"""Disjoint-union batches of molecular graphs, in NumPy and as ``tf.data`` sources.

A batch of B molecules is one big graph: atom arrays are concatenated, each
molecule's ``pairs`` are shifted by the number of atoms before it, and
``graph`` maps every atom to its molecule (see :mod:`deepsci.core.models.mpnn`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .featurize import N_ATOM_FEATURES, N_EDGE_FEATURES, Graph, featurize_chunk
from .io import MoleculeSet, available_cpus

__all__ = ["GraphTable", "collate", "make_source", "iterate_batches", "featurize_set",
           "pad_batch", "packing", "SLOT_ATOMS", "slot_edges", "to_slots"]

#: Molecules per featurisation task (one process's share of the work at a time).
FEATURIZE_CHUNK = 1000


@dataclass
class GraphTable:
    """Many graphs stored flat (CSR-like), cheap to slice and batch.

    Attributes
    ----------
    atoms : (sum n_i, F_a) float32
    edges : (sum E_i, F_e) float32
    pairs : (sum E_i, 2) int32, indices local to each molecule
    atom_splits, edge_splits : (M + 1,) int64 offsets of each molecule
    """

    atoms: np.ndarray
    edges: np.ndarray
    pairs: np.ndarray
    atom_splits: np.ndarray
    edge_splits: np.ndarray

    @classmethod
    def from_graphs(cls, graphs: list[Graph]) -> GraphTable:
        if not graphs:
            z = np.zeros(1, np.int64)
            return cls(np.zeros((0, N_ATOM_FEATURES), np.float32),
                       np.zeros((0, N_EDGE_FEATURES), np.float32), np.zeros((0, 2), np.int32), z, z)
        na = np.array([g.atoms.shape[0] for g in graphs])
        ne = np.array([g.pairs.shape[0] for g in graphs])
        return cls(
            atoms=np.concatenate([g.atoms for g in graphs]).astype(np.float32),
            edges=np.concatenate([g.edges for g in graphs]).astype(np.float32),
            pairs=np.concatenate([g.pairs for g in graphs]).astype(np.int32),
            atom_splits=np.concatenate([[0], np.cumsum(na)]).astype(np.int64),
            edge_splits=np.concatenate([[0], np.cumsum(ne)]).astype(np.int64),
        )

    def __len__(self) -> int:
        return len(self.atom_splits) - 1

    def element_counts(self) -> np.ndarray:
        """(M, 5) counts of H, C, N, O, F per molecule (the element one-hot columns)."""
        sums = np.add.reduceat(self.atoms[:, :5], self.atom_splits[:-1], axis=0) \
            if len(self) else np.zeros((0, 5))
        return np.asarray(sums, np.float64)


def featurize_set(ms: MoleculeSet, graph: str, *, desc: str = "featurise",
                  workers: int | None = None) -> GraphTable:
    """Featurise every molecule of ``ms`` (with a progress bar over chunks).

    Chunks of :data:`FEATURIZE_CHUNK` molecules run in ``workers`` spawned
    processes (:func:`deepsci.core.parallel.process_map`; default: every
    available CPU), so a TensorFlow already running here is never forked;
    a single chunk runs in this process.
    """
    from deepsci.core.parallel import process_map

    step = FEATURIZE_CHUNK
    chunks = [(ms.mols[s:s + step], graph) for s in range(0, len(ms.mols), step)]
    parts = process_map(featurize_chunk, chunks, workers=workers or available_cpus(),
                        desc=f"{desc} (chunks)", progress=True)
    return GraphTable.from_graphs([g for part in parts for g in part])


def graph_at(table: GraphTable, i: int) -> Graph:
    """Molecule ``i`` of ``table`` as a :class:`~.featurize.Graph`."""
    a0, a1 = table.atom_splits[i], table.atom_splits[i + 1]
    e0, e1 = table.edge_splits[i], table.edge_splits[i + 1]
    return Graph(table.atoms[a0:a1], table.pairs[e0:e1], table.edges[e0:e1])


def collate(table: GraphTable, index) -> dict[str, np.ndarray]:
    """The disjoint-union batch of molecules ``index`` as model inputs (NumPy)."""
    index = np.asarray(index, np.int64)
    a0, a1 = table.atom_splits[index], table.atom_splits[index + 1]
    e0, e1 = table.edge_splits[index], table.edge_splits[index + 1]
    na, ne = a1 - a0, e1 - e0
    atom_idx = _ranges(a0, na)
    edge_idx = _ranges(e0, ne)
    offsets = np.concatenate([[0], np.cumsum(na)[:-1]]).astype(np.int32)
    shift = np.repeat(offsets, ne)
    return {
        "atoms": table.atoms[atom_idx],
        "edges": table.edges[edge_idx],
        "pairs": (table.pairs[edge_idx] + shift[:, None]).astype(np.int32),
        "graph": np.repeat(np.arange(len(index), dtype=np.int32), na),
    }


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    # Concatenated aranges [s, s+l) without a Python loop.
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    idx = np.arange(total) - np.repeat(ends - lengths, lengths)
    return idx + np.repeat(starts, lengths)


def iterate_batches(table: GraphTable, batch_size: int):
    """Yield ``(index, inputs)`` over all molecules in order, ``batch_size`` at a time."""
    for s in range(0, len(table), batch_size):
        index = np.arange(s, min(s + batch_size, len(table)))
        yield index, collate(table, index)


def pad_batch(inputs: dict[str, np.ndarray], y: np.ndarray, *, atoms: int, edges: int,
              graphs: int):
    """Pad a disjoint-union batch to fixed sizes with one extra "padding molecule".

    Fixed shapes let one compiled step serve every batch. Padding atoms and
    edges (self-loops with zero features) all belong to molecule ``graphs - 1``;
    padded rows of ``y`` are NaN with sample weight 0.

    Returns
    -------
    inputs, y (graphs, T), weight (graphs,)
    """
    n_at, n_ed, n_g = len(inputs["atoms"]), len(inputs["edges"]), int(len(y))
    if n_at >= atoms or n_ed > edges or n_g >= graphs:
        raise ValueError(f"Expected a batch smaller than the padded sizes. Received: {n_at} atoms,"
                         f" {n_ed} edges, {n_g} molecules for {atoms}, {edges}, {graphs}")
    pa, pe = atoms - n_at, edges - n_ed
    last = atoms - 1
    out = {
        "atoms": np.concatenate([inputs["atoms"], np.zeros((pa, inputs["atoms"].shape[1]),
                                                           np.float32)]),
        "edges": np.concatenate([inputs["edges"], np.zeros((pe, inputs["edges"].shape[1]),
                                                           np.float32)]),
        "pairs": np.concatenate([inputs["pairs"], np.full((pe, 2), last, np.int32)]),
        # Padding atoms go to the last molecule so that every id below it exists.
        "graph": np.concatenate([inputs["graph"], np.full(pa, graphs - 1, np.int32)]),
    }
    y_pad = np.full((graphs, y.shape[1]), np.nan, np.float32)
    y_pad[:n_g] = y
    w = np.zeros(graphs, np.float32)
    w[:n_g] = 1.0
    return out, y_pad, w


def packing(table: GraphTable, per_replica: int) -> tuple[int, int]:
    """Padded (atoms, edges) of a batch of ``per_replica`` molecules of ``table``."""
    na = np.diff(table.atom_splits)
    ne = np.diff(table.edge_splits)
    # Room for a typical batch of per_replica molecules; the rare larger batch is
    # closed early (fewer molecules), never overflowed.
    atoms = int(per_replica * na.mean() + 3 * np.sqrt(per_replica) * na.std() + na.max()) + 1
    edges = int(per_replica * ne.mean() + 3 * np.sqrt(per_replica) * ne.std() + ne.max()) + 1
    return atoms, edges


def make_source(table: GraphTable, y: np.ndarray, *, global_batch: int, shuffle: bool,
                seed: int = 0):
    """A training-loop ``DataSource`` in function form: every replica batches whole molecules.

    Batches hold up to ``global_batch / replicas`` molecules packed into fixed
    atom/edge/molecule sizes (see :func:`pad_batch`), with sample weights 0 on
    the padding molecule, so the compiled step is traced once.

    Parameters
    ----------
    table : GraphTable
    y : (M, T) float32
        Targets, NaN where unknown (masked in the loss).
    global_batch : int
        Molecules per step over all replicas.
    shuffle : bool
        Reshuffle with ``(seed, epoch)`` each epoch (deterministic for a given epoch).

    Returns
    -------
    callable
        ``fn(input_context, epoch=0) -> tf.data.Dataset`` of ``(inputs, y, weight)``.
    """
    import tensorflow as tf

    y = np.asarray(y, np.float32)
    n = len(table)
    na = np.diff(table.atom_splits)
    ne = np.diff(table.edge_splits)

    def fn(ctx, epoch: int = 0):
        per_replica = max(ctx.get_per_replica_batch_size(global_batch), 1)
        max_atoms, max_edges = packing(table, per_replica)
        order = np.arange(n)
        if shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(n)
        order = order[ctx.input_pipeline_id::ctx.num_input_pipelines]
        batches, cur, a, e = [], [], 0, 0
        for i in order:
            if cur and (len(cur) == per_replica or a + na[i] >= max_atoms
                        or e + ne[i] > max_edges):
                batches.append(cur)
                cur, a, e = [], 0, 0
            cur.append(i)
            a += na[i]
            e += ne[i]
        if cur and (not shuffle or len(cur) == per_replica or not batches):
            batches.append(cur)
        # Every replica must take the same number of steps, so whole rounds only;
        # in evaluation the last round is completed with repeats of weight 0.
        reps = max(ctx.num_replicas_in_sync // ctx.num_input_pipelines, 1)
        extra = (-len(batches)) % reps
        if shuffle:
            batches = batches[:len(batches) - len(batches) % reps] or batches[:1] * reps
        else:
            batches = [(b, 1.0) for b in batches] + [(batches[0], 0.0)] * extra
        batches = [b if isinstance(b, tuple) else (b, 1.0) for b in batches]

        def gen():
            for b, scale in batches:
                b = np.asarray(b)
                x, yy, w = pad_batch(collate(table, b), y[b], atoms=max_atoms, edges=max_edges,
                                     graphs=per_replica + 1)
                yield x, yy, w * scale

        spec = ({"atoms": tf.TensorSpec((max_atoms, table.atoms.shape[1]), tf.float32),
                 "edges": tf.TensorSpec((max_edges, table.edges.shape[1]), tf.float32),
                 "pairs": tf.TensorSpec((max_edges, 2), tf.int32),
                 "graph": tf.TensorSpec((max_atoms,), tf.int32)},
                tf.TensorSpec((per_replica + 1, y.shape[1]), tf.float32),
                tf.TensorSpec((per_replica + 1,), tf.float32))
        ds = tf.data.Dataset.from_generator(gen, output_signature=spec)
        return ds.apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(2)

    return fn


#: Atom slots per molecule of an exported (``.tflite``) model: QM9's largest
#: molecule (29 atoms) plus one slot that is always padding.
SLOT_ATOMS = 30


def slot_edges(graph: str, atoms: int = SLOT_ATOMS) -> int:
    """Directed-edge slots per molecule of an exported model of graph kind ``graph``."""
    # Bond graphs of QM9 have at most 56 directed edges; a complete graph has n(n-1).
    return 60 if graph == "bond" else (atoms - 1) * (atoms - 2)


def to_slots(table: GraphTable, index, *, atoms: int, edges: int) -> dict[str, np.ndarray]:
    """Molecules ``index`` of ``table``, each padded to fixed atom and edge slots.

    The fixed-shape form of an exported model: molecule ``i``'s atoms fill
    ``atoms[i, :n_i]`` (padding rows are zero, so their element one-hot is
    empty), its edges ``edges[i, :E_i]`` with local ``pairs``, and padding
    edges are self-loops on the last slot, which is always padding.

    Returns
    -------
    dict with ``atoms`` (B, atoms, F_a), ``edges`` (B, edges, F_e), ``pairs`` (B, edges, 2) int32

    Raises
    ------
    InputError
        A molecule with more than ``atoms - 1`` atoms or ``edges`` edges.
    """
    from deepsci.core.errors import InputError

    index = np.asarray(index, np.int64)
    a0, e0 = table.atom_splits[index], table.edge_splits[index]
    na, ne = table.atom_splits[index + 1] - a0, table.edge_splits[index + 1] - e0
    if len(index) and (na.max() >= atoms or ne.max() > edges):
        raise InputError(f"expected molecules of at most {atoms - 1} atoms and {edges} edges for "
                         f"an exported model, found one of {int(na.max())} atoms and "
                         f"{int(ne.max())} edges (use the .keras model)")
    b = len(index)
    out = {"atoms": np.zeros((b, atoms, table.atoms.shape[1]), np.float32),
           "edges": np.zeros((b, edges, table.edges.shape[1]), np.float32),
           "pairs": np.full((b, edges, 2), atoms - 1, np.int32)}
    mol_a, mol_e = np.repeat(np.arange(b), na), np.repeat(np.arange(b), ne)
    loc_a = np.arange(int(na.sum())) - np.repeat(np.cumsum(na) - na, na)
    loc_e = np.arange(int(ne.sum())) - np.repeat(np.cumsum(ne) - ne, ne)
    out["atoms"][mol_a, loc_a] = table.atoms[_ranges(a0, na)]
    rows = _ranges(e0, ne)
    out["edges"][mol_e, loc_e] = table.edges[rows]
    out["pairs"][mol_e, loc_e] = table.pairs[rows]
    return out
