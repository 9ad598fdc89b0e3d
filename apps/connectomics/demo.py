"""Demo: synthetic EM volume -> train an FFN -> blockwise segmentation -> scores beside watershed."""
from __future__ import annotations

from pathlib import Path

from deepsci.core.report import DemoResult

__all__ = ["run_demo", "demo_settings"]


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


def run_demo(out_dir: Path, *, quick: bool = False) -> DemoResult:
    """Run the connectomics pipeline end to end on synthetic data.

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
