"""QuPath GeoJSON: ``detect``'s point detections and ``heatmap --contours`` polygons.

Round trips through deepsci's own readers and plain ``json``; geometry validity (closed simple
rings, counter-clockwise exteriors and clockwise holes per RFC 7946, holes inside their exterior
and apart from it and each other) is checked by hand here and again by shapely.
"""
import json

import numpy as np
import pytest

from deepsci.apps.cli import main
from deepsci.apps.pathology import contours, heatmap, io
from deepsci.apps.pathology.io import qupath

S = 16.0  # level-0 pixels per heatmap cell
W = 40.0  # the probability ramps' half-width (level-0 px): p = 0.5 +- (distance to the edge) / 2W
DISC = (300.0, 400.0, 150.0)  # centre x, y and radius of a disc
RING = (1000.0, 500.0, 140.0, 260.0)  # centre x, y, inner and outer radius of a ring
ISLAND = 50.0  # radius of a disc in the ring's hole


def _cells(shape=(64, 96)):
    """Level-0 centres ``(x, y)`` of every heatmap cell (``(c + 0.5) S``, ``(r + 0.5) S``)."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return (cols + 0.5) * S, (rows + 0.5) * S


def _hand_heatmap():
    """A disc, and a ring with an island in its hole: ``p >= L`` where the distance inside the
    edge is at least ``(L - 0.5) 2W``."""
    x, y = _cells()
    d1 = np.hypot(x - DISC[0], y - DISC[1])
    d2 = np.hypot(x - RING[0], y - RING[1])
    inside = np.maximum.reduce([DISC[2] - d1, np.minimum(d2 - RING[2], RING[3] - d2), ISLAND - d2])
    return np.clip(0.5 + inside / (2 * W), 0, 1).astype(np.float32)


def _area(ring):
    return contours.signed_area(np.asarray(ring, float))


def _centroid(ring):
    r = np.asarray(ring, float)
    x, y = r[:, 0], r[:, 1]
    cross = x[:-1] * y[1:] - x[1:] * y[:-1]
    return np.array([np.sum((x[:-1] + x[1:]) * cross), np.sum((y[:-1] + y[1:]) * cross)]) / (6 * _area(r))


# -- validity by hand ------------------------------------------------------------------
def _cross(o, a, b):
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (b[..., 0] - o[..., 0])


def _touching(a, b, same_ring: bool) -> bool:
    """Whether any segment of closed ring ``a`` meets one of ring ``b`` (neighbours in one ring excepted)."""
    p1, p2 = a[:-1, None], a[1:, None]
    q1, q2 = b[None, :-1], b[None, 1:]
    d1, d2, d3, d4 = _cross(q1, q2, p1), _cross(q1, q2, p2), _cross(p1, p2, q1), _cross(p1, p2, q2)
    boxes = ((np.minimum(p1[..., 0], p2[..., 0]) <= np.maximum(q1[..., 0], q2[..., 0]))
             & (np.minimum(q1[..., 0], q2[..., 0]) <= np.maximum(p1[..., 0], p2[..., 0]))
             & (np.minimum(p1[..., 1], p2[..., 1]) <= np.maximum(q1[..., 1], q2[..., 1]))
             & (np.minimum(q1[..., 1], q2[..., 1]) <= np.maximum(p1[..., 1], p2[..., 1])))
    meet = (d1 * d2 <= 0) & (d3 * d4 <= 0) & boxes
    if same_ring:
        n = len(a) - 1
        i, j = np.indices((n, n))
        meet &= (i != j) & ((i - j) % n != 1) & ((j - i) % n != 1)
    return bool(meet.any())


def _inside(points, ring) -> np.ndarray:
    from matplotlib.path import Path

    return Path(np.asarray(ring)[:-1]).contains_points(np.asarray(points))


def _check_polygon(coords):
    """RFC 7946 / OGC validity of one GeoJSON Polygon's coordinates, by hand."""
    rings = [np.asarray(r, float) for r in coords]
    for r in rings:
        assert r.ndim == 2 and r.shape[1] == 2 and len(r) >= 4 and (r[0] == r[-1]).all()
        assert not _touching(r, r, same_ring=True)  # simple
    ext, holes = rings[0], rings[1:]
    assert _area(ext) > 0  # counter-clockwise exterior
    for k, h in enumerate(holes):
        assert _area(h) < 0  # clockwise holes
        assert _inside(h[:-1], ext).all() and not _touching(h, ext, same_ring=False)
        for other in holes[k + 1:]:
            assert not _touching(h, other, same_ring=False)
            assert not _inside(h[:1], other).any() and not _inside(other[:1], h).any()


