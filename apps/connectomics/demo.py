"""Demo: the shipped synthetic models on a fresh synthetic EM volume, beside the watershed baseline.

By default (``deepsci demo``) the demo paints a synthetic volume with a seed the
shipped models never saw (:data:`DEMO_SEED`; the build's seeds are on the cards),
segments it with ``connectomics-synthetic-ffn`` + ``connectomics-synthetic-agglo``
through ``segment --preset learned`` (watershed supervoxels, FFN pair recoveries,
random-forest agglomeration) and scores it beside the watershed baseline whose
settings were tuned on the build's validation volume (another seed), applied
unchanged. ``train=True`` is the older demo: train an FFN from scratch and flood-fill.
"""
from __future__ import annotations

from pathlib import Path

from deepsci.core.errors import ConfigError
from deepsci.core.report import DemoResult, DemoRow, find_viewer_outputs

#: The files for the field's viewer that the demo report links (those the run wrote).
VIEWERS = (("**/segmentation.zarr", "napari (ome-zarr plugin) or neuroglancer"),)


__all__ = ["run_demo", "demo_settings", "DEMO_SEED", "DEMO_FFN"]

#: Seed of the demo's test volume: never one of the build's (checked against the card).
DEMO_SEED = 9301
DEMO_FFN = "connectomics-synthetic-ffn"
_ROWS = (("VI total (bits)", "vi_total"), ("VI split (bits)", "vi_split"), ("VI merge (bits)", "vi_merge"),
         ("adapted Rand error", "adapted_rand_error"))


def demo_settings(quick: bool) -> dict:
    """Sizes used by the demo and the notebook (``quick`` = the test-suite settings)."""
    if quick:
        return {"train_shape": (24, 40, 40), "test_shape": (24, 40, 40), "neurites": (6, 5), "radius": (3.0, 5.0),
                "ffn": {"fov_size": (9, 9, 9), "deltas": (2, 2, 2), "depth": 2, "features": 8},
                "epochs": 2, "steps": 40, "lr": 2e-3, "block_size": None, "inference": {}}
    # --full: about 2 minutes on 2 cores (was 6 with the ``cpu`` preset for 2,000 steps): the FOV of the
    # pipeline tests learns these membranes in a few hundred steps, four blocks still exercise Dask and
    # stitching, and the merge-cutting inference options (membrane seeds, boundary limit) are on.
    return {"train_shape": (40, 80, 80), "test_shape": (40, 80, 80), "neurites": (12, 10), "radius": (3.0, 6.0),
            "ffn": {"fov_size": (11, 11, 11), "deltas": (3, 3, 3), "depth": 3, "features": 12},
            "epochs": 4, "steps": 150, "lr": 3e-3, "block_size": (40, 48, 48),
            "inference": {"seed_policy": "membrane", "peak_min_distance": 4, "boundary_threshold": 0.7,
                          "fill_unclaimed": True}}


def run_demo(out_dir: Path, *, quick: bool = False, train: bool = False) -> DemoResult:
    """The shipped models on a fresh synthetic volume beside the watershed (``train``: train from scratch).

    Parameters
    ----------
    out_dir : Path
        Receives ``test.zarr`` (image, labels), ``segment/`` (deepsci's segmentation),
        ``baseline.zarr`` (the watershed's labels), ``scores.json`` and ``slices.png``
        (with ``train``: ``train.zarr``, ``model/``, ``segment/``, ``eval/``).
    quick : bool
        A smaller volume (what the tests call).
    train : bool
        The older demo (:func:`train_demo`).

    Returns
    -------
    DemoResult
        Rows VI total/split/merge and adapted Rand error of deepsci and of the baseline on the
        same volume, each naming the models and the data.
    """
    result = train_demo(out_dir, quick=quick) if train else shipped_demo(out_dir, quick=quick)
    result.viewers = find_viewer_outputs(out_dir, VIEWERS)
    return result


