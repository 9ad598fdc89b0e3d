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


def test_train_outputs(trained, slide_dir):
    card = json.loads((trained.parent / "model.card.json").read_text())
    assert (card["app"], card["task"]) == ("pathology", "patch-tumour")
    assert card["input_spec"]["magnifications"] == [20.0] and card["input_spec"]["patch_size"] == 48
    assert card["data"]["synthetic"] is False  # the fixture's slides come from make_slides, not `synth`
    assert sorted(card["data"]["files"]) == sorted(str(p) for p in io.list_slides(slide_dir))
    run = json.loads((trained.parent / "run.json").read_text())
    assert run["command"] == "pathology train" and run["status"] == "done"
    assert run["config"]["patch"]["center_size"] == 16 and run["config"]["train"]["epochs"] == 2
    history = json.loads((trained.parent / "history.json").read_text())
    assert run["results"]["last_epoch"]["val_auc"] == pytest.approx(history[-1]["val_auc"])
    assert card["metrics"]["validation"]["val_auc_approx"] == pytest.approx(history[-1]["val_auc"])
    # one record per output folder: no config copies beside it
    assert not {"config.json", "run_info.json", "model.json"} & {p.name for p in trained.parent.iterdir()}


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
    run = json.loads((heatmaps / "run.json").read_text())
    assert run["command"] == "pathology heatmap" and run["config"]["stride"] == 32
    assert run["results"]["slides"]["tumor_001"]["score"] == pytest.approx(float(hm.max()), abs=1e-6)
    assert not {"run_info.json", "heatmap_config.json"} & {p.name for p in heatmaps.iterdir()}


def test_heatmap_rerun_skips_finished_slides(trained, slide_dir, heatmaps):
    before = (heatmaps / "tumor_001.heatmap.tif").stat().st_mtime_ns
    rc = main(["pathology", "heatmap", "--model", str(trained), "--slides", str(slide_dir),
               "--out", str(heatmaps), "--scheduler", "inline", "--stride", "32"])
    assert rc == 0
    assert (heatmaps / "tumor_001.heatmap.tif").stat().st_mtime_ns == before


