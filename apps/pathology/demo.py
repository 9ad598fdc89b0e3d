"""Demo: the shipped patch classifier beside the stain-density baseline on fresh synthetic slides.

The default demo (:func:`shipped_demo`) synthesises held-out slides with
seeds the shipped model's build never used, runs the product's ``heatmap``,
``detect`` and ``evaluate`` stages with ``pathology-synthetic-demo`` and the
same stages on the classical baseline's heatmaps (:mod:`.baseline`, fitted at
build time on the model's training slides), and reports FROC, slide AUC and
patch AUC side by side. ``train=True`` runs the older demo, which trains a
model from scratch (:func:`train_demo`).
"""
from __future__ import annotations

import time
from pathlib import Path

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import write_json
from deepsci.core.report import DemoResult, DemoRow, find_viewer_outputs

#: The files for the field's viewer that the demo report links (those the run wrote).
VIEWERS = (("heatmaps/*.contours.geojson", "QuPath"), ("**/*.detections.geojson", "QuPath"))


__all__ = ["DEMO_SEEDS", "DemoSettings", "run_pipeline", "run_demo", "shipped_demo", "train_demo"]

#: Seeds of the demo's slides (quick, full); the shipped model's build used others (checked).
DEMO_SEEDS = {True: 4211, False: 4201}
BASELINE_NAME = "rgb2hed H+E density, logistic fit on the training slides"


class DemoSettings:
    """Sizes of the demo (``quick`` for the test suite, otherwise a few minutes on 2 cores)."""

    def __init__(self, quick: bool):
        self.quick = quick
        if quick:
            self.size, self.n_train, self.n_test = 1024, (1, 1), (1, 1)
            self.radius_um = (110.0, 140.0)
            self.patch, self.center, self.width = 48, 16, 8
            self.epochs, self.batch, self.patches = 2, 16, 128
            self.stride, self.scheduler = 32, "inline"
        else:
            self.size, self.n_train, self.n_test = 2048, (6, 4), (5, 5)
            self.radius_um = (120.0, 220.0)
            self.patch, self.center, self.width = 64, 16, 16
            self.epochs, self.batch, self.patches = 6, 32, 1536
            self.stride, self.scheduler = 32, "local"
        # Held-out tumour slides with small metastases (seed test_seed + 1, also
        # never used in training): some are near the ITC size, which makes the
        # slide AUC and FROC harder than on the big training-like lesions.
        self.n_test_small, self.small_lesions, self.small_radius_um = 0, 2, (90.0, 120.0)


def run_pipeline(out_dir: Path, s: DemoSettings, *, train_seed: int = 0, test_seed: int = 1) -> dict:
    """Every stage of the app on synthetic slides; returns metrics and output paths.

    Training slides come from ``train_seed`` and held-out slides from
    ``test_seed`` (plus ``test_seed + 1`` for the small-lesion slides);
    different seeds share no slide.
    """
    from deepsci.core.training import TrainConfig

    from .detect import DetectConfig, run_detect
    from .evaluate import EvaluateConfig, run_evaluate
    from .heatmap import HeatmapConfig, run_heatmaps
    from .patches import PatchConfig
    from .synth import SynthConfig, make_slides
    from .train import PathologyTrainConfig, run_train

    out_dir = Path(out_dir)
    syn = SynthConfig(width=s.size, height=s.size, mpp=0.5, tumour_radius_um=s.radius_um)
    make_slides(out_dir / "train_slides", n_tumour=s.n_train[0], n_normal=s.n_train[1], seed=train_seed,
                config=syn)
    make_slides(out_dir / "test_slides", n_tumour=s.n_test[0], n_normal=s.n_test[1], seed=test_seed,
                config=syn, prefix="test_")
    if s.n_test_small:
        small = SynthConfig(width=s.size, height=s.size, mpp=0.5, tumour_radius_um=s.small_radius_um,
                            n_tumours=s.small_lesions)
        make_slides(out_dir / "test_slides", n_tumour=s.n_test_small, n_normal=0, seed=test_seed + 1,
                    config=small, prefix="test_small_")
    cfg = PathologyTrainConfig(
        slides=str(out_dir / "train_slides"), out=str(out_dir / "model"),
        patch=PatchConfig(patch_size=s.patch, magnifications=(20.0,), center_size=s.center),
        width=s.width, patches_per_epoch=s.patches, val_patches=s.patches // 4,
        train=TrainConfig(epochs=s.epochs, batch_size=s.batch, monitor="val_auc", mode="max",
                          tensorboard=not s.quick, progress=not s.quick))
    result = run_train(cfg)
    hm = run_heatmaps(HeatmapConfig(
        model=str(out_dir / "model" / "model.keras"), slides=str(out_dir / "test_slides"),
        out=str(out_dir / "heatmaps"), stride=s.stride, scheduler=s.scheduler,
        workers=2 if s.scheduler == "local" else None))
    run_detect(DetectConfig(heatmaps=str(out_dir / "heatmaps"), out=str(out_dir / "detections"),
                            threshold=0.1))
    # pixel_size="slide": synthetic slides are at 0.5 um/px, not Camelyon16's 0.243.
    metrics = run_evaluate(EvaluateConfig(detections=str(out_dir / "detections"),
                                          truth=str(out_dir / "test_slides"), out=str(out_dir / "eval"),
                                          pixel_size="slide"))
    tiles = sum(v["tiles"] for v in hm.values())
    secs = sum(v["seconds"] for v in hm.values())
    return {"metrics": metrics, "history": result.history, "tiles": tiles, "heatmap_seconds": secs,
            "heatmaps": hm}