def _demo_volume(card, quick: bool) -> tuple[dict, int]:
    """The demo's synthetic volume parameters (those of the training volumes) and its seed."""
    seeds = {int(v) for v in card.data.get("seeds", {}).values()}
    if DEMO_SEED in seeds:
        raise ConfigError(f"expected a demo seed the shipped model never saw, found {DEMO_SEED} among its "
                          f"build's seeds {sorted(seeds)}")
    synth = dict(card.data["synth"])
    synth["shape"], synth["radius"] = tuple(synth["shape"]), tuple(synth["radius"])
    if quick:
        synth.update(shape=(24, 48, 48), n_neurites=8)
    return synth, DEMO_SEED


def shipped_demo(out_dir: Path, *, quick: bool = False) -> DemoResult:
    """Segment a fresh synthetic volume with the shipped synthetic models and the watershed; score both."""
    from deepsci.core.io import write_json
    from deepsci.core.models.registry import shipped

    from .baseline import watershed_baseline
    from .config import BaselineConfig
    from .figures import orthogonal_slices
    from .io import write_volume
    from .release import learned_segment, scores
    from .synth import synthetic_volume

    out_dir = Path(out_dir)
    ffn = shipped(DEMO_FFN)
    agglo = shipped(ffn.card.extra["agglo_model"])
    synth, seed = _demo_volume(ffn.card, quick)
    img, gt = synthetic_volume(seed=seed, **synth)
    vs = (10.0, 10.0, 10.0)
    write_volume(out_dir / "test.zarr", {"image": img, "labels": gt}, voxel_size=vs)
    seg, summary = learned_segment(ffn.path, agglo.path, str(out_dir / "test.zarr:image"), out_dir / "segment",
                                   overrides=ffn.card.extra.get("segment_options", {}))
    base = ffn.card.extra["baseline"]
    ws_cfg = BaselineConfig(**base["config"])
    ws = watershed_baseline(img, ws_cfg, voxel_size=vs)
    write_volume(out_dir / "baseline.zarr", {"labels": ws}, voxel_size=vs)
    ours, theirs = scores(gt, seg), scores(gt, ws)
    write_json(out_dir / "scores.json", {"deepsci": ours, "watershed": theirs, "seed": seed,
                                         "synth": {k: list(v) if isinstance(v, tuple) else v for k, v in synth.items()}})
    fig = orthogonal_slices(img, {"ground truth": gt, "deepsci (learned)": seg, "watershed": ws},
                            out_dir / "slices.png", voxel_size=vs)
    val_seed = ffn.card.data.get("seeds", {}).get("validation")
    model = f"{ffn.name} + {agglo.name} (segment --preset learned)"
    data = (f"synthetic EM volume {tuple(synth['shape'])}, seed {seed} (the build used seeds "
            f"{sorted(ffn.card.data.get('seeds', {}).values())})")
    bname = (f"watershed (threshold {ws_cfg.threshold or 'otsu'}, min distance {ws_cfg.min_distance}, sigma "
             f"{ws_cfg.sigma}; tuned on validation seed {val_seed})")
    rows = [DemoRow(metric=label, deepsci=ours[k], baseline=theirs[k], baseline_name=bname, higher_is_better=False,
                    model=model, data=data, tolerance=0.005) for label, k in _ROWS]
    metrics = {f"deepsci_{k}": ours[k] for _, k in _ROWS} | {f"baseline_{k}": theirs[k] for _, k in _ROWS}
    metrics |= {"fov_evals": summary["fov_evals"], "deepsci_segments": ours["n_segments"],
                "baseline_segments": theirs["n_segments"]}
    text = (f"Shipped models {ffn.name} and {agglo.name} (trained on synthetic seeds "
            f"{sorted(ffn.card.data.get('seeds', {}).values())}) segmented a fresh synthetic {tuple(synth['shape'])} "
            f"volume (seed {seed}) with the learned pipeline ({summary['fov_evals']} FFN FOV evaluations); the "
            "watershed baseline ran with the settings tuned on the build's validation volume.")
    return DemoResult(app="connectomics", title="Neuron segmentation: shipped FFN + learned agglomeration "
                      "vs watershed (synthetic EM)", metrics=metrics, figures=[fig], text=text, rows=rows)