def _collection(path):
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and isinstance(data["features"], list)
    for f in data["features"]:
        assert f["type"] == "Feature" and set(f) == {"type", "geometry", "properties"}
        assert f["properties"]["classification"] == {"name": "Tumor", "color": [200, 0, 0]}
    return data["features"]


# -- detections -------------------------------------------------------------------------
def _write_heatmap(path, heat, stride, name):
    io.write_pyramid_tiff(path, heat, mpp=0.5 * stride, tile=64, compression="zlib", min_size=32, mode="max",
                          description={"stride": stride, "mpp": 0.5, "slide_name": name})


def test_detections_geojson_holds_the_csvs_points_and_probabilities(tmp_path):
    rng = np.random.default_rng(0)
    heat = np.zeros((80, 90), np.float32)
    for r, c in rng.integers(5, 75, (12, 2)):
        heat[r, c] = rng.uniform(0.55, 0.99)  # lesions at half-cell level-0 centres ((c + 0.5) * 7)
    (tmp_path / "h").mkdir()
    _write_heatmap(tmp_path / "h" / "tumor_009.heatmap.tif", heat, 7.0, "tumor_009")
    _write_heatmap(tmp_path / "h" / "normal_009.heatmap.tif", np.zeros((20, 20), np.float32), 7.0, "normal_009")
    assert main(["pathology", "detect", "--heatmaps", str(tmp_path / "h"), "--out", str(tmp_path / "d"),
                 "--radius", "20"]) == 0
    probs, xs, ys = io.read_detections_csv(tmp_path / "d" / "tumor_009.csv")
    assert len(probs) >= 5
    path = tmp_path / "d" / "tumor_009.detections.geojson"
    got = qupath.read_detections_geojson(path)  # through io.read_geojson_points
    for a, b in zip(got, (probs, xs, ys), strict=True):
        np.testing.assert_array_equal(a, b)
    points = io.read_geojson_points(path)
    assert {(p.object_type, p.group) for p in points} == {("detection", "Tumor")}
    features = _collection(path)
    assert [f["geometry"] for f in features] == [{"type": "Point", "coordinates": [int(x), int(y)]}
                                                 for x, y in zip(xs, ys, strict=True)]
    assert [f["properties"]["objectType"] for f in features] == ["detection"] * len(probs)
    assert [f["properties"]["measurements"] for f in features] == [{"tumour probability": float(p)} for p in probs]
    # a slide without lesions: an empty collection, as its CSV is empty
    assert _collection(tmp_path / "d" / "normal_009.detections.geojson") == []
    assert all(len(a) == 0 for a in qupath.read_detections_geojson(tmp_path / "d" / "normal_009.detections.geojson"))
    assert not list((tmp_path / "d").glob("*.tmp*"))


# -- contours ---------------------------------------------------------------------------
def _expected(level):
    """Analytic ``{name: (area, centre)}`` of the exteriors and holes of ``p >= level``."""
    t = (level - 0.5) * 2 * W  # how far inside an edge the level runs
    disc = (np.pi * (DISC[2] - t) ** 2, DISC[:2])
    ring_out = (np.pi * (RING[3] - t) ** 2, RING[:2])
    ring_hole = (np.pi * (RING[2] + t) ** 2, RING[:2])
    island = (np.pi * (ISLAND - t) ** 2, RING[:2])
    return disc, ring_out, ring_hole, island


