"""Slides, levels by magnification, annotations <-> masks, result files, bad inputs."""
import json

import numpy as np
import pytest
import tifffile

from deepsci.apps.pathology import io
from deepsci.core.errors import InputError


def _pyramid(path, size=512, mpp=0.25, levels_min=32):
    img = np.full((size, size, 3), 240, np.uint8)
    img[size // 4: size // 2, size // 4: size // 2] = (120, 40, 140)
    io.write_pyramid_tiff(path, img, mpp=mpp, tile=64, min_size=levels_min)
    return img


@pytest.mark.parametrize("mag, level, scale", [(40, 0, 1.0), (20, 1, 1.0), (10, 2, 1.0), (5, 3, 1.0)])
def test_level_selection_by_magnification(tmp_path, mag, level, scale):
    _pyramid(tmp_path / "s.tif")
    with io.Slide(tmp_path / "s.tif") as s:
        assert s.level_count == 5 and s.mpp == pytest.approx(0.25)
        choice = s.select_level(mag)
        assert (choice.level, choice.scale) == (level, scale)
        assert s.read_patch((256, 256), 32, mag).shape == (32, 32, 3)


def test_level_selection_resamples_missing_level_and_rejects_finer(tmp_path):
    # A 20x slide with a single level: 10x is read from level 0 and resized,
    # 40x does not exist (Camelyon-like 0.243 counts as 40x).
    _pyramid(tmp_path / "s20.tif", mpp=0.5, levels_min=1024)
    with io.Slide(tmp_path / "s20.tif") as s:
        assert s.level_count == 1
        c = s.select_level(10)
        assert c.level == 0 and c.scale == pytest.approx(2.0)
        assert s.read_patch((256, 256), 40, 10).shape == (40, 40, 3)
        with pytest.raises(InputError, match="40x level"):
            s.select_level(40)
    _pyramid(tmp_path / "cam.tif", mpp=0.243)
    with io.Slide(tmp_path / "cam.tif") as s:
        assert s.select_level(40).level == 0 and s.select_level(40).scale == 1.0


def test_patch_reads_right_place_and_glass_outside(tmp_path):
    img = _pyramid(tmp_path / "s.tif")
    with io.Slide(tmp_path / "s.tif") as s:
        p = s.read_patch((192, 192), 16, 40)
        np.testing.assert_array_equal(p, img[184:200, 184:200])
        outside = s.read_patch((0, 0), 16, 40)
        assert (outside[:8, :8] == 255).all()  # beyond the slide: white glass


def _square(x0, y0, x1, y1):
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], float)


def test_xml_mask_round_trip_with_holes(tmp_path):
    mask = np.zeros((200, 300), bool)
    mask[20:120, 30:180] = True
    mask[50:80, 60:100] = False          # a hole (an _2 region)
    mask[150:190, 200:280] = True         # a second lesion
    polys = io.mask_to_polygons(mask, 4.0)
    assert sum(p.exclude for p in polys) == 1 and sum(not p.exclude for p in polys) == 2
    xml = io.write_asap_xml(tmp_path / "a.xml", polys)
    back = io.read_annotations(xml, dimensions=(1200, 800))
    assert {p.group for p in back} == {"_0", "_2"}
    again = io.rasterize(back, mask.shape, 4.0)
    iou = (again & mask).sum() / (again | mask).sum()
    assert iou > 0.97
    assert not again[65, 80]  # the hole stays a hole