def train_demo(out_dir: Path, *, quick: bool = False) -> DemoResult:
    """Run the connectomics pipeline end to end on synthetic data, training an FFN from scratch.

    Parameters
    ----------
    out_dir : Path
        Receives ``data.zarr``/``test.zarr``, ``model/``, ``segment/``, ``eval/``.
    quick : bool
        Tiny volumes and a short training run (what the tests call).

    Returns
    -------
    DemoResult
        VI split/merge, adapted Rand error and ERL of the FFN and of the
        watershed baseline on a held-out synthetic volume, with the slice figure.
    """
    from deepsci.core.training import TrainConfig

    from .config import EvaluateRun, InferenceConfig, SegmentConfig
    from .io import write_volume
    from .scoring import run_evaluation
    from .segment import segment_volume
    from .synth import synthetic_volume
    from .train import FFNTrainConfig, train_ffn

    out_dir = Path(out_dir)
    s = demo_settings(quick)
    img, lab = synthetic_volume(shape=s["train_shape"], n_neurites=s["neurites"][0], radius=s["radius"], seed=0)
    timg, tlab = synthetic_volume(shape=s["test_shape"], n_neurites=s["neurites"][1], radius=s["radius"], seed=1)
    write_volume(out_dir / "train.zarr", {"image": img, "labels": lab})
    write_volume(out_dir / "test.zarr", {"image": timg, "labels": tlab})
    cfg = FFNTrainConfig(preset="cpu", **s["ffn"], min_object_size=50,
                         train=TrainConfig(epochs=s["epochs"], steps_per_epoch=s["steps"], batch_size=8,
                                           learning_rate=s["lr"], monitor="loss", tensorboard=not quick))
    trained = train_ffn(img, lab, cfg.validate(), out_dir / "model")
    seg_cfg = SegmentConfig(inference=InferenceConfig(min_segment_size=50, **s["inference"]), block_size=s["block_size"],
                            scheduler="inline" if quick else "local", workers=None if not quick else 1)
    seg = segment_volume(out_dir / "model" / "model.keras", str(out_dir / "test.zarr:image"),
                         out_dir / "segment", seg_cfg, progress=not quick)
    scores = run_evaluation(EvaluateRun(labels=str(out_dir / "test.zarr:labels"),
                                        seg=[f"FFN={out_dir / 'segment' / 'segmentation.zarr:labels'}"],
                                        out=str(out_dir / "eval"), image=str(out_dir / "test.zarr:image"),
                                        baseline=True, min_overlap=50))
    ffn, ws = scores["FFN"], scores["watershed baseline"]
    metrics = {
        "ffn_vi_split": ffn["vi_split"], "ffn_vi_merge": ffn["vi_merge"], "ffn_vi_total": ffn["vi_total"],
        "ffn_adapted_rand": ffn["adapted_rand_error"], "ffn_erl": ffn["erl"],
        "baseline_vi_total": ws["vi_total"], "baseline_adapted_rand": ws["adapted_rand_error"],
        "baseline_erl": ws["erl"], "max_erl": ffn["max_erl"],
        "train_loss": trained["loss"], "fov_evals": seg["fov_evals"], "objects": seg["objects"],
    }
    text = (f"FFN (FOV {s['ffn']['fov_size']}, depth {s['ffn']['depth']}, {s['ffn']['features']} features) trained "
            f"{trained['steps']} steps on a synthetic {s['train_shape']} volume, segmented a held-out "
            f"{s['test_shape']} volume ({seg['blocks']} block(s), consensus of two seed orders).\n\n"
            + (out_dir / "eval" / "scores.md").read_text())
    return DemoResult(app="connectomics", title="Neuron segmentation with flood-filling networks (synthetic EM)",
                      metrics=metrics, figures=[out_dir / "eval" / "slices.png"], text=text)
