"""``deepsci connectomics evaluate``: score segmentations against ground truth, beside the watershed baseline.

The metrics are :mod:`~deepsci.apps.connectomics.evaluate`'s, under its one label-0
rule (:data:`~deepsci.apps.connectomics.evaluate.CONVENTIONS`); this stage reads the
volumes, adds the baseline and writes the tables and the slice figure.
"""
from __future__ import annotations

import csv
import io

from deepsci.core.bench import table
from deepsci.core.errors import InputError
from deepsci.core.io import write_json, write_text
from deepsci.core.runs import RunDir

from .baseline import watershed_baseline
from .config import EvaluateRun
from .evaluate import (
    CONVENTIONS,
    LABEL_ZERO_RULE,
    SEGMENT_COLUMNS,
    evaluate_segmentation,
    segment_table,
    skeleton_graph,
)
from .figures import orthogonal_slices
from .io import check_same_shape, open_volume

__all__ = ["EvaluateRun", "run_evaluation", "segments_csv"]


def _read(cfg: EvaluateRun) -> tuple:
    """(ground truth, voxel size, name -> segmentation, image or None, name -> why skipped), one shape."""
    gt_vol = open_volume(cfg.labels, voxel_size=cfg.voxel_size, kind="labels")
    segs, skipped = {}, {}
    for name, spec in cfg.named().items():
        try:
            vol = open_volume(spec, kind="labels")
            check_same_shape(gt_vol, vol)
            segs[name] = vol.read()
        except InputError as e:
            if not cfg.skip_invalid:
                raise
            skipped[name] = str(e)
    if not segs:
        raise InputError(f"expected at least one readable --seg, found none ({len(skipped)} skipped)", cfg.labels)
    img = None
    if cfg.image is not None:
        img_vol = open_volume(cfg.image, voxel_size=cfg.voxel_size)
        check_same_shape(gt_vol, img_vol)
        img = img_vol.read()
    return gt_vol.read(), gt_vol.voxel_size, segs, img, skipped


def segments_csv(gt, segs: dict, *, min_overlap: int) -> str:
    """``segments.csv``: :func:`~.evaluate.segment_table` of every segmentation, a ``segmentation`` column first."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["segmentation", *SEGMENT_COLUMNS], lineterminator="\n")
    writer.writeheader()
    for name, seg in segs.items():
        writer.writerows({"segmentation": name, **row} for row in segment_table(gt, seg, min_overlap=min_overlap))
    return buf.getvalue()


def run_evaluation(cfg: EvaluateRun, *, overwrite: bool = False) -> dict:
    """``deepsci connectomics evaluate``: score segmentations, beside the watershed baseline.

    Parameters
    ----------
    cfg : EvaluateRun
        Ground truth, segmentations, and the EM image that enables the orthogonal-slice
        figure and (with ``cfg.baseline``) a watershed baseline scored by the same code.
        ``cfg.out`` receives ``scores.json`` (name -> scores), ``metrics.json`` (``conventions``,
        how each number is computed, and ``scores``), ``scores.md`` (the table, with the
        label-0 rule in one line), ``segments.csv`` (one row per segment of every segmentation:
        size, bounding box and ground-truth partners, :func:`~.evaluate.segment_table`),
        ``slices.png`` and ``run.json``.

    Returns
    -------
    dict
        Name -> :class:`~deepsci.apps.connectomics.evaluate.SegmentationScores` as dict.
    """
    gt, vs, segs, img, skipped = _read(cfg)
    if img is not None and cfg.baseline:
        segs["watershed baseline"] = watershed_baseline(img, voxel_size=vs)
    graph = skeleton_graph(gt, voxel_size=vs)
    scores = {name: evaluate_segmentation(gt, seg, voxel_size=vs, min_overlap=cfg.min_overlap, graph=graph).as_dict()
              for name, seg in segs.items()}
    rows = [{"segmentation": n, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}}
            for n, s in scores.items()]
    cols = ["segmentation", "vi_split", "vi_merge", "vi_total", "adapted_rand_error", "erl", "max_erl",
            "merged_skeleton_fraction", "merges", "splits", "n_segments", "unclaimed_voxels"]
    md = (f"Scores against `{cfg.labels}` (VI in bits, ERL in voxel-size units {tuple(vs)}, next to its "
          f"maximum, the ground truth's own ERL)\n\n{LABEL_ZERO_RULE}.\n\n" + table(rows, cols) + "\n")
    inputs = [s.split(":")[0] for s in (cfg.labels, *cfg.named().values(), cfg.image) if s]
    with RunDir(cfg.out, command="connectomics evaluate", config=cfg, overwrite=overwrite, inputs=inputs) as run:
        write_json(run.file("scores.json"), scores)
        write_json(run.file("metrics.json"), {"conventions": CONVENTIONS, "scores": scores})
        write_text(run.file("scores.md"), md)
        write_text(run.file("segments.csv"), segments_csv(gt, segs, min_overlap=cfg.min_overlap))
        if img is not None:
            orthogonal_slices(img, {"ground truth": gt, **segs}, run.file("slices.png"), voxel_size=vs)
        run.record(scores=scores, conventions=CONVENTIONS, skipped=skipped)
    return scores
