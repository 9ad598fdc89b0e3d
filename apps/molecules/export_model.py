"""The fixed-shape form of a trained MPNN that an exported (``.tflite``) file holds.

A LiteRT file runs one fixed shape, while the saved model takes ragged
disjoint-union batches with gather/scatter by atom index and a graph count
read from the data. The export form takes molecules padded to fixed atom and
edge slots (:func:`deepsci.apps.molecules.graphs.to_slots`), one molecule per
row, and computes the same function densely per molecule with the trained
layers' own weights: messages gathered within each molecule, summed to their
receivers by a segment sum (float in an int8 file), set2set attention a softmax over the
molecule's slots with padding slots pushed 16 below its lowest logit (their
weight < 1e-6 each), and padding atoms zeroed before the readout. Every shape
is static, so the converter quantizes and XNNPACK runs nearly every op.

It stops before the target scaling: the file outputs the standardised
targets (B, T) and inference adds ``mean``, ``std`` and the per-element
references in float64 (:func:`deepsci.apps.molecules.predict.unscale`),
because an int8 or float16 activation cannot hold U0's ~10^4 eV to the
0.01 eV that matters. Built for an export, sharing the trained weights.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from deepsci.core.models.serialization import register

__all__ = ["SlotMPNN", "export_form"]

#: How far below a molecule's lowest attention logit its padding slots are put.
PAD_LOGIT_GAP = 16.0


@register
class SlotMPNN(keras.layers.Layer):
    """A trained enn-s2s MPNN on molecules in fixed slots, outputs standardised.

    Parameters
    ----------
    embed, message_passing, set2set : keras.layers.Layer
        The trained model's ``embed`` (Dense), ``EdgeNetworkGRU`` and ``Set2Set``.
    head : list of keras.layers.Layer
        Its ``head_*`` Dense layers and its ``out`` layer, in order.
    n_elements : int
        Leading atom features that are the element one-hot (all 0: a padding slot).

    Call arguments
    --------------
    inputs : list
        ``[atoms (B, A, F_a), edges (B, E, F_e), pairs (B, E, 2) int32]``, pairs local.

    Returns
    -------
    (B, T) standardised targets.
    """

    def __init__(self, embed, message_passing, set2set, head, n_elements: int = 5, **kwargs):
        super().__init__(**kwargs)
        if isinstance(n_elements, bool) or not isinstance(n_elements, int) or n_elements < 1:
            raise ValueError(f"Expected n_elements to be an integer >= 1. Received: {n_elements!r}")
        self.embed, self.message_passing, self.set2set = embed, message_passing, set2set
        self.head = list(head)
        self.n_elements = n_elements

    def build(self, input_shape):
        self.built = True

    def _messages(self, h, z, send, recv):
        mp = self.message_passing
        b, a, d = tf.shape(h)[0], tf.shape(h)[1], mp.units
        e, k = tf.shape(z)[1], tf.shape(z)[2]
        p = tf.reshape(tf.matmul(tf.reshape(h, [-1, d]), mp.message_kernel), [b, a, k * d])
        p_send = tf.reshape(tf.gather(p, send, batch_dims=1), [b, e, k, d])
        per_edge = tf.reduce_sum(z[..., None] * p_send, axis=2)  # (B, E, d)
        # A segment sum over (molecule, slot) ids; it stays float in an int8 file
        # (a one-hot product would be fused into ONE_HOT, whose int8 kernel is wrong).
        m = tf.math.unsorted_segment_sum(tf.reshape(per_edge, [-1, d]), recv, b * a)
        return tf.reshape(m, [b, a, d])

    def _gru(self, m, h):
        mp, d = self.message_passing, self.message_passing.units
        x = tf.matmul(m, mp.gru_kernel) + mp.gru_bias[0]
        r = tf.matmul(h, mp.gru_recurrent) + mp.gru_bias[1]
        zg = tf.sigmoid(x[..., :d] + r[..., :d])
        reset = tf.sigmoid(x[..., d:2 * d] + r[..., d:2 * d])
        cand = tf.tanh(x[..., 2 * d:] + reset * r[..., 2 * d:])
        return zg * h + (1.0 - zg) * cand

    def _readout(self, h, mask):
        s2s, d = self.set2set, self.set2set.units
        b = tf.shape(h)[0]
        h = h * mask[..., None]
        q_star = tf.zeros([b, 2 * d], h.dtype)
        hidden = cell = tf.zeros([b, d], h.dtype)
        for _ in range(s2s.steps):
            g = tf.matmul(q_star, s2s.kernel) + tf.matmul(hidden, s2s.recurrent) + s2s.bias
            i, f, c, o = tf.split(g, 4, axis=1)
            cell = tf.sigmoid(f) * cell + tf.sigmoid(i) * tf.tanh(c)
            hidden = tf.sigmoid(o) * tf.tanh(cell)
            e = tf.reduce_sum(h * hidden[:, None, :], axis=-1)  # (B, A)
            floor = tf.reduce_min(e, axis=1, keepdims=True) - PAD_LOGIT_GAP
            att = tf.nn.softmax(mask * e + (1.0 - mask) * floor, axis=1)
            r = tf.reduce_sum(att[..., None] * h, axis=1)
            q_star = tf.concat([hidden, r], axis=1)
        return q_star

    def call(self, inputs, training=None):
        atoms, edges, pairs = inputs
        mp = self.message_passing
        pairs = tf.cast(pairs, tf.int32)
        a = atoms.shape[1]
        mask = tf.cast(tf.reduce_sum(atoms[..., :self.n_elements], axis=-1) > 0, atoms.dtype)
        z = edges
        for w, bias in zip(mp.edge_kernels, mp.edge_biases, strict=True):
            z = tf.nn.relu(tf.matmul(z, w) + bias)
        z = tf.concat([z, tf.ones_like(z[..., :1])], axis=-1)  # (B, E, K+1)
        b = tf.shape(atoms)[0]
        recv = tf.reshape(pairs[..., 0] + tf.range(b, dtype=tf.int32)[:, None] * a, [-1])
        if mp.aggregation == "mean":
            deg = tf.math.unsorted_segment_sum(tf.ones_like(recv, atoms.dtype), recv, b * a)
            inv_deg = tf.reshape(1.0 / tf.maximum(deg, 1.0), [b, a, 1])
        h = self.embed(atoms)
        for _ in range(mp.steps):
            m = self._messages(h, z, pairs[..., 1], recv)
            if mp.aggregation == "mean":
                m = m * inv_deg
            h = self._gru(m, h)
        x = self._readout(h, mask)
        for layer in self.head:
            x = layer(x)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], int(self.head[-1].units))

    def get_config(self):
        ser = keras.saving.serialize_keras_object
        return {**super().get_config(), "embed": ser(self.embed),
                "message_passing": ser(self.message_passing), "set2set": ser(self.set2set),
                "head": [ser(layer) for layer in self.head], "n_elements": self.n_elements}

    @classmethod
    def from_config(cls, config):
        de = keras.saving.deserialize_keras_object
        config = dict(config)
        for k in ("embed", "message_passing", "set2set"):
            config[k] = de(config[k])
        config["head"] = [de(c) for c in config["head"]]
        return cls(**config)


def export_form(model, card=None):
    """The fixed-slot, standardised-output form of a trained molecules ``model``.

    Parameters
    ----------
    model : keras.Model
        A model of :func:`deepsci.core.models.mpnn.mpnn` (layers ``embed``,
        ``message_passing``, ``set2set``, ``head_*``, ``out``).
    card : ModelCard, optional
        Its card: the graph kind sets the edge slots (default ``bond``).

    Returns
    -------
    keras.Model
        ``{"atoms": (B, A, F_a), "edges": (B, E, F_e), "pairs": (B, E, 2)}`` ->
        standardised targets (B, T), sharing ``model``'s weights.
    """
    from .graphs import SLOT_ATOMS, slot_edges

    graph = (card.input_spec.get("graph") if card is not None else None) or "bond"
    fa, fe = int(model.input["atoms"].shape[-1]), int(model.input["edges"].shape[-1])
    e = slot_edges(graph)
    atoms = keras.Input((SLOT_ATOMS, fa), name="atoms")
    edges = keras.Input((e, fe), name="edges")
    pairs = keras.Input((e, 2), dtype="int32", name="pairs")
    heads = sorted((layer for layer in model.layers if layer.name.startswith("head_")),
                   key=lambda layer: int(layer.name.split("_")[1]))
    y = SlotMPNN(model.get_layer("embed"), model.get_layer("message_passing"),
                 model.get_layer("set2set"), [*heads, model.get_layer("out")],
                 name="slot_mpnn")([atoms, edges, pairs])
    return keras.Model({"atoms": atoms, "edges": edges, "pairs": pairs}, y,
                       name=f"{model.name}_slots")
