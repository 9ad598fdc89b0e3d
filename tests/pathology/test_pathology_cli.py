"""End to end through the CLI: train -> heatmap -> detect -> evaluate, and bad inputs."""
import json

import numpy as np
import pytest

from deepsci.apps.cli import main
from deepsci.apps.pathology import io


@pytest.fixture(scope="module")
def trained(slide_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pathology_model")
    rc = main(["pathology", "train", "--slides", str(slide_dir), "--out", str(out),
               "--magnifications", "20", "--patch-size", "48", "--center-size", "16", "--width", "8",
               "--epochs", "2", "--batch-size", "32", "--patches-per-epoch", "384",
               "--val-patches", "64"])
    assert rc == 0
    return out / "model.keras"


@pytest.fixture(scope="module")
def heatmaps(trained, slide_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pathology_heatmaps")
    rc = main(["pathology", "heatmap", "--model", str(trained), "--slides", str(slide_dir),
               "--out", str(out), "--scheduler", "inline", "--stride", "32", "--format", "both"])
    assert rc == 0
    return out


def test_train_outputs(trained):
    meta = json.loads(trained.with_suffix(".json").read_text())
    assert meta["app"] == "pathology"
    assert meta["input_spec"]["magnifications"] == [20.0]
    for name in ("config.json", "run_info.json", "history.json"):
        assert (trained.parent / name).exists(), name


def test_heatmap_finds_the_tumour(heatmaps, slide_dir):
    hm, meta = io.read_heatmap(heatmaps / "tumor_001.heatmap.tif")
    zhm, zmeta = io.read_heatmap(heatmaps / "tumor_001.heatmap.zarr")
    np.testing.assert_allclose(hm, zhm)
    assert meta["stride"] == pytest.approx(32) and zmeta["tiles"] == meta["tiles"]
    truth = io.rasterize(io.read_asap_xml(slide_dir / "tumor_001.xml"), hm.shape, meta["stride"])
    evaluated = hm > 0
    inside, outside = hm[truth & evaluated], hm[~truth & evaluated]
    assert inside.mean() > outside.mean() + 0.2
    r, c = np.unravel_index(np.argmax(hm), hm.shape)
    assert truth[max(0, r - 2):r + 3, max(0, c - 2):c + 3].any()
    normal, _ = io.read_heatmap(heatmaps / "normal_001.heatmap.tif")
    assert hm.max() > normal.max()
    assert (heatmaps / "tumor_001.overlay.png").exists()
    assert (heatmaps / "run_info.json").exists() and (heatmaps / "heatmap_config.json").exists()


def test_heatmap_rerun_skips_finished_slides(trained, slide_dir, heatmaps):
    before = (heatmaps / "tumor_001.heatmap.tif").stat().st_mtime_ns
    rc = main(["pathology", "heatmap", "--model", str(trained), "--slides", str(slide_dir),
               "--out", str(heatmaps), "--scheduler", "inline", "--stride", "32"])
    assert rc == 0
    assert (heatmaps / "tumor_001.heatmap.tif").stat().st_mtime_ns == before


def test_detect_and_evaluate(heatmaps, slide_dir, tmp_path):
    det, ev = tmp_path / "det", tmp_path / "eval"
    assert main(["pathology", "detect", "--heatmaps", str(heatmaps), "--out", str(det),
                 "--threshold", "0.2"]) == 0
    lines = (det / "tumor_001.csv").read_text().splitlines()
    assert lines and len(lines[0].split(",")) == 3
    scores = dict(line.split(",") for line in (det / "slides.csv").read_text().splitlines()[1:])
    assert float(scores["tumor_001"]) > float(scores["normal_001"])
    assert main(["pathology", "evaluate", "--detections", str(det), "--truth", str(slide_dir),
                 "--out", str(ev)]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert m["slide_auc"] == 1.0
    assert m["lesions"] == 1 and 0.0 < m["froc"] <= 1.0
    assert (ev / "froc.png").exists() and (ev / "roc.png").exists()


def test_synth_and_tissue_commands(tmp_path):
    assert main(["pathology", "synth", str(tmp_path / "s"), "--tumour", "1", "--normal", "0",
                 "--size", "512", "--seed", "3"]) == 0
    assert (tmp_path / "s" / "tumor_001.xml").exists() and (tmp_path / "s" / "tumor_001_Mask.tif").exists()
    assert main(["pathology", "tissue", str(tmp_path / "s" / "tumor_001.tif"),
                 "--out", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").exists()


def test_cli_bad_inputs(trained, slide_dir, tmp_path, capsys):
    def err(args):
        capsys.readouterr()
        rc = main(args)
        e = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(e) == 1 and e[0].startswith("error: "), (rc, e)
        return e[0]

    # the model wants 20x; a slide at 1 um/px (10x) does not have it
    img = np.full((256, 256, 3), 200, np.uint8)
    io.write_pyramid_tiff(tmp_path / "low" / "low.tif", img, mpp=1.0, tile=64, min_size=64)
    msg = err(["pathology", "heatmap", "--model", str(trained), "--slides", str(tmp_path / "low"),
               "--out", str(tmp_path / "h"), "--scheduler", "inline"])
    assert "20x level" in msg and "low.tif" in msg
    assert "no file" in err(["pathology", "heatmap", "--model", str(tmp_path / "none.keras"),
                             "--slides", str(slide_dir), "--out", str(tmp_path / "h")])
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.tif").write_bytes(b"not a tiff at all")
    assert "x.tif" in err(["pathology", "train", "--slides", str(tmp_path / "flat"),
                           "--out", str(tmp_path / "m")])
    assert "magnifications" in err(["pathology", "train", "--slides", str(slide_dir),
                                    "--out", str(tmp_path / "m"), "--magnifications", "10,20"])
    assert "threshold" in err(["pathology", "detect", "--heatmaps", str(tmp_path),
                               "--out", str(tmp_path / "d"), "--threshold", "2"])


def test_multiscale_towers_end_to_end(tmp_path):
    """40x/20x/10x towers: train -> heatmap (Dask-free) -> detect -> evaluate on 40x slides."""
    from deepsci.apps.pathology.synth import SynthConfig, make_slides

    slides = tmp_path / "slides40x"
    make_slides(slides, n_tumour=1, n_normal=1, seed=5,
                config=SynthConfig(width=2048, height=2048, mpp=0.25, tumour_radius_um=(110.0, 130.0)))
    model, hm, det, ev = (tmp_path / d for d in ("model", "hm", "det", "eval"))
    assert main(["pathology", "train", "--slides", str(slides), "--out", str(model),
                 "--magnifications", "40,20,10", "--patch-size", "48", "--center-size", "16",
                 "--width", "8", "--epochs", "2", "--batch-size", "32", "--patches-per-epoch", "256",
                 "--val-patches", "64"]) == 0
    meta = json.loads((model / "model.json").read_text())
    assert meta["input_spec"]["magnifications"] == [40.0, 20.0, 10.0]
    assert main(["pathology", "heatmap", "--model", str(model / "model.keras"), "--slides", str(slides),
                 "--out", str(hm), "--scheduler", "inline", "--stride", "32"]) == 0
    heat, info = io.read_heatmap(hm / "tumor_001.heatmap.tif")
    assert info["magnifications"] == [40.0, 20.0, 10.0] and info["tiles"] > 100
    truth = io.rasterize(io.read_asap_xml(slides / "tumor_001.xml"), heat.shape, info["stride"])
    evaluated = heat > 0
    assert heat[truth & evaluated].mean() > heat[~truth & evaluated].mean()
    assert main(["pathology", "detect", "--heatmaps", str(hm), "--out", str(det), "--threshold", "0.2"]) == 0
    assert main(["pathology", "evaluate", "--detections", str(det), "--truth", str(slides),
                 "--out", str(ev)]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert m["slides"] == 2 and m["lesions"] == 1 and 0.0 <= m["froc"] <= 1.0
    assert "slide_auc" in m
