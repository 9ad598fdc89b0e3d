"""``deepsci connectomics train-agglo``: fit the pair classifier of the learned agglomeration.

The training half of the ``learned`` pipeline (``segment --preset learned``):
supervoxels of a labelled volume (given, or made here with the preset's
settings), the FFN's pair recoveries on their contacts (when a model is given),
examples from the initial edges and an oracle agglomeration
(:func:`~deepsci.apps.connectomics.rag.training_examples`), and a random forest
(or logistic regression) fitted on them.
"""
from __future__ import annotations

import time
from pathlib import Path

from deepsci.core.io import save_config, write_run_info

from .agglomerate import pair_scores
from .baseline import boundary_map, supervoxels
from .config import InferenceConfig, preset_inference
from .io import check_same_shape, open_volume
from .predict import load_flood_filler, normalise
from .rag import FEATURES, fit_pair_classifier, training_examples

__all__ = ["run_train_agglo"]


def run_train_agglo(model: str | Path | None, image: str, labels: str, out: str | Path, *, seg: str | None = None,
                    icfg: InferenceConfig | None = None, kind: str = "forest", voxel_size=None) -> dict:
    """Fit the pair classifier on a labelled volume; write ``<out>/pair_classifier.json``.

    Parameters
    ----------
    model : path, optional
        FFN ``model.keras`` for the two recovery features; ``None``: boundary and size features only.
    image, labels : str
        ``PATH[:INNER]`` of the EM image and its ground truth, of one shape.
    seg : str, optional
        An un-agglomerated segmentation of ``image`` (``segment --preset supervoxels``);
        ``None``: the supervoxels of ``icfg`` are made here.
    icfg : InferenceConfig, optional
        Supervoxel settings, box radius and minimum contact of the FFN pair runs, movement /
        segment thresholds and batch size (use the same at inference); default: the ``learned`` preset's.
    kind : {"forest", "logistic"}
        Classifier type (:func:`~deepsci.apps.connectomics.rag.fit_pair_classifier`).

    Returns
    -------
    dict
        ``classifier`` (path), ``examples``, ``joins``, ``pairs_scored``, ``seconds``.
    """
    t0 = time.perf_counter()
    icfg = (icfg or preset_inference("learned", training=True)).validate()
    agg = icfg.agglomeration.validate()
    vols = [open_volume(image, voxel_size=voxel_size), open_volume(labels, kind="labels")]
    check_same_shape(vols[0], vols[1])
    if seg is not None:
        vols.append(open_volume(seg, kind="labels"))
        check_same_shape(vols[0], vols[2])
    img, gt = vols[0].read(), vols[1].read()
    bmap = boundary_map(img, sigma=icfg.boundary_sigma)
    lab = vols[2].read() if seg is not None else supervoxels(img, bmap, icfg, voxel_size=vols[0].voxel_size)
    pairs, features = None, [f for f in FEATURES if not f.startswith("ffn")]
    if model is not None:
        ff, side = load_flood_filler(model)
        pre = side["preprocessing"]
        pairs = pair_scores(lab, normalise(img, pre["image_mean"], pre["image_stddev"]), ff, icfg, agg, bmap)
        features = list(FEATURES)
    x, y = training_examples(lab, bmap, gt, ffn_pairs=pairs)
    clf = fit_pair_classifier(x, y, features, kind=kind)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clf.save(out / "pair_classifier.json")
    summary = {"classifier": str(out / "pair_classifier.json"), "examples": int(len(y)), "joins": int(y.sum()),
               "pairs_scored": len(pairs or ()), "supervoxels": int(lab.max()),
               "seconds": round(time.perf_counter() - t0, 2)}
    save_config(icfg, out / "config.json")
    write_run_info(out, command="connectomics train-agglo", config=icfg,
                   extra={"model": None if model is None else str(model), "image": image, "labels": labels,
                          "seg": seg, "kind": kind, "result": summary})
    return summary
