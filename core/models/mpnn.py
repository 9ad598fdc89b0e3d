"""Message-passing neural network (enn-s2s) of Gilmer et al., ICML 2017.

The graph of a batch is the *disjoint union* of its molecules: atoms of all
molecules are stacked, ``pairs`` index into that stack, and ``graph`` gives
each atom's molecule, so no padding to a fixed atom count is needed.

Inputs (a dict):

``atoms``  (N, F_a) float32    atom features of all N atoms in the batch
``edges``  (E, F_e) float32    features of the E directed edges
``pairs``  (E, 2) int32        (receiver v, sender w) atom indices per edge
``graph``  (N,) int32          molecule index 0..B-1 of each atom, sorted

Output: ``(B, T)`` predictions, one column per target.

Model: atom embedding h⁰ = W·x; for t = 1..T the edge-network message
m_v = Σ_w A(e_vw) h_w with A(e) an MLP of the edge features reshaped to a
(d, d) matrix, and a GRU update h_v ← GRU(m_v, h_v) whose weights are tied
over the T steps; a set2set readout over M steps; an MLP head; and an output
layer that undoes the target standardisation and adds a per-element
reference ("atomref", fitted by least squares on composition), so extensive
energies (U0 ~ 10⁴ eV) are learnt as small residuals.

The edge network's last layer is linear, so A(e) = Σ_k z_k(e) W_k with z the
last hidden layer plus a constant 1. The layer therefore computes
P = h·[W_1 … W_K] once per atom and per step and contracts the gathered P_w
with z(e) per edge: the same function as materialising A(e) per edge, but
without the (E, d, d) tensor, which is what makes CPU inference fast.
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from .serialization import register

__all__ = ["EdgeNetworkGRU", "Set2Set", "TargetScaler", "mpnn", "INPUT_NAMES"]

INPUT_NAMES = ("atoms", "edges", "pairs", "graph")


def _pos_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Expected {name} to be an integer >= {minimum}. Received: {name}={value!r}")
    return value


def _num_graphs(graph):
    # Graph ids are contiguous 0..B-1; an empty (padding) batch gives 0.
    return tf.maximum(tf.reduce_max(graph) + 1, 0)


@register
class EdgeNetworkGRU(keras.layers.Layer):
    """T steps of edge-network messages and a GRU update with weights tied over steps.

    Parameters
    ----------
    units : int
        Hidden state size d of every atom.
    steps : int
        Number of message-passing steps T.
    edge_hidden : sequence of int
        Hidden layer sizes of the edge network; the last one is K in the
        factorised form A(e) = Σ_k z_k(e) W_k (plus a bias matrix).
    aggregation : {"sum", "mean"}
        How messages arriving at an atom are combined ("sum" is Gilmer's).

    Call arguments
    --------------
    inputs : list
        ``[h (N, d), edges (E, F_e), pairs (E, 2)]``.

    Returns
    -------
    (N, d) hidden states after T steps.
    """

    def __init__(self, units: int = 64, steps: int = 3, edge_hidden: Sequence[int] = (64,),
                 aggregation: str = "sum", **kwargs):
        super().__init__(**kwargs)
        self.units = _pos_int("units", units)
        self.steps = _pos_int("steps", steps)
        edge_hidden = tuple(edge_hidden) if isinstance(edge_hidden, (list, tuple)) else edge_hidden
        if not isinstance(edge_hidden, tuple) or not edge_hidden or not all(
                isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in edge_hidden):
            raise ValueError("Expected edge_hidden to be a non-empty sequence of positive integers. "
                             f"Received: edge_hidden={edge_hidden!r}")
        self.edge_hidden = edge_hidden
        if aggregation not in ("sum", "mean"):
            raise ValueError(f"Expected aggregation in ('sum', 'mean'). Received: aggregation={aggregation!r}")
        self.aggregation = aggregation

    def build(self, input_shape):
        h_shape, e_shape, _ = input_shape
        if h_shape[-1] != self.units:
            raise ValueError(f"Expected hidden states of size units={self.units}. "
                             f"Received: shape {tuple(h_shape)}")
        d, fan_in = self.units, int(e_shape[-1])
        self.edge_kernels, self.edge_biases = [], []
        for i, k in enumerate(self.edge_hidden):
            self.edge_kernels.append(self.add_weight(
                shape=(fan_in, k), initializer="glorot_uniform", name=f"edge_kernel_{i}"))
            self.edge_biases.append(self.add_weight(shape=(k,), initializer="zeros",
                                                    name=f"edge_bias_{i}"))
            fan_in = k
        # (K+1) matrices of (d, d), the +1 being the bias matrix of A(e); scaled so the
        # initial messages have unit-order variance regardless of K.
        self.message_kernel = self.add_weight(
            shape=(d, (fan_in + 1) * d),
            initializer=keras.initializers.VarianceScaling(1.0 / (fan_in + 1), "fan_in", "uniform"),
            name="message_kernel")
        self.gru_kernel = self.add_weight(shape=(d, 3 * d), initializer="glorot_uniform",
                                          name="gru_kernel")
        self.gru_recurrent = self.add_weight(shape=(d, 3 * d), initializer="orthogonal",
                                             name="gru_recurrent")
        self.gru_bias = self.add_weight(shape=(2, 3 * d), initializer="zeros", name="gru_bias")
        self.built = True

    def _edge_net(self, edges):
        z = edges
        for w, b in zip(self.edge_kernels, self.edge_biases, strict=True):
            z = tf.nn.relu(tf.matmul(z, w) + b)
        return tf.concat([z, tf.ones_like(z[:, :1])], axis=1)  # (E, K+1)

    def _gru(self, m, h):
        d = self.units
        x = tf.matmul(m, self.gru_kernel) + self.gru_bias[0]
        r = tf.matmul(h, self.gru_recurrent) + self.gru_bias[1]
        z = tf.sigmoid(x[:, :d] + r[:, :d])
        reset = tf.sigmoid(x[:, d:2 * d] + r[:, d:2 * d])
        cand = tf.tanh(x[:, 2 * d:] + reset * r[:, 2 * d:])
        return z * h + (1.0 - z) * cand

    def call(self, inputs, training=None):
        h, edges, pairs = inputs
        pairs = tf.cast(pairs, tf.int32)
        recv, send = pairs[:, 0], pairs[:, 1]
        n = tf.shape(h)[0]
        z = self._edge_net(tf.cast(edges, h.dtype))
        kz = tf.shape(z)[1]
        if self.aggregation == "mean":
            deg = tf.math.unsorted_segment_sum(tf.ones_like(recv, h.dtype), recv, n)
            inv_deg = 1.0 / tf.maximum(deg, 1.0)[:, None]
        for _ in range(self.steps):
            p = tf.reshape(tf.matmul(h, self.message_kernel), [n, kz, self.units])
            per_edge = tf.einsum("ek,ekd->ed", z, tf.gather(p, send))
            m = tf.math.unsorted_segment_sum(per_edge, recv, n)
            if self.aggregation == "mean":
                m = m * inv_deg
            h = self._gru(m, h)
        return h

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "units": self.units, "steps": self.steps,
                "edge_hidden": list(self.edge_hidden), "aggregation": self.aggregation}


@register
class Set2Set(keras.layers.Layer):
    """Set2set readout (Vinyals et al. 2016): an LSTM attends over each molecule's atoms.

    Parameters
    ----------
    steps : int
        Number of processing steps M.

    Call arguments
    --------------
    inputs : list
        ``[h (N, d), graph (N,)]``.

    Returns
    -------
    (B, 2d) one vector per molecule, ``[q, r]`` of the last step.
    """

    def __init__(self, steps: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.steps = _pos_int("steps", steps)

    def build(self, input_shape):
        d = int(input_shape[0][-1])
        self.units = d
        self.kernel = self.add_weight(shape=(2 * d, 4 * d), initializer="glorot_uniform",
                                      name="kernel")
        self.recurrent = self.add_weight(shape=(d, 4 * d), initializer="orthogonal",
                                         name="recurrent")
        # Forget-gate bias of 1 (Jozefowicz et al. 2015).
        self.bias = self.add_weight(
            shape=(4 * d,), name="bias",
            initializer=keras.initializers.Constant([0.0] * d + [1.0] * d + [0.0] * 2 * d))
        self.built = True

    def call(self, inputs, training=None):
        h, graph = inputs
        graph = tf.cast(graph, tf.int32)
        b = _num_graphs(graph)
        d = self.units
        q_star = tf.zeros([b, 2 * d], h.dtype)
        hidden = tf.zeros([b, d], h.dtype)
        cell = tf.zeros([b, d], h.dtype)
        for _ in range(self.steps):
            g = tf.matmul(q_star, self.kernel) + tf.matmul(hidden, self.recurrent) + self.bias
            i, f, c, o = tf.split(g, 4, axis=1)
            cell = tf.sigmoid(f) * cell + tf.sigmoid(i) * tf.tanh(c)
            hidden = tf.sigmoid(o) * tf.tanh(cell)
            e = tf.reduce_sum(h * tf.gather(hidden, graph), axis=1)
            e = e - tf.gather(tf.math.unsorted_segment_max(e, graph, b), graph)
            a = tf.exp(e)
            a = a / tf.gather(tf.math.unsorted_segment_sum(a, graph, b), graph)
            r = tf.math.unsorted_segment_sum(a[:, None] * h, graph, b)
            q_star = tf.concat([hidden, r], axis=1)
        return q_star

    def compute_output_shape(self, input_shape):
        return (None, 2 * int(input_shape[0][-1]))

    def get_config(self):
        return {**super().get_config(), "steps": self.steps}


@register
class TargetScaler(keras.layers.Layer):
    """Standardised outputs → physical units: ``y = y_std·σ + μ + Σ_atoms atomref[element]``.

    Parameters
    ----------
    mean, std : sequence of float
        Per-target mean and standard deviation of the residual after atomref.
    atomref : sequence of sequence of float, optional
        ``(n_elements, T)`` per-element contribution; the first ``n_elements``
        atom feature columns must be the element one-hot. ``None``: zeros.

    Call arguments
    --------------
    inputs : list
        ``[y_std (B, T), atoms (N, F_a), graph (N,)]``.
    """

    def __init__(self, mean, std, atomref=None, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        if not self.mean or len(self.std) != len(self.mean) or min(self.std) <= 0:
            raise ValueError("Expected mean and std of equal non-zero length with std > 0. "
                             f"Received: mean={mean!r}, std={std!r}")
        if atomref is not None:
            atomref = [[float(v) for v in row] for row in atomref]
            if not atomref or any(len(row) != len(self.mean) for row in atomref):
                raise ValueError(f"Expected atomref of shape (n_elements, {len(self.mean)}). "
                                 f"Received: {atomref!r}")
        self.atomref = atomref

    def build(self, input_shape):
        self.built = True

    def call(self, inputs, training=None):
        y, atoms, graph = inputs
        out = y * tf.constant(self.std, y.dtype) + tf.constant(self.mean, y.dtype)
        if self.atomref is not None:
            ref = tf.constant(self.atomref, y.dtype)
            per_atom = tf.matmul(tf.cast(atoms[:, :len(self.atomref)], y.dtype), ref)
            out = out + tf.math.unsorted_segment_sum(per_atom, tf.cast(graph, tf.int32),
                                                     tf.shape(y)[0])
        return out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std,
                "atomref": self.atomref}


def mpnn(n_atom_features: int, n_edge_features: int, n_targets: int, *, units: int = 64,
         steps: int = 3, edge_hidden: Sequence[int] = (64,), set2set_steps: int = 3,
         head: Sequence[int] = (128,), aggregation: str = "sum", mean=None, std=None,
         atomref=None, name: str = "mpnn") -> keras.Model:
    """Build Gilmer's enn-s2s model on disjoint-union batches.

    Parameters
    ----------
    n_atom_features, n_edge_features : int
        F_a and F_e of the inputs.
    n_targets : int
        T, the number of predicted properties.
    units : int
        Hidden size d of atoms (Gilmer used up to 200; 64 is the CPU default).
    steps : int
        Message-passing steps (weights tied).
    edge_hidden : sequence of int
        Edge network hidden sizes.
    set2set_steps : int
        Readout processing steps M.
    head : sequence of int
        MLP hidden sizes after the readout.
    aggregation : {"sum", "mean"}
    mean, std, atomref : optional
        Target scaling (see :class:`TargetScaler`); default: identity.

    Returns
    -------
    keras.Model
        Inputs ``{"atoms", "edges", "pairs", "graph"}`` → ``(B, T)``.
    """
    for k, v in (("n_atom_features", n_atom_features), ("n_edge_features", n_edge_features),
                 ("n_targets", n_targets)):
        _pos_int(k, v)
    atoms = keras.Input(shape=(n_atom_features,), name="atoms")
    edges = keras.Input(shape=(n_edge_features,), name="edges")
    pairs = keras.Input(shape=(2,), dtype="int32", name="pairs")
    graph = keras.Input(shape=(), dtype="int32", name="graph")
    h = keras.layers.Dense(units, name="embed")(atoms)
    h = EdgeNetworkGRU(units, steps, edge_hidden, aggregation, name="message_passing")(
        [h, edges, pairs])
    x = Set2Set(set2set_steps, name="set2set")([h, graph])
    for i, k in enumerate(head):
        x = keras.layers.Dense(k, activation="relu", name=f"head_{i}")(x)
    y = keras.layers.Dense(n_targets, name="out")(x)
    mean = [0.0] * n_targets if mean is None else mean
    std = [1.0] * n_targets if std is None else std
    y = TargetScaler(mean, std, atomref, name="scale")([y, atoms, graph])
    return keras.Model({"atoms": atoms, "edges": edges, "pairs": pairs, "graph": graph}, y,
                       name=name)
