"""Fuzzing the core's text readers (issue #19): a user's file is read or refused in one line.

Arbitrary bytes, arbitrary JSON, and JSON shaped like the real thing with arbitrary
values are written to a file and read by ``--config run.json`` (``config_from_run``),
a model card (``read_card``) and an ensemble folder (``ensemble.json``). Each read
returns a valid result or raises deepsci's InputError/ConfigError, whose text is one
line naming the file; nothing else may escape.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepsci.core.ensemble import model_paths
from deepsci.core.errors import DeepSciError
from deepsci.core.models.card import CARD_SCHEMA, ModelCard, read_card
from deepsci.core.runs import RUN_SCHEMA, config_from_run

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
_scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12)
_json = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=4)
                     | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
_keys = st.sampled_from(["inputs", "model", "out", "batch_size", "smiles_column", "skip_invalid",
                         "seed", "xla", "sdf", "other"])


def _raw(data: st.SearchStrategy) -> st.SearchStrategy:
    """Bytes: random ones, JSON text of ``data``, or that text cut short."""
    as_text = data.map(lambda v: json.dumps(v).encode())
    return st.one_of(st.binary(max_size=200), as_text,
                     st.tuples(as_text, st.integers(0, 60)).map(lambda t: t[0][:t[1]]))


_run_like = st.fixed_dictionaries(
    {"schema": st.sampled_from([RUN_SCHEMA, "other", 3]),
     "config_class": st.sampled_from(["deepsci.apps.molecules.predict:PredictConfig",
                                      "deepsci.apps.variants.train:TrainVariantsConfig", None, 5]),
     "config": st.dictionaries(_keys, _scalars | st.lists(_scalars, max_size=3), max_size=6) | _json})
_card_like = st.fixed_dictionaries(
    {"schema": st.sampled_from([CARD_SCHEMA, "x"]), "app": st.sampled_from(["molecules", "", 1]),
     "task": st.sampled_from(["qm9-properties", None])},
    optional={"outputs": _json, "extra": _json, "name": _json, "colour": _scalars})
_ens_like = st.fixed_dictionaries({"members": _json | st.lists(st.text(max_size=10), max_size=3)})


def _one_line(err: DeepSciError, path: Path) -> None:
    assert "\n" not in str(err) and str(path.parent) in str(err), str(err)


def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="deepsci-fuzz-"))


@SETTINGS
@given(_raw(_run_like) | _raw(_json))
def test_config_run_json(raw):
    from deepsci.apps.molecules.predict import PredictConfig

    path = _tmp() / "run.json"
    path.write_bytes(raw)
    try:
        cfg = config_from_run(path, PredictConfig)
    except DeepSciError as e:
        _one_line(e, path)
        return
    assert isinstance(cfg, PredictConfig)
    try:  # a config that builds must validate or refuse in one line, like one from options
        cfg.validate()
    except DeepSciError as e:
        assert "\n" not in str(e)


@SETTINGS
@given(_raw(_card_like) | _raw(_json))
def test_model_card(raw):
    folder = _tmp()
    (folder / "model.keras").write_bytes(b"weights")
    (folder / "model.card.json").write_bytes(raw)
    try:
        card = read_card(folder / "model.keras", expect="molecules")
    except DeepSciError as e:
        _one_line(e, folder / "model.card.json")
        return
    assert isinstance(card, ModelCard) and card.app == "molecules"


@SETTINGS
@given(_raw(_ens_like) | _raw(_json))
def test_ensemble_json(raw):
    folder = _tmp()
    (folder / "ensemble.json").write_bytes(raw)
    try:
        paths = model_paths(folder)
    except DeepSciError as e:
        _one_line(e, folder / "ensemble.json")
        return
    assert paths and all(isinstance(p, Path) for p in paths)
