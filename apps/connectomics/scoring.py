"""``deepsci connectomics evaluate``: score segmentations against ground truth, beside the watershed baseline.

The metrics are :mod:`~deepsci.apps.connectomics.evaluate`'s; this stage reads the
volumes, adds the baseline and writes the tables and the slice figure.
"""
from __future__ import annotations

from pathlib import Path

from deepsci.core.bench import table
from deepsci.core.io import write_json, write_run_info, write_text

from .baseline import watershed_baseline
from .evaluate import evaluate_segmentation, skeleton_graph
from .figures import orthogonal_slices
from .io import check_same_shape, open_volume

__all__ = ["run_evaluation"]


def run_evaluation(labels: str, segmentations: dict[str, str], out_dir, *, image: str | None = None,
                   baseline: bool = True, voxel_size=None, min_overlap: int = 100) -> dict:
    """``deepsci connectomics evaluate``: score segmentations, beside the watershed baseline.

    Parameters
    ----------
    labels : str
        Ground-truth volume spec (integer ids, 0 = unlabelled).
    segmentations : dict of str to str
        Name -> segmentation volume spec.
    image : str, optional
        The EM image; enables the orthogonal-slice figure and, with
        ``baseline=True``, a watershed baseline scored by the same code.
    out_dir : path
        Receives ``scores.json``, ``scores.md``, ``slices.png`` and ``run_info.json``.

    Returns
    -------
    dict
        Name -> :class:`SegmentationScores` as dict.
    """
    out_dir = Path(out_dir)
    gt_vol = open_volume(labels, voxel_size=voxel_size, kind="labels")
    gt = gt_vol.read()
    vs = gt_vol.voxel_size
    segs = {}
    for name, spec in segmentations.items():
        vol = open_volume(spec, kind="labels")
        check_same_shape(gt_vol, vol)
        segs[name] = vol.read()
    img = None
    if image is not None:
        img_vol = open_volume(image, voxel_size=voxel_size)
        check_same_shape(gt_vol, img_vol)
        img = img_vol.read()
        if baseline:
            segs["watershed baseline"] = watershed_baseline(img, voxel_size=vs)
    graph = skeleton_graph(gt, voxel_size=vs)
    scores = {name: evaluate_segmentation(gt, seg, voxel_size=vs, min_overlap=min_overlap, graph=graph).as_dict()
              for name, seg in segs.items()}
    rows = [{"segmentation": n, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}}
            for n, s in scores.items()]
    cols = ["segmentation", "vi_split", "vi_merge", "vi_total", "adapted_rand_error", "erl", "max_erl",
            "merges", "splits", "n_segments"]
    md = (f"Scores against `{labels}` (VI in bits, ERL in voxel-size units {tuple(vs)}; "
          "ground-truth label 0 ignored)\n\n" + table(rows, cols) + "\n")
    write_json(out_dir / "scores.json", scores)
    write_text(out_dir / "scores.md", md)
    if img is not None:
        orthogonal_slices(img, {"ground truth": gt, **segs}, out_dir / "slices.png", voxel_size=vs)
    write_run_info(out_dir, command="connectomics evaluate",
                   config={"labels": labels, "segmentations": segmentations, "image": image,
                           "baseline": baseline, "min_overlap": min_overlap},
                   extra={"scores": scores})
    return scores