def train_demo(out_dir: Path, *, quick: bool = False) -> DemoResult:
    """Train a model from scratch and run the whole pipeline on synthetic whole-slide images.

    Returns
    -------
    DemoResult
        FROC, sensitivity at 1 and 8 false positives per slide, slide AUC and
        patch validation AUC; a heatmap overlay, the FROC curve and the ROC.
    """
    out_dir = Path(out_dir)
    s = DemoSettings(quick)
    r = run_pipeline(out_dir, s)
    m = r["metrics"]
    last = r["history"][-1] if r["history"] else {}
    metrics = {
        "froc": m["froc"],
        "sens_at_1fp": m["sensitivity_at"]["1.0"],
        "sens_at_8fp": m["sensitivity_at"]["8.0"],
        "slide_auc": m.get("slide_auc", "n/a"),
        "patch_val_auc_approx": last.get("val_auc", "n/a"),  # Keras' 200-threshold AUC
        "held_out_slides": m["slides"],
        "lesions": m["lesions"],
        "heatmap_tiles_per_s": r["tiles"] / max(r["heatmap_seconds"], 1e-9),
    }
    overlays = sorted((out_dir / "heatmaps").glob("test_tumor_*.overlay.png"))
    figures = overlays[:1] + [p for p in (out_dir / "eval" / "froc.png", out_dir / "eval" / "roc.png")
                              if p.exists()]
    text = (f"{sum(s.n_train)} synthetic training slides ({s.size}x{s.size} px at 0.5 um/px), "
            f"{s.epochs} epochs of a small Inception on {s.patch}-px 20x patches; held-out slides "
            f"from another seed. Lesion FROC per the Camelyon16 rules (level-5 mask, 75 um growth, "
            f"ITC excluded).")
    return DemoResult(app="pathology", title="Metastasis detection in whole-slide images (Camelyon16-style)",
                      metrics=metrics, figures=figures, text=text)


def run_demo(out_dir: Path, *, quick: bool = False, train: bool = False) -> DemoResult:
    """The shipped model beside the baseline on fresh slides (``train``: :func:`train_demo`).

    Parameters
    ----------
    out_dir : Path
        Receives ``slides/`` (the held-out slides, masks, XML), ``heatmaps/``
        and ``baseline_heatmaps/`` (``<slide>.heatmap.tif``), ``deepsci/`` and
        ``baseline/`` (``detections/``, ``eval/``) and ``scores.json``.
    quick : bool
        Two small slides (what the tests call) instead of six.
    train : bool
        The older demo that trains a model first.

    Returns
    -------
    DemoResult
        Rows FROC, slide AUC and patch AUC of deepsci and of the baseline on
        the same slides, each naming the model and the data.
    """
    result = train_demo(out_dir, quick=quick) if train else shipped_demo(out_dir, quick=quick)
    result.viewers = find_viewer_outputs(out_dir, VIEWERS)
    return result