@pytest.mark.parametrize("level", [0.5, 0.8])
def test_contours_of_a_disc_and_a_ring_are_the_analytic_polygons(level):
    polygons = contours.contour_polygons(_hand_heatmap(), level, S)
    assert len(polygons) == 3  # the disc, the ring (one hole) and the island in its hole
    disc, ring_out, ring_hole, island = _expected(level)
    by_x = sorted(polygons, key=lambda p: (_centroid(p[0])[0], -_area(p[0])))
    got = {"disc": by_x[0], "ring": max(by_x[1:], key=lambda p: _area(p[0])),
           "island": min(by_x[1:], key=lambda p: _area(p[0]))}
    assert [len(got[k][1]) for k in ("disc", "ring", "island")] == [0, 1, 0]
    rings = {"disc": (got["disc"][0], disc), "ring": (got["ring"][0], ring_out),
             "hole": (got["ring"][1][0], ring_hole), "island": (got["island"][0], island)}
    for name, (ring, (area, centre)) in rings.items():
        radius = np.sqrt(area / np.pi)
        # At level-0 scale (a grid-scale ring would be 256x smaller; a half-cell shift moves the
        # centre by 8 px): vertices within S/16 of the circle, the area within the band that chords
        # of ~S cut off a circle, S^2 / 6R wide (measured 27/R px: 0.1 px at R 260, 1.0 at R 26).
        band = S ** 2 / (6 * radius)
        assert abs(abs(_area(ring)) - area) <= 2 * np.pi * radius * band, (name, _area(ring), area)
        np.testing.assert_allclose(_centroid(ring), centre, atol=0.2, err_msg=name)
        np.testing.assert_allclose(np.hypot(*(ring - centre).T), radius, atol=S / 16, err_msg=name)
    for ext, holes in polygons:
        _check_polygon([ext, *holes])


def test_contours_file_reads_back_with_the_annotation_reader_and_is_valid(tmp_path):
    heat = _hand_heatmap()
    heat[40, 3] = 0.5  # one cell exactly on the level: a tie counts as inside, no degenerate ring
    heat[10, 90], heat[11, 91] = 0.95, 0.95  # two cells touching at a corner (the saddle case)
    path = contours.write_contours(tmp_path / "x.contours.geojson", heat, (0.5, 0.9), S)
    features = _collection(path)
    levels = [f["properties"]["measurements"]["tumour probability level"] for f in features]
    assert sorted(set(levels)) == [0.5, 0.9] and levels == sorted(levels)
    assert {f["properties"]["objectType"] for f in features} == {"annotation"}
    assert {f["geometry"]["type"] for f in features} == {"Polygon"}
    for f in features:
        _check_polygon(f["geometry"]["coordinates"])
    # deepsci's annotation reader: every exterior a tumour polygon, every hole an exclusion, same vertices
    polys = io.read_geojson(path)
    rings = [r for f in features for r in f["geometry"]["coordinates"]]
    holes = [r for f in features for r in f["geometry"]["coordinates"][1:]]
    assert len(polys) == len(rings) and sum(p.exclude for p in polys) == len(holes) >= 2
    for p, r in zip(polys, rings, strict=True):
        np.testing.assert_array_equal(p.coords, np.asarray(r))
    # the tie and the saddle: a tiny diamond around the tied cell, two separate diamonds at the corner
    tie = [f for f in features if _inside([[3.5 * S, 40.5 * S]], f["geometry"]["coordinates"][0]).any()]
    assert len(tie) == 1 and tie[0]["properties"]["measurements"]["tumour probability level"] == 0.5
    corner = [f for f in features if levels[features.index(f)] == 0.9
              and _inside([[90.5 * S, 10.5 * S], [91.5 * S, 11.5 * S]], f["geometry"]["coordinates"][0]).any()]
    assert len(corner) == 2
    # nothing above the level: an empty collection
    assert _collection(contours.write_contours(tmp_path / "e.geojson", heat * 0, (0.5,), S)) == []


