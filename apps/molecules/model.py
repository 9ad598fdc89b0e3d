"""The app's model: Gilmer et al.'s enn-s2s MPNN (:func:`deepsci.core.models.mpnn.mpnn`)
sized by a :class:`ModelConfig`, on the Gilmer features of :mod:`.featurize`.
"""
from __future__ import annotations

from dataclasses import dataclass

from deepsci.core.errors import ConfigError

from .featurize import ATOM_FEATURES, EDGE_FEATURES, GRAPH_KINDS

__all__ = ["ModelConfig", "build_model", "input_spec"]


@dataclass
class ModelConfig:
    """Size of the enn-s2s network (see :func:`deepsci.core.models.mpnn.mpnn`).

    Attributes
    ----------
    graph : {"bond", "complete"}
        Chemical bonds + distances, or all atom pairs + distances.
    units : int
        Hidden size of atom states.
    steps : int
        Message-passing steps (tied weights).
    edge_hidden : tuple of int
        Hidden sizes of the edge network.
    set2set_steps : int
        Processing steps of the set2set readout.
    head : tuple of int
        Hidden sizes of the output MLP.
    aggregation : {"sum", "mean"}
        How messages to an atom are combined.
    """

    graph: str = "bond"
    units: int = 64
    steps: int = 3
    edge_hidden: tuple[int, ...] = (64, 16)
    set2set_steps: int = 3
    head: tuple[int, ...] = (128,)
    aggregation: str = "sum"

    def validate(self) -> ModelConfig:
        if self.graph not in GRAPH_KINDS:
            raise ConfigError(f"expected --graph in {GRAPH_KINDS}, found {self.graph!r}")
        for k in ("units", "steps", "set2set_steps"):
            if int(getattr(self, k)) < 1:
                raise ConfigError(f"expected {k} >= 1, found {getattr(self, k)}")
        self.edge_hidden = tuple(int(v) for v in self.edge_hidden)
        self.head = tuple(int(v) for v in self.head)
        return self


def input_spec(graph: str) -> dict:
    """What a model of graph kind ``graph`` takes: the graph kind and its feature names."""
    return {"graph": graph, "atom_features": list(ATOM_FEATURES),
            "edge_features": list(EDGE_FEATURES)}


def build_model(n_targets: int, config: ModelConfig, scaling: dict):
    """An enn-s2s MPNN predicting ``n_targets`` values in physical units.

    Parameters
    ----------
    n_targets : int
        Outputs per molecule, (B, n_targets).
    config : ModelConfig
    scaling : dict
        ``{"mean": (T,), "std": (T,), "atomref": (5, T) or None}`` from
        :func:`deepsci.apps.molecules.train.fit_scaling`; the model un-standardises
        its outputs with them.

    Returns
    -------
    keras.Model
    """
    from deepsci.core.models.mpnn import mpnn

    return mpnn(len(ATOM_FEATURES), len(EDGE_FEATURES), n_targets, units=config.units,
                steps=config.steps, edge_hidden=config.edge_hidden,
                set2set_steps=config.set2set_steps, head=config.head,
                aggregation=config.aggregation, mean=scaling["mean"], std=scaling["std"],
                atomref=scaling["atomref"])