def test_camelyon_groups_and_rasterise_any_level(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text(
        '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
        '<Annotation Name="A" Type="Polygon" PartOfGroup="metastases"><Coordinates>'
        '<Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="640" Y="0"/>'
        '<Coordinate Order="2" X="640" Y="640"/><Coordinate Order="3" X="0" Y="640"/>'
        '</Coordinates></Annotation>'
        '<Annotation Name="B" Type="Polygon" PartOfGroup="_2"><Coordinates>'
        '<Coordinate Order="0" X="320" Y="320"/><Coordinate Order="1" X="640" Y="320"/>'
        '<Coordinate Order="2" X="640" Y="640"/><Coordinate Order="3" X="320" Y="640"/>'
        '</Coordinates></Annotation></Annotations></ASAP_Annotations>')
    polys = io.read_asap_xml(xml)
    for down in (1, 8, 32):
        m = io.rasterize(polys, (1280 // down, 1280 // down), down)
        # three quarters of a 640x640 square remain after the excluded quarter
        assert m.sum() * down * down == pytest.approx(640 * 640 * 0.75, rel=0.08)


def test_geojson_polygon_holes(tmp_path):
    outer = _square(0, 0, 400, 400).tolist() + [[0, 0]]
    hole = _square(100, 100, 200, 200).tolist() + [[100, 100]]
    gj = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [outer, hole]},
         "properties": {"classification": {"name": "Tumor"}}}]}
    (tmp_path / "a.geojson").write_text(json.dumps(gj))
    polys = io.read_annotations(tmp_path / "a.geojson")
    m = io.rasterize(polys, (100, 100), 4)
    assert m[10, 10] and not m[35, 35]


def test_detection_csv_round_trip(tmp_path):
    p = io.write_detections_csv(tmp_path / "s.csv", [0.9, 0.5], [10.4, 20], [30, 40.6])
    assert p.read_text().splitlines()[0] == "0.900000,10,30"
    probs, xs, ys = io.read_detections_csv(p)
    np.testing.assert_allclose(probs, [0.9, 0.5])
    np.testing.assert_array_equal(xs, [10, 20])
    np.testing.assert_array_equal(ys, [30, 41])


# ----------------------------------------------------------------- bad inputs
def test_bad_slides(tmp_path):
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((64, 64, 3), np.uint8))  # stripped, not tiled
    with pytest.raises(InputError, match="tiled, pyramidal") as e:
        io.Slide(flat)
    assert "flat.tif" in str(e.value)
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 64)
    with pytest.raises(InputError, match="corrupt.tif"):
        io.Slide(bad)
    nompp = tmp_path / "nompp.tif"
    tifffile.imwrite(nompp, np.zeros((256, 256, 3), np.uint8), tile=(64, 64), photometric="rgb")
    with pytest.raises(InputError, match="--mpp"):
        io.Slide(nompp)
    with io.Slide(nompp, mpp=0.5) as s:
        assert s.mpp == 0.5
    with pytest.raises(InputError, match="no file"):
        io.Slide(tmp_path / "missing.svs")


def test_bad_annotations(tmp_path):
    empty = tmp_path / "empty.xml"
    empty.write_text("<ASAP_Annotations><Annotations/></ASAP_Annotations>")
    with pytest.raises(InputError, match="at least one polygon"):
        io.read_asap_xml(empty)
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
                    '<ASAP_Annotations>&lol2;</ASAP_Annotations>')
    with pytest.raises(InputError, match="forbidden XML"):
        io.read_asap_xml(bomb)
    broken = tmp_path / "broken.xml"
    broken.write_text("<ASAP_Annotations><Annotations>")
    with pytest.raises(InputError, match="well-formed"):
        io.read_asap_xml(broken)
    polys = [io.Polygon(_square(0, 0, 5000, 50))]
    out = io.write_asap_xml(tmp_path / "outside.xml", polys)
    with pytest.raises(InputError, match="inside the 1000x1000 slide"):
        io.read_annotations(out, dimensions=(1000, 1000))
    odd = tmp_path / "odd.xml"
    odd.write_text(out.read_text().replace('PartOfGroup="_0"', 'PartOfGroup="Stroma"'))
    with pytest.raises(InputError, match="Stroma"):
        io.read_asap_xml(odd)
    with pytest.raises(InputError, match=".xml"):
        io.read_annotations(tmp_path / "a.txt")


def test_non_pyramidal_slide_is_refused_for_thumbnails(tmp_path, monkeypatch):
    _pyramid(tmp_path / "one.tif", size=512, levels_min=1024)  # tiled, a single level
    monkeypatch.setattr(io.slide, "MAX_WHOLE_LEVEL_PIXELS", 256 * 256)  # read where Slide reads it
    with io.Slide(tmp_path / "one.tif") as s, pytest.raises(InputError, match="pyramidal") as e:
        s.thumbnail(8.0)
    assert "one.tif" in str(e.value)
