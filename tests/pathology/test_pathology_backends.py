"""The tiffslide fallback reads the same pixels and raises the same errors as OpenSlide."""
import sys

import numpy as np
import pytest
import tifffile

from deepsci.apps.pathology import io
from deepsci.apps.pathology.io import backends
from deepsci.apps.pathology.patches import PatchConfig, read_example
from deepsci.core.errors import ConfigError, InputError


def test_tiffslide_gives_the_same_pixels_as_openslide(slide_dir, rng):
    path = slide_dir / "tumor_001.tif"
    with io.Slide(path, backend="openslide") as o, io.Slide(path, backend="tiffslide") as t:
        assert (o.backend, t.backend) == ("openslide", "tiffslide")
        assert o.dimensions == t.dimensions and o.mpp == t.mpp
        assert o.level_dimensions == t.level_dimensions
        np.testing.assert_allclose(o.level_downsamples, t.level_downsamples)
        for level in range(3):
            down = o.level_downsamples[level]
            for _ in range(4):
                lx, ly = rng.integers(-20, 1024 // down, size=2)  # some regions leave the slide
                loc = (int(lx * down), int(ly * down))
                np.testing.assert_array_equal(o.read_region(loc, level, (40, 30)),
                                              t.read_region(loc, level, (40, 30)))
        assert (t.read_region((-50, -50), 0, (8, 8)) == 255).all()  # glass is white in both
        cfg = PatchConfig(patch_size=32, magnifications=(20.0, 10.0, 5.0))
        for x, y in rng.uniform(0, 1024, size=(5, 2)):
            for a, b in zip(read_example(o, x, y, cfg), read_example(t, x, y, cfg), strict=True):
                np.testing.assert_array_equal(a, b)


def test_environment_variable_forces_the_fallback(slide_dir, monkeypatch):
    monkeypatch.setenv(backends.ENV_VAR, "tiffslide")
    with io.Slide(slide_dir / "normal_001.tif") as s:
        assert s.backend == "tiffslide"
    monkeypatch.setenv(backends.ENV_VAR, "bogus")
    with pytest.raises(ConfigError, match="bogus"):
        io.Slide(slide_dir / "normal_001.tif")


def test_auto_falls_back_when_openslide_refuses_or_is_missing(slide_dir, monkeypatch):
    path = slide_dir / "normal_001.tif"
    with io.Slide(path) as s:
        assert s.backend == "openslide"

    def refuse(p):
        raise InputError("expected a readable slide, found a corrupt file (test)", p)

    monkeypatch.setattr(backends, "_open_openslide", refuse)
    with io.Slide(path) as s:
        assert s.backend == "tiffslide"
    with pytest.raises(InputError, match="corrupt"):
        io.Slide(path, backend="openslide")
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "openslide", None)  # import openslide -> ImportError
    with io.Slide(path) as s:
        assert s.backend == "tiffslide"
        assert s.select_level(10.0).level == 1


def test_tiffslide_bad_slides_raise_the_same_errors(tmp_path):
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((64, 64, 3), np.uint8))  # stripped, not tiled
    with pytest.raises(InputError, match="tiled, pyramidal") as e:
        io.Slide(flat, backend="tiffslide")
    assert "flat.tif" in str(e.value)
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 64)
    with pytest.raises(InputError, match="corrupt.tif"):
        io.Slide(bad, backend="tiffslide")
    nompp = tmp_path / "nompp.tif"
    tifffile.imwrite(nompp, np.zeros((256, 256, 3), np.uint8), tile=(64, 64), photometric="rgb")
    with pytest.raises(InputError, match="--mpp"):
        io.Slide(nompp, backend="tiffslide")
    with io.Slide(nompp, mpp=0.5, backend="tiffslide") as s:
        assert s.mpp == 0.5 and s.level_count == 1
        with pytest.raises(InputError, match="40x level"):
            s.select_level(40.0)