def test_detect_and_evaluate(heatmaps, slide_dir, tmp_path, official):
    det, ev = tmp_path / "det", tmp_path / "eval"
    assert main(["pathology", "detect", "--heatmaps", str(heatmaps), "--out", str(det),
                 "--threshold", "0.2"]) == 0
    lines = (det / "tumor_001.csv").read_text().splitlines()
    assert lines and len(lines[0].split(",")) == 3
    scores = dict(line.split(",") for line in (det / "slides.csv").read_text().splitlines()[1:])
    assert float(scores["tumor_001"]) > float(scores["normal_001"])
    assert main(["pathology", "evaluate", "--detections", str(det), "--truth", str(slide_dir),
                 "--out", str(ev), "--pixel-size", "slide"]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert m["slide_auc"] == 1.0
    assert m["lesions"] == 1 and m["tumour_slides"] == 1 and m["slides"] == 2
    assert (ev / "froc.png").exists() and (ev / "roc.png").exists()
    # The 1024-px masks stop at level 4 (the official script needs the level in the file):
    # the CLI's FROC there equals Evaluation_FROC.py run on the written CSVs and mask TIFFs.
    _evaluate_like_official(det, slide_dir, tmp_path / "eval4", official, level=4)
    # A harder set from the same files: the detections at half their probability, a grid of
    # points with random probabilities over the tumour slide (any error in where a point lands
    # moves points between lesion and false positive) and false positives above the lesion's
    # probability on the normal slide, so the score is neither 0 nor 1.
    hard = tmp_path / "hard"
    hard.mkdir()
    grid = np.arange(8, 1024, 48)
    gx, gy = np.meshgrid(grid, grid)
    gp = np.round(np.random.default_rng(0).uniform(0, 0.45, gx.size), 3)  # ties, as in heatmaps
    for path in det.glob("*.csv"):
        if path.name != "slides.csv":
            rows = [line.split(",") for line in path.read_text().splitlines()]
            lines = [f"{float(p) / 2:.6f},{x},{y}" for p, x, y in rows]
            if path.stem == "tumor_001":
                lines += [f"{p:.3f},{x},{y}" for p, x, y in zip(gp, gx.ravel(), gy.ravel(), strict=True)]
            if path.stem == "normal_001":
                # (0.01: the script skips the lowest probability as a threshold; keep the lesion's)
                lines += ["0.900000,40,40", "0.600000,1000,1000", "0.010000,500,500"]
            (hard / path.name).write_text("".join(line + "\n" for line in lines))
    score = _evaluate_like_official(hard, slide_dir, tmp_path / "eval_hard", official, level=4)
    assert 0.0 < score < 1.0


def _evaluate_like_official(det, truth, out, official, *, level: int) -> float:
    """``deepsci pathology evaluate`` at ``level`` == the official script on the same files."""
    assert main(["pathology", "evaluate", "--detections", str(det), "--truth", str(truth),
                 "--out", str(out), "--level", str(level), "--pixel-size", "slide"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    want, fps, sens = official.from_files(det, truth, level)
    assert m["froc"] == pytest.approx(want, abs=1e-9)
    for point, value in m["sensitivity_at"].items():
        assert value == pytest.approx(np.interp(float(point), fps[::-1], sens[::-1]), abs=1e-9), point
    curve = np.loadtxt(out / "froc_curve.csv", delimiter=",", skiprows=1, ndmin=2)
    np.testing.assert_allclose(curve, np.column_stack([fps, sens]), atol=1e-6)
    return want


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


def test_multiscale_towers_end_to_end(tmp_path, official):
    """40x/20x/10x towers: train -> heatmap (Dask-free) -> detect -> evaluate on 40x slides."""
    from deepsci.apps.pathology.synth import SynthConfig, make_slides

    slides = tmp_path / "slides40x"
    make_slides(slides, n_tumour=1, n_normal=1, seed=5,
                config=SynthConfig(width=2048, height=2048, mpp=0.25, tumour_radius_um=(110.0, 130.0)))
    model, hm, det, ev = (tmp_path / d for d in ("model", "hm", "det", "eval"))
    assert main(["pathology", "train", "--slides", str(slides), "--out", str(model),
                 "--magnifications", "40,20,10", "--patch-size", "48", "--center-size", "16",
                 "--width", "8", "--epochs", "2", "--batch-size", "32", "--patches-per-epoch", "256",
                 "--val-patches", "64", "--bn-batches", "4"]) == 0
    meta = json.loads((model / "model.card.json").read_text())
    assert meta["input_spec"]["magnifications"] == [40.0, 20.0, 10.0]
    # Four batches (128 patches) re-estimate BatchNorm: its three-tower eager passes cost more than the 16 steps.
    assert meta["training"]["precise_batchnorm_batches"] == 4
    assert main(["pathology", "heatmap", "--model", str(model / "model.keras"), "--slides", str(slides),
                 "--out", str(hm), "--scheduler", "inline", "--stride", "32"]) == 0
    heat, info = io.read_heatmap(hm / "tumor_001.heatmap.tif")
    assert info["magnifications"] == [40.0, 20.0, 10.0] and info["tiles"] > 100
    truth = io.rasterize(io.read_asap_xml(slides / "tumor_001.xml"), heat.shape, info["stride"])
    evaluated = heat > 0
    assert heat[truth & evaluated].mean() > heat[~truth & evaluated].mean()
    assert main(["pathology", "detect", "--heatmaps", str(hm), "--out", str(det), "--threshold", "0.2"]) == 0
    assert main(["pathology", "evaluate", "--detections", str(det), "--truth", str(slides),
                 "--out", str(ev), "--pixel-size", "slide"]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert m["slides"] == 2 and m["lesions"] == 1
    # 2048-px masks reach level 5: the default evaluation is exactly the official script's
    want, _, _ = official.from_files(det, slides, 5)
    assert m["froc"] == pytest.approx(want, abs=1e-9)
    scores = dict(line.split(",") for line in (det / "slides.csv").read_text().splitlines()[1:])
    tumour, normal = float(scores["tumor_001"]), float(scores["normal_001"])
    assert m["slide_auc"] == (tumour > normal) + 0.5 * (tumour == normal)


def test_another_apps_model_is_refused(tmp_path, slide_dir, tiny_model, one_line_error):
    """A molecules card (or none) beside the .keras: one line, exit 2, before any slide is read."""
    from deepsci.core.io import write_json
    from deepsci.core.models.card import ModelCard, card_path

    path = tiny_model(tmp_path / "m.keras", (20.0,))
    card = json.loads(card_path(path).read_text())
    foreign = ModelCard.from_dict({**card, "app": "molecules", "task": "qm9-properties"})
    write_json(card_path(path), foreign.to_dict())
    args = ["pathology", "heatmap", "--model", str(path), "--slides", str(slide_dir),
            "--out", str(tmp_path / "h"), "--scheduler", "inline"]
    msg = one_line_error(args)
    assert "expected a pathology model, found a molecules model" in msg and "m.keras" in msg
    card_path(path).unlink()
    assert "m.card.json" in one_line_error(args)
    assert not (tmp_path / "h").exists()  # a refused run leaves no output folder


def test_config_rerun_reproduces_detect(heatmaps, tmp_path):
    """``detect --config <out>/run.json --out <other>`` re-runs the recorded run: same files."""
    first, again = tmp_path / "det", tmp_path / "again"
    assert main(["pathology", "detect", "--heatmaps", str(heatmaps), "--out", str(first),
                 "--threshold", "0.3", "--radius", "60"]) == 0
    assert main(["pathology", "detect", "--config", str(first / "run.json"), "--out", str(again)]) == 0
    rec = json.loads((again / "run.json").read_text())
    assert rec["config"]["threshold"] == 0.3 and rec["config"]["radius_um"] == 60.0
    names = sorted(p.name for p in first.glob("*.csv"))
    assert names == sorted(p.name for p in again.glob("*.csv")) and "tumor_001.csv" in names
    for name in names:
        assert (again / name).read_text() == (first / name).read_text(), name
