"""The shipped pathology model: tiny build, card, default --model, names, demo-model warning, shipped demo."""
import csv
import json
import shutil

import pytest
from sklearn.metrics import roc_auc_score

from deepsci.apps.cli import main
from deepsci.apps.pathology import release
from deepsci.apps.pathology.baseline import patch_auc, write_baseline_heatmaps
from deepsci.apps.pathology.io import write_pyramid_tiff
from deepsci.apps.pathology.shipped import is_synthetic_slide

NAME = release.NAME


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A models root holding the tiny build and a model card of another app."""
    root = tmp_path_factory.mktemp("models")
    paths = release.build(root, tiny=True)
    assert paths == [root / NAME / "model.keras"]
    other = root / "retinopathy-other"
    other.mkdir()
    shutil.copy(paths[0], other / "model.keras")
    card = json.loads((root / NAME / "model.card.json").read_text())
    card.update(app="retinopathy", task="dr-grade", name="retinopathy-other")
    card["extra"]["shipped"]["default"] = False
    (other / "model.card.json").write_text(json.dumps(card))
    return root


@pytest.fixture
def use_registry(registry, monkeypatch):
    monkeypatch.setenv("DEEPSCI_MODELS", str(registry))
    return registry


@pytest.fixture(scope="module")
def real_slide(tmp_path_factory):
    """A real stained tissue photograph (skimage's IHC sample) as a pyramidal TIFF without deepsci's marker."""
    from skimage import data

    out = tmp_path_factory.mktemp("real") / "ihc.tif"
    write_pyramid_tiff(out, data.immunohistochemistry(), mpp=0.5, tile=256, compression="zlib")
    return out


def test_card(registry):
    card = json.loads((registry / NAME / "model.card.json").read_text())
    assert card["name"] == NAME and (card["app"], card["task"]) == ("pathology", "patch-tumour")
    assert card["data"]["synthetic_only"] is True and card["data"]["real_input"] == "slides"
    assert card["data"]["seeds"] == release.SEEDS and "licence" in card["data"]
    assert card["extra"]["shipped"]["default"] is True and card["extra"]["shipped"]["build_seconds"] > 0
    assert card["training"]["rebuild"] == "deepsci models build pathology --tiny"
    assert card["training"]["recipe"]["patch"] == release.TINY.patch
    for split in ("validation", "test"):
        m = card["metrics"][split]
        assert {"froc", "slide_auc", "patch_auc"} <= set(m) and {"froc", "patch_auc"} <= set(m["baseline"])
    assert card["limitations"].startswith("Demo model: trained on synthetic slides only")


def test_card_metric_recomputed_from_saved_model(registry, tmp_path):
    """The card's validation patch AUC (deepsci and baseline) is what the saved files give on the same slides."""
    from deepsci.apps.pathology.heatmap import HeatmapConfig, run_heatmaps

    card = json.loads((registry / NAME / "model.card.json").read_text())
    slides = release.make_split(tmp_path / "val", release.TINY, "validation", release.SEEDS["validation"])
    run_heatmaps(HeatmapConfig(model=str(registry / NAME / "model.keras"), slides=str(slides),
                               out=str(tmp_path / "hm"), stride=card["extra"]["heatmap_stride"],
                               scheduler="inline"))
    auc, cells = patch_auc(tmp_path / "hm", slides)
    assert cells == card["metrics"]["validation"]["cells"]
    assert auc == pytest.approx(card["metrics"]["validation"]["patch_auc"], abs=1e-6)
    write_baseline_heatmaps(slides, tmp_path / "base", card["extra"]["baseline"])
    base_auc, _ = patch_auc(tmp_path / "base", slides)
    assert base_auc == pytest.approx(card["metrics"]["validation"]["baseline"]["patch_auc"], abs=1e-6)


def test_synthetic_marker(slide_dir, real_slide, tmp_path):
    assert all(is_synthetic_slide(p) for p in slide_dir.glob("*_00?.tif"))
    assert not is_synthetic_slide(real_slide)
    (tmp_path / "x.svs").write_bytes(b"not a tiff")
    assert not is_synthetic_slide(tmp_path / "x.svs")


def test_heatmap_without_model_uses_default(use_registry, slide_dir, tmp_path, capsys):
    rc = main(["pathology", "heatmap", "--slides", str(slide_dir), "--out", str(tmp_path / "h"),
               "--scheduler", "inline", "--stride", "32"])
    err = capsys.readouterr().err
    assert rc == 0
    assert f"model: {NAME} (shipped default; `deepsci models info {NAME}`)" in err
    assert "demo model" not in err  # synthetic slides: no warning
    run = json.loads((tmp_path / "h" / "run.json").read_text())
    assert run["config"]["model"] == str(use_registry / NAME / "model.keras")
    assert len(list((tmp_path / "h").glob("*.heatmap.tif"))) == 2


def test_heatmap_by_name_warns_on_real_slide(use_registry, real_slide, tmp_path, capsys):
    rc = main(["pathology", "heatmap", "--model", NAME, "--slides", str(real_slide), "--out",
               str(tmp_path / "h"), "--scheduler", "inline", "--stride", "32"])
    err = capsys.readouterr().err
    assert rc == 0
    assert f"model: {NAME} (shipped)" in err
    assert f"warning: {NAME} is a demo model trained on synthetic data only" in err and "ihc.tif" in err


def test_other_apps_model_refused(use_registry, slide_dir, tmp_path, capsys):
    rc = main(["pathology", "heatmap", "--model", "retinopathy-other", "--slides", str(slide_dir),
               "--out", str(tmp_path / "h"), "--scheduler", "inline"])
    assert rc == 2
    assert "expected a pathology model, found a retinopathy model" in capsys.readouterr().err
    assert not (tmp_path / "h" / "run.json").exists()


def test_shipped_demo_rows_recomputable(use_registry, tmp_path):
    from deepsci.apps.pathology.demo import DEMO_SEEDS, run_demo

    assert DEMO_SEEDS[True] not in release.SEEDS.values() and DEMO_SEEDS[False] not in release.SEEDS.values()
    r = run_demo(tmp_path, quick=True)
    rows = {row.metric: row for row in r.rows}
    assert [row.model for row in r.rows] == [NAME] * 3 and all("seed 4211" in row.data for row in r.rows)
    for who, folder in (("deepsci", "heatmaps"), ("baseline", "baseline_heatmaps")):
        froc = json.loads((tmp_path / who / "eval" / "metrics.json").read_text())["froc"]
        with open(tmp_path / who / "detections" / "slides.csv") as f:
            scores = {row["image"]: float(row["score"]) for row in csv.DictReader(f)}
        labels = [int((tmp_path / "slides" / f"{k}_Mask.tif").exists()) for k in scores]
        auc, _ = patch_auc(tmp_path / folder, tmp_path / "slides")
        got = {"Camelyon16 FROC (ITC excluded)": froc, "slide ROC AUC": roc_auc_score(labels, list(scores.values())),
               "patch (heatmap cell) ROC AUC": auc}
        for metric, value in got.items():
            assert getattr(rows[metric], who) == pytest.approx(value, abs=1e-9)