def test_contours_are_valid_for_shapely(tmp_path):
    import shapely
    from shapely.geometry import shape

    heat = _hand_heatmap()
    heat[40, 3] = 0.5
    heat[10, 90], heat[11, 91] = 0.95, 0.95
    for level in (0.5, 0.8, 0.9):
        path = contours.write_contours(tmp_path / f"{level}.geojson", heat, (level,), S)
        polys = [shape(f["geometry"]) for f in _collection(path)]
        # disc, ring, island, two saddle diamonds, and the tied cell's speck at its level
        assert len(polys) == (6 if level == 0.5 else 5)
        for poly in polys:
            assert poly.is_valid, shapely.is_valid_reason(poly)
            assert poly.exterior.is_ccw and not any(h.is_ccw for h in poly.interiors)
        # one level's polygons never overlap (QuPath would count their area twice)
        assert shapely.union_all(polys).area == pytest.approx(sum(p.area for p in polys), rel=1e-12)
        for ext, holes in contours.contour_polygons(heat, level, S):
            poly = shapely.Polygon(ext, holes)
            assert poly.area == pytest.approx(_area(ext) + sum(_area(h) for h in holes), rel=1e-9, abs=1e-6)


def _fake_model(folder):
    """A model file with a real pathology card (the heatmap below is made by hand, not by it)."""
    from deepsci.apps.pathology.model import model_card
    from deepsci.apps.pathology.patches import PatchConfig
    from deepsci.apps.pathology.train import PathologyTrainConfig
    from deepsci.core.io import write_json
    from deepsci.core.models.card import card_path

    folder.mkdir()
    model = folder / "model.keras"
    model.write_bytes(b"")
    cfg = PathologyTrainConfig(slides=".", out=".", patch=PatchConfig(magnifications=(20.0,)))
    write_json(card_path(model), model_card(cfg).stamped().to_dict())
    return model


def test_heatmap_writes_contours_at_the_levels_asked_and_again_on_a_rerun(tmp_path, monkeypatch,
                                                                           one_line_error):
    from deepsci.apps.pathology.synth import SynthConfig, make_slides

    make_slides(tmp_path / "slides", n_tumour=1, n_normal=0, seed=1, config=SynthConfig(width=256, height=256))
    hand = _hand_heatmap()

    def fake(slide_path, model_path, cfg):  # the model's part; what heatmap does with it is real
        return hand, {"slide_name": "tumor_001", "stride": S, "mpp": 0.5, "tiles": int((hand > 0).sum()),
                      "seconds": 0.0}

    monkeypatch.setattr(heatmap, "heatmap_slide", fake)
    model = _fake_model(tmp_path / "m")
    args = ["pathology", "heatmap", "--model", str(model), "--slides", str(tmp_path / "slides"), "--out",
            str(tmp_path / "h"), "--scheduler", "inline"]
    assert main([*args, "--contours", "0.5,0.9"]) == 0
    path = tmp_path / "h" / "tumor_001.contours.geojson"
    want = qupath.contour_features(contours.contour_polygons(hand, 0.5, S), 0.5)
    want += qupath.contour_features(contours.contour_polygons(hand, 0.9, S), 0.9)
    assert _collection(path) == json.loads(json.dumps(want))
    # a rerun skips the finished slide but writes the contours it now asks for
    assert main([*args, "--contours", "0.8"]) == 0
    want = qupath.contour_features(contours.contour_polygons(hand, 0.8, S), 0.8)
    assert _collection(path) == json.loads(json.dumps(want))
    assert "--contours" in one_line_error([*args, "--contours", "0.5,1.5"])
