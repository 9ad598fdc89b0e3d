"""Issue #19: the pathology text readers take arbitrary bytes and raise nothing but InputError.

Fuzzed: detection CSVs (Camelyon16 ``prob,X,Y``), QuPath GeoJSON (polygons and points), ASAP
XML, and the reference / labels CSV of ``evaluate``. Each example is either read into a valid
result (checked: probabilities in [0, 1], coordinates >= 0, polygons of >= 3 finite vertices)
or refused with :class:`~deepsci.core.errors.InputError` naming the file.
"""
import json
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepsci.apps.pathology.evaluate import read_reference
from deepsci.apps.pathology.io import (
    read_annotations,
    read_detections_csv,
    read_detections_geojson,
    read_geojson_points,
)
from deepsci.core.errors import InputError

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# text that looks like the real formats often enough to get past the first check
_csv_text = st.lists(st.one_of(
    st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**6), st.integers(-5, 10**6))
    .map(lambda t: f"{t[0]},{t[1]},{t[2]}"),
    st.text(alphabet=st.sampled_from("0123456789.,-e nanNaNinf\t\"x"), max_size=20),
), max_size=8).map("\n".join)
_any_bytes = st.binary(max_size=200)

_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**5), st.floats(allow_nan=False),
                       st.text(max_size=6))
_json = st.recursive(_json_leaf, lambda c: st.one_of(st.lists(c, max_size=4),
                                                      st.dictionaries(st.text(max_size=6), c, max_size=4)),
                     max_leaves=20)
_coords = st.lists(st.lists(st.one_of(st.floats(-10, 1e4), st.integers(-10, 10**4), st.text(max_size=2)),
                            min_size=0, max_size=3), max_size=6)
_geometry = st.fixed_dictionaries({
    "type": st.sampled_from(["Polygon", "MultiPolygon", "Point", "MultiPoint", "LineString", 7]),
    "coordinates": st.one_of(_json, _coords, st.lists(_coords, max_size=3),
                             st.lists(st.lists(_coords, max_size=2), max_size=2)),
})
_properties = st.one_of(_json, st.fixed_dictionaries({
    "objectType": st.one_of(st.sampled_from(["detection", "annotation"]), _json_leaf),
    "classification": st.one_of(st.fixed_dictionaries({"name": st.sampled_from(["Tumor", "Other", "Exclusion"])}),
                                _json),
    "measurements": st.one_of(st.dictionaries(st.sampled_from(["tumour probability", "x"]), _json_leaf),
                              _json),
}))
_feature = st.one_of(_json, st.fixed_dictionaries({"type": st.just("Feature"), "geometry": st.one_of(_geometry, _json),
                                                   "properties": _properties}))
_geojson = st.one_of(st.fixed_dictionaries({"type": st.just("FeatureCollection"),
                                            "features": st.one_of(st.lists(_feature, max_size=4), _json)}),
                     st.lists(_feature, max_size=3), _feature).map(json.dumps)

_xml_attr = st.one_of(st.floats(-10, 1e4).map(str), st.text(alphabet="0123456789.,-abc", max_size=5))
_xml = st.lists(st.tuples(st.sampled_from(["_0", "_2", "Tumor", "weird", ""]),
                          st.lists(st.tuples(_xml_attr, _xml_attr, _xml_attr), max_size=5)), max_size=3).map(
    lambda anns: "<ASAP_Annotations><Annotations>" + "".join(
        f'<Annotation Name="a{i}" PartOfGroup="{g}"><Coordinates>' + "".join(
            f'<Coordinate Order="{o}" X="{x}" Y="{y}"/>' for o, x, y in pts) + "</Coordinates></Annotation>"
        for i, (g, pts) in enumerate(anns)) + "</Annotations></ASAP_Annotations>")


def _write(path, data) -> None:
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_bytes(data.encode("utf-8", "surrogatepass"))


def _read_or_refuse(func, path):
    """``func(path)``, or None when it raised InputError naming ``path``; anything else fails the test."""
    try:
        return func(path)
    except InputError as e:
        assert e.path is None or str(path) in str(e), (e, path)
        assert "\n" not in str(e)
        return None


@FUZZ
@given(data=st.one_of(_csv_text, _any_bytes))
def test_detection_csv(tmp_path, data):
    path = tmp_path / "slide.csv"
    _write(path, data)
    got = _read_or_refuse(read_detections_csv, path)
    if got is not None:
        probs, xs, ys = got
        assert len(probs) == len(xs) == len(ys)
        assert np.all((probs >= 0) & (probs <= 1)) and np.all(xs >= 0) and np.all(ys >= 0)


@FUZZ
@given(data=st.one_of(_geojson, _any_bytes, st.text(max_size=40)))
def test_geojson_annotations_and_points(tmp_path, data):
    path = tmp_path / "slide.geojson"
    _write(path, data)
    polys = _read_or_refuse(lambda p: read_annotations(p, dimensions=(10**4, 10**4)), path)
    for poly in polys or []:
        assert poly.coords.ndim == 2 and poly.coords.shape[1] == 2 and len(poly.coords) >= 3
        assert np.isfinite(poly.coords).all()
    points = _read_or_refuse(read_geojson_points, path)
    for p in points or []:
        assert math.isfinite(p.x) and math.isfinite(p.y)
        assert all(isinstance(v, float) for v in p.measurements.values())
    dets = _read_or_refuse(read_detections_geojson, path)
    if dets is not None:
        assert len(dets[0]) == len(dets[1]) == len(dets[2])


@FUZZ
@given(data=st.one_of(_xml, _any_bytes, st.text(max_size=60)))
def test_asap_xml(tmp_path, data):
    path = tmp_path / "slide.xml"
    _write(path, data)
    polys = _read_or_refuse(lambda p: read_annotations(p, dimensions=(10**4, 10**4)), path)
    for poly in polys or []:
        assert len(poly.coords) >= 3 and np.isfinite(poly.coords).all()


_reference = st.lists(st.tuples(st.text(alphabet="abc_01.", max_size=8),
                                st.sampled_from(["Tumor", "Normal", "normal", "Maybe", ""]),
                                st.text(alphabet="abc,\"", max_size=4)), max_size=6).map(
    lambda rows: "image,class\n" + "\n".join(",".join(r) for r in rows))


@FUZZ
@given(data=st.one_of(_reference, _any_bytes, st.text(max_size=40)))
def test_reference_csv(tmp_path, data):
    path = tmp_path / "reference.csv"
    _write(path, data)
    labels = _read_or_refuse(read_reference, path)
    if labels is not None:
        assert labels and all(isinstance(k, str) and isinstance(v, bool) for k, v in labels.items())
