"""The app's model: Gilmer et al.'s enn-s2s MPNN (:func:`deepsci.core.models.mpnn.mpnn`)
sized by a :class:`ModelConfig`, on the Gilmer features of :mod:`.featurize`.
"""
from __future__ import annotations

from dataclasses import dataclass

from deepsci.core.errors import ConfigError
from deepsci.core.models.card import ModelCard

from .featurize import ATOM_FEATURES, EDGE_FEATURES, GRAPH_KINDS
from .targets import TARGETS

__all__ = ["APP", "TASK", "ModelConfig", "build_model", "input_spec", "member_card"]

#: What every molecules model card says it is (its app and task).
APP, TASK = "molecules", "qm9-properties"


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
        """Raise :class:`ConfigError` for impossible sizes; return self unchanged."""
        if self.graph not in GRAPH_KINDS:
            raise ConfigError(f"expected --graph in {GRAPH_KINDS}, found {self.graph!r}")
        if self.aggregation not in ("sum", "mean"):
            raise ConfigError(f"expected --aggregation sum|mean, found {self.aggregation!r}")
        for k in ("units", "steps", "set2set_steps"):
            if int(getattr(self, k)) < 1:
                raise ConfigError(f"expected --{k.replace('_', '-')} >= 1, found {getattr(self, k)}")
        for k in ("edge_hidden", "head"):
            sizes = list(getattr(self, k))
            if not sizes or min(int(v) for v in sizes) < 1:
                raise ConfigError(f"expected --{k.replace('_', '-')} as sizes >= 1, found {sizes}")
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
                steps=config.steps, edge_hidden=tuple(int(v) for v in config.edge_hidden),
                set2set_steps=config.set2set_steps, head=tuple(int(v) for v in config.head),
                aggregation=config.aggregation, mean=scaling["mean"], std=scaling["std"],
                atomref=scaling["atomref"])


def member_card(*, units: dict[str, str], graph: str, scaling: dict, training: dict, data: dict,
                metrics: dict, extra: dict) -> ModelCard:
    """The card of one trained ensemble member.

    Parameters
    ----------
    units : dict
        Target name → unit, in the model's output order (T outputs).
    graph : str
        Graph kind of its input.
    scaling : dict
        The target scaling the model applies inside (``mean``, ``std``, ``atomref``).
    training, data, metrics, extra : dict
        Recipe, provenance, held-out validation scores and member details.
    """
    outputs = {n: {"unit": u, "chemical_accuracy": TARGETS[n].chemical_accuracy
                   if n in TARGETS else None} for n, u in units.items()}
    return ModelCard(
        app=APP, task=TASK, input_spec=input_spec(graph), outputs=outputs,
        preprocessing={"target_scaling": scaling, "applied": "inside the model (TargetScaler)",
                       "conformers": "given geometry, else RDKit ETKDGv3 + MMFF from SMILES"},
        training=training, data=data, metrics=metrics, extra=extra,
        name="enn-s2s MPNN", description="Gilmer et al. (2017) message-passing network "
        f"predicting {', '.join(units)} of a 3-D molecule ({graph} graph).",
        intended_use="Fast estimates of DFT (B3LYP/6-31G(2df,p)) properties of small organic "
                     "molecules like QM9's.",
        limitations="Elements H, C, N, O, F only; trained on molecules of up to ~9 heavy atoms; "
                    "accuracy outside the training distribution is unknown.")
