"""Issue #19: the connectomics readers of a user's text give a result or one InputError, nothing else.

Fuzzed (hypothesis, few examples each, no deadline): the volume spec ``PATH[:INNER]``, a zarr
store's ``zarr.json`` (its OME-Zarr ``multiscales`` metadata in particular), an N5 dataset's
``attributes.json``, the pair-classifier JSON of ``--agglo-classifier`` and a model's card.
A reader that returns must return something usable: a 3-D volume that reads, a classifier
whose probabilities are numbers in [0, 1].
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepsci.core.errors import InputError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: JSON values of any shape, small.
JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 40) | st.floats(allow_nan=True) | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import h5py

    from deepsci.apps.connectomics.io import write_n5, write_volume

    d = tmp_path_factory.mktemp("cx_fuzz")
    img = np.arange(6 * 8 * 8, dtype=np.uint8).reshape(6, 8, 8)
    write_volume(d / "vol.zarr", {"image": img, "labels": img.astype(np.uint32)})
    write_n5(d / "v.n5", "img", img, block=(4, 4, 4))
    with h5py.File(d / "v.h5", "w") as f:
        f["img"] = img
    return d


def _check_volume(spec, kind="image"):
    from deepsci.apps.connectomics.io import open_volume

    try:
        vol = open_volume(spec, kind=kind)
        block = vol[:1, :2, :2]
    except InputError:
        return
    assert len(vol.shape) == 3 and block.ndim == 3 and len(vol.voxel_size) == 3


@FUZZ
@given(prefix=st.sampled_from(["", "vol.zarr", "vol.zarr:", "v.h5:", "v.n5:", "vol.zarr:labels", "v.h5"]),
       tail=st.text(max_size=12))
def test_volume_spec(folder, monkeypatch, prefix, tail):
    monkeypatch.chdir(folder)  # relative specs name this folder's stores, never the repository
    _check_volume(prefix + tail)
    _check_volume(prefix + tail, kind="labels")


@FUZZ
@given(raw=st.binary(max_size=80) | st.text(max_size=80).map(str.encode))
def test_zarr_group_metadata_bytes(folder, tmp_path_factory, raw):
    store = tmp_path_factory.mktemp("z") / "s.zarr"
    shutil.copytree(folder / "vol.zarr", store)
    (store / "zarr.json").write_bytes(raw)
    _check_volume(store)
    _check_volume(f"{store}:image")


@FUZZ
@given(ome=JSON, level=st.sampled_from(["image", "0", "labels"]))
def test_ome_zarr_metadata(folder, tmp_path_factory, ome, level):
    store = tmp_path_factory.mktemp("o") / "s.zarr"
    shutil.copytree(folder / "vol.zarr", store)
    meta = json.loads((store / "zarr.json").read_text())
    # Plausible skeletons too, so the fuzz reaches the multiscales reader past its first lookups.
    meta["attributes"]["ome"] = (ome if not isinstance(ome, dict) else
                                 {"multiscales": [{"datasets": [{"path": level, **ome}], "axes": ome.get("a", [])}]})
    (store / "zarr.json").write_text(json.dumps(meta))
    _check_volume(store)
    _check_volume(store, kind="labels")


@FUZZ
@given(meta=JSON | st.text(max_size=40))
def test_n5_attributes(folder, tmp_path_factory, meta):
    root = tmp_path_factory.mktemp("n") / "v.n5"
    shutil.copytree(folder / "v.n5", root)
    good = json.loads((root / "img" / "attributes.json").read_text())
    text = meta if isinstance(meta, str) else json.dumps({**good, **meta} if isinstance(meta, dict) else meta)
    (root / "img" / "attributes.json").write_text(text)
    _check_volume(f"{root}:img")


_TREE = st.fixed_dictionaries({k: st.lists(st.integers(-2, 4) | st.floats(-1, 1), min_size=0, max_size=4)
                               for k in ("left", "right", "feature", "threshold", "p")})


@FUZZ
@given(doc=JSON | st.fixed_dictionaries({
    "features": st.lists(st.sampled_from(["bmap_mean", "log_contact", "ffn_min", "nope"]), max_size=3),
    "kind": st.sampled_from(["forest", "logistic", "svm"]),
    "params": st.fixed_dictionaries({"trees": st.lists(_TREE, max_size=2)}) | st.dictionaries(
        st.sampled_from(["mean", "scale", "weights", "bias"]), st.lists(st.floats(-2, 2), max_size=3)
        | st.floats(-2, 2), max_size=4)}), raw=st.booleans())
def test_pair_classifier_json(tmp_path_factory, doc, raw):
    from deepsci.apps.connectomics.rag import FEATURES, PairClassifier

    path = tmp_path_factory.mktemp("c") / "clf.json"
    path.write_text(json.dumps(doc)[:-1] if raw else json.dumps(doc))
    try:
        clf = PairClassifier.load(path)
    except InputError:
        return
    p = clf.proba(np.random.default_rng(0).random((5, len(FEATURES))))
    assert p.shape == (5,) and np.all((p >= 0) & (p <= 1))


@FUZZ
@given(extra=JSON, pre=JSON)
def test_model_card(folder, tmp_path_factory, extra, pre):
    from deepsci.apps.connectomics.predict import model_card
    from deepsci.core.models.registry import resolve_model

    d = tmp_path_factory.mktemp("m")
    src = resolve_model("connectomics-synthetic-ffn", app="connectomics", task="ffn", say=None)
    shutil.copy(src, d / "model.keras")
    card = json.loads(open(str(src).replace(".keras", ".card.json")).read())
    card["extra"] = {"ffn": extra} if not isinstance(extra, dict) or "x" in extra else extra
    card["preprocessing"] = pre
    (d / "model.card.json").write_text(json.dumps(card))
    try:
        got = model_card(d / "model.keras")
    except InputError:
        return
    assert len(got.extra["ffn"]["fov_size"]) == 3 and float(got.preprocessing["image_stddev"]) > 0