def _demo_slides(out: Path, card, quick: bool) -> tuple[Path, str]:
    """Write the held-out slides (sizes of the training slides unless quick); (folder, description)."""
    from .release import TINY, Recipe, make_split

    seed = DEMO_SEEDS[quick]
    used = {int(v) for v in card.data.get("seeds", {}).values()}
    if seed in used:
        raise ConfigError(f"expected a demo seed the shipped model never saw, found {seed} among its "
                          f"build's seeds {sorted(used)}")
    built = card.training.get("recipe", {})
    if quick:
        recipe = TINY
    else:
        # Training-like metastases on smaller slides (fewer pixels, the same tissue): the 30-s budget.
        recipe = Recipe(**{**built, "size": 1536, "test": (3, 3), "radius_um": (120.0, 180.0)})
    make_split(out, recipe, "test", seed)
    n = sum(recipe.test)
    return out, (f"{n} fresh synthetic slides, {recipe.size}x{recipe.size} px at 0.5 um/px, seed {seed} "
                 f"(build seeds {sorted(used)})")


def shipped_demo(out_dir: Path, *, quick: bool = False) -> DemoResult:
    """The shipped default model and the baseline on the same fresh slides."""
    from deepsci.core.models.registry import default_model

    from .baseline import write_baseline_heatmaps
    from .heatmap import HeatmapConfig, run_heatmaps
    from .model import APP, TASK
    from .release import score_heatmaps

    out_dir = Path(out_dir)
    m = default_model(APP, TASK)
    if m is None:
        raise InputError("expected a shipped pathology model (`deepsci models build pathology`), found none")
    card = m.card
    stride, threshold = int(card.extra["heatmap_stride"]), float(card.extra["detect_threshold"])
    t0 = time.perf_counter()
    slides, data = _demo_slides(out_dir / "slides", card, quick)
    run_heatmaps(HeatmapConfig(model=str(m.path), slides=str(slides), out=str(out_dir / "heatmaps"),
                               stride=stride, scheduler="inline", contours=(0.5,)), overwrite=True)
    write_baseline_heatmaps(slides, out_dir / "baseline_heatmaps", card.extra["baseline"])
    ours = score_heatmaps(out_dir / "heatmaps", slides, out_dir / "deepsci", threshold)
    base = score_heatmaps(out_dir / "baseline_heatmaps", slides, out_dir / "baseline", threshold)
    write_json(out_dir / "scores.json", {"deepsci": ours, "baseline": base, "model": m.name, "data": data})
    rows = [DemoRow(label, ours[key], base[key], BASELINE_NAME, True, m.name, data, tolerance=0.005)
            for key, label in (("froc", "Camelyon16 FROC (ITC excluded)"), ("slide_auc", "slide ROC AUC"),
                               ("patch_auc", "patch (heatmap cell) ROC AUC"))]
    overlays = sorted((out_dir / "heatmaps").glob("tumor_*.overlay.png"))
    figures = overlays[:1] + [p for p in (out_dir / "deepsci" / "eval" / "froc.png",
                                          out_dir / "deepsci" / "eval" / "roc.png") if p.exists()]
    metrics = {"sens_at_1fp": ours["sens_at_1fp"], "baseline_sens_at_1fp": base["sens_at_1fp"],
               "held_out_slides": ours["slides"], "lesions": ours["lesions"], "tissue_cells": ours["cells"],
               "seconds": round(time.perf_counter() - t0, 1)}
    text = (f"{m.name} (shipped; synthetic-only demo model) on {data}; lesion FROC per the Camelyon16 "
            f"rules, slide score = heatmap maximum, patch AUC over tissue cells of the {stride}-px grid. "
            f"Baseline: {BASELINE_NAME} (fitted at build time, no tuning on these slides).")
    return DemoResult(app="pathology", title="Metastasis detection in whole-slide images (Camelyon16-style)",
                      metrics=metrics, figures=figures, text=text, rows=rows)
