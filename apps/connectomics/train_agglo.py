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

from deepsci.core.runs import RunDir

from .agglomerate import pair_scores
from .baseline import boundary_map, supervoxels
from .config import TrainAggloRun
from .io import check_same_shape, open_volume
from .predict import load_flood_filler, model_card, normalise
from .rag import FEATURES, fit_pair_classifier, training_examples

__all__ = ["TrainAggloRun", "run_train_agglo"]


def run_train_agglo(cfg: TrainAggloRun, *, overwrite: bool = False) -> dict:
    """Fit the pair classifier on a labelled volume; write ``<out>/pair_classifier.json`` and ``run.json``.

    Parameters
    ----------
    cfg : TrainAggloRun
        Image, ground truth, optional FFN model and un-agglomerated segmentation; its preset's
        supervoxel, box and contact settings (resolved first, then recorded).

    Returns
    -------
    dict
        ``classifier`` (path), ``examples``, ``joins``, ``pairs_scored``, ``supervoxels``, ``seconds``.
    """
    t0 = time.perf_counter()
    cfg = cfg.resolved()
    icfg = cfg.inference
    vols = [open_volume(cfg.image, voxel_size=cfg.voxel_size), open_volume(cfg.labels, kind="labels")]
    check_same_shape(vols[0], vols[1])
    if cfg.seg is not None:
        vols.append(open_volume(cfg.seg, kind="labels"))
        check_same_shape(vols[0], vols[2])
    card = model_card(cfg.model) if cfg.model is not None else None
    img, gt = vols[0].read(), vols[1].read()
    with RunDir(cfg.out, command="connectomics train-agglo", config=cfg, overwrite=overwrite,
                inputs=[v.spec.split(":")[0] for v in vols] + ([cfg.model] if card else [])) as run:
        bmap = boundary_map(img, sigma=icfg.boundary_sigma)
        lab = vols[2].read() if cfg.seg is not None else supervoxels(img, bmap, icfg, voxel_size=vols[0].voxel_size)
        pairs, features = None, [f for f in FEATURES if not f.startswith("ffn")]
        if card is not None:
            ff, card = load_flood_filler(cfg.model)
            pre = card.preprocessing
            pairs = pair_scores(lab, normalise(img, pre["image_mean"], pre["image_stddev"]), ff, icfg,
                                icfg.agglomeration, bmap)
            features = list(FEATURES)
        x, y = training_examples(lab, bmap, gt, ffn_pairs=pairs)
        clf = fit_pair_classifier(x, y, features, kind=cfg.kind)
        clf.save(run.file("pair_classifier.json"))
        summary = {"classifier": str(run.file("pair_classifier.json")), "examples": int(len(y)),
                   "joins": int(y.sum()), "pairs_scored": len(pairs or ()), "supervoxels": int(lab.max()),
                   "seconds": round(time.perf_counter() - t0, 2)}
        run.record(**summary)
    return summary
