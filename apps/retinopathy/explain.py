"""The ``explain`` stage: integrated-gradients saliency of the ensemble, as overlays.

:func:`run_explain` writes ``saliency/<image>.png`` (photograph | overlay),
``saliency.csv`` and ``report.html`` (:func:`.io.write_report_html`); with
lesion masks it scores how much saliency falls on the lesions (:func:`lesion_ratio`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage as ndi

from deepsci.core.config import check_ranges, option
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import atomic_path, write_text
from deepsci.core.progress import progress
from deepsci.core.runs import RunDir

from .invalid import removed_on_error, skipped_list
from .io import IMAGE_ERRORS, load_image, write_report_html
from .model import GRADE_NAMES
from .predict import (
    GRADE_COLS,
    InferenceConfig,
    inference_table,
    open_model,
    peek_model,
    predict_arrays,
    referable_decisions,
    report_notes,
    resolve,
)
from .preprocess import (
    PreprocessConfig,
    circle_mask,
    find_fov,
    load_cached,
    preprocess_image,
    to_input,
)


def integrated_gradients(models: list, x: np.ndarray, *, target: str = "referable",
                         steps: int = 32, batch_size: int = 16) -> np.ndarray:
    """Integrated gradients of the ensemble's mean ``target`` logit.

    The baseline is 0, which after local-contrast normalisation is a fundus
    without any local structure -- no vessels, no lesions -- so attributions
    say which structures raised the score.

    Parameters
    ----------
    x : ndarray of float32, shape (N, S, S, 3)
    target : {"referable", "grade"}
        ``"grade"`` explains the expected-grade score ``sum_k k p_k``.

    Returns
    -------
    ndarray of float32, shape (N, S, S)
        Per-pixel attribution summed over channels (signed).
    """
    import tensorflow as tf

    alphas = (np.arange(steps, dtype=np.float32) + 0.5) / steps  # midpoint rule
    out = np.zeros(x.shape[:3], np.float32)
    for i in range(len(x)):
        xi = tf.constant(x[i:i + 1])
        grads = np.zeros(x.shape[1:], np.float32)
        for start in range(0, steps, batch_size):
            a = tf.constant(alphas[start:start + batch_size])[:, None, None, None]
            path = a * xi
            with tf.GradientTape() as tape:
                tape.watch(path)
                score = 0.0
                for m in models:
                    o = m(path, training=False)
                    if target == "grade":
                        score += tf.reduce_sum(tf.nn.softmax(o["grade"]) * tf.range(5.0), -1)
                    else:
                        score += o["referable"][:, 0]
            g = tape.gradient(score, path).numpy()
            grads += g.sum(0)
        out[i] = (x[i] * grads / steps).sum(-1)
    return out


def saliency_map(attr: np.ndarray, *, sigma: float | None = None) -> np.ndarray:
    """Positive evidence, smoothed and scaled to 0-1 inside the FOV, shape (S, S)."""
    size = attr.shape[0]
    sal = ndi.gaussian_filter(np.maximum(attr, 0), sigma or size / 150)
    sal[~circle_mask(size, shrink=0.95)] = 0
    return sal / (sal.max() + 1e-12)


def overlay(image: np.ndarray, sal: np.ndarray) -> np.ndarray:
    """Heat-map overlay of ``sal`` (any side, resized) on ``image`` (uint8 RGB, shape (D, D, 3)).

    Saliency is scaled by its 99th percentile rather than its maximum, so
    that every lesion that contributed is visible, not only the strongest one.
    """
    from matplotlib import colormaps

    d = image.shape[0]
    if sal.shape[0] != d:
        sal = np.asarray(Image.fromarray(sal.astype(np.float32)).resize((d, d), Image.BILINEAR))
    pos = sal[sal > 0]
    scale = np.percentile(pos, 99) if pos.size else 1.0
    v = np.clip(sal / max(scale, 1e-12), 0, 1) ** 0.7
    heat = colormaps["inferno"](v)[..., :3]
    a = v[..., None] * 0.65
    return (np.clip((1 - a) * image / 255.0 + a * heat, 0, 1) * 255).astype(np.uint8)


def lesion_ratio(sal: np.ndarray, mask: np.ndarray) -> float:
    """Mean saliency on lesions divided by mean saliency on the rest of the FOV."""
    size = sal.shape[0]
    fov = circle_mask(size, shrink=0.9)
    les = (mask > 0) & fov
    bg = ~ndi.binary_dilation(mask > 0, iterations=2) & fov
    if les.sum() == 0 or bg.sum() == 0:
        return float("nan")
    return float(sal[les].mean() / max(sal[bg].mean(), 1e-12))


def _file_name(image_id: str) -> str:
    """``image_id`` as one file name: an id from a label CSV may hold ``/`` or ``..``, which
    must not place an overlay outside ``saliency/``; a safe id is kept as it is."""
    if re.fullmatch(r"[\w][\w.\-]*", image_id) and ".." not in image_id:
        return image_id
    digest = hashlib.sha1(image_id.encode()).hexdigest()[:8]
    return re.sub(r"[^\w.\-]", "_", image_id).strip("._")[:80] + f"-{digest}"


def _crop_mask(mask_path: Path, image_path: str, size: int) -> np.ndarray:
    """A lesion label mask cropped/rescaled with the photograph's own FOV."""
    fov = find_fov(load_image(image_path))
    r = fov.radius
    box = (fov.cx - r + 0.5, fov.cy - r + 0.5, fov.cx + r + 0.5, fov.cy + r + 0.5)
    try:
        with Image.open(mask_path) as m:
            return np.asarray(m.transform((size, size), Image.EXTENT, box,
                                          resample=Image.NEAREST))
    except IMAGE_ERRORS as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise InputError(f"expected a lesion mask image, found a file that does not decode "
                         f"({first})", mask_path) from None


TARGETS = ("referable", "grade")


@dataclass
class ExplainConfig(InferenceConfig):
    """Settings of ``retinopathy explain`` (:func:`run_explain`).

    Attributes
    ----------
    masks : Path or None
        Lesion masks ``<image>.png`` (e.g. synth's ``masks/``) to score saliency against.
    target : {"referable", "grade"}
        The score explained.
    steps : int
        Integrated-gradients steps.
    limit : int or None
        At most this many images.
    select : list of str or None
        Only these image ids (Python API).
    html : bool
        Also write ``report.html`` (each photograph, its grades, both
        operating points' decisions and its overlay, on one offline page).
    """

    masks: Path | None = option(None, "Lesion masks <image>.png (e.g. synth's masks/) to score "
                                      "saliency against.")
    target: str = option("referable", "referable | grade", choices=TARGETS)
    steps: int = option(32, "Integrated-gradients steps.", min=1)
    limit: int | None = option(None, "At most this many images.", min=1)
    select: list[str] | None = field(default=None, metadata={"cli": False})
    html: bool = option(True, "Write report.html: each photograph, its grades, both operating "
                              "points' decisions and its overlay (opens offline).")

    def validate(self) -> ExplainConfig:
        """Raise :class:`ConfigError` for impossible values; return self."""
        check_ranges(self)
        return self


def _explain_one(ensemble, r, config: ExplainConfig, display: PreprocessConfig, out: Path,
                 size: int) -> dict:
    """Overlay and CSV row of one image."""
    x = to_input(load_cached([r["cache"]]))
    attr = integrated_gradients(ensemble.models, x, target=config.target, steps=config.steps)[0]
    sal = saliency_map(attr)
    shown, _, _ = preprocess_image(load_image(r["path"]), display)
    overlay_name = f"saliency/{_file_name(r['image'])}.png"
    with atomic_path(out / overlay_name) as tmp:
        Image.fromarray(np.concatenate([shown, overlay(shown, sal)], axis=1)).save(
            tmp, format="PNG")
    p = predict_arrays(ensemble, x)
    row = {"image": r["image"], **dict(zip(GRADE_COLS, map(float, p["grade"][0]), strict=True)),
           "grade": int(p["grade"][0].argmax()), "p_referable": float(p["referable"][0]),
           **({"p_dme": float(p["dme"][0])} if "dme" in p else {}),
           "overlay": overlay_name}
    if config.masks is not None:
        mp = Path(config.masks) / f"{r['image']}.png"
        if not mp.is_file():
            raise InputError("expected a lesion mask for the image, found none", mp)
        row["lesion_ratio"] = lesion_ratio(sal, _crop_mask(mp, r["path"], size))
    return row


def _with_decisions(table: pd.DataFrame, df: pd.DataFrame, points: dict) -> pd.DataFrame:
    """``table`` (rows of :func:`_explain_one`, aligned with ``df``) plus the decision at each
    operating point, ``gradable`` and ``quality``; no grade or decision where ungradable."""
    if table.empty:
        return table
    gradable = df["gradable"].astype(int) == 1
    table["grade"] = table["grade"].astype("Int64").mask(~gradable)
    at = table.columns.get_loc("p_referable") + 1
    decisions = referable_decisions(table["p_referable"], gradable, points)
    table = pd.concat([table.iloc[:, :at], decisions, table.iloc[:, at:]], axis=1)
    return table.assign(gradable=gradable.astype(int), quality=df["reasons"])


def run_explain(config: ExplainConfig, *, overwrite: bool = False) -> pd.DataFrame:
    """Write ``saliency/<image>.png`` overlays, ``saliency.csv`` and ``report.html``.

    Per image the CSV gives the grade probabilities, the grade, the referable
    probability and decision at each of the model's operating points
    (``referable_<name>``; grade and decisions empty for a photograph flagged
    ungradable, whose saliency is still drawn), ``gradable`` and the overlay's
    file. With ``masks`` (lesion masks named ``<image>.png``, e.g. from
    ``synth``) it also gives the lesion/background saliency ratio per image.
    ``select`` keeps only those image ids; ``limit`` the first ones.
    """
    config.validate()
    config = resolve(config)
    if Path(config.model).suffix == ".tflite":
        raise ConfigError("expected a .keras model for explain (integrated gradients need the "
                          f"model's gradients, which a LiteRT file cannot give), found {config.model}")
    if config.masks is not None and not Path(config.masks).is_dir():
        raise InputError("expected a folder of lesion masks, found "
                         + ("a file" if Path(config.masks).exists() else "nothing"), config.masks)
    config, card, info = peek_model(config)
    preprocessing = card.preprocessing
    size = preprocessing["size"]
    # Clinicians look at the photograph, not the network's contrast-normalised
    # input, and at no less than 448 px whatever the training size.
    display = dataclasses.replace(PreprocessConfig(**preprocessing), local_contrast=False,
                                  size=max(448, size))
    with removed_on_error(config.out, "retinopathy explain"), RunDir(
            config.out, command="retinopathy explain", config=config, inputs=config.inputs(),
            overwrite=overwrite) as run:
        df = inference_table(config, preprocessing)
        _, ensemble, info = open_model(config)
        skipped = skipped_list(df)
        notes = report_notes(ensemble.card, df.loc[df["skipped"] == "", "path"].tolist())
        if skipped:
            notes.append(f"{len(skipped)} unreadable photograph(s) skipped: "
                         + "; ".join(f"{r['image']} ({r['reason']})" for r in skipped))
        df = df[df["cache"] != ""].reset_index(drop=True)
        if config.select is not None:
            df = df[df["image"].isin(list(config.select))].reset_index(drop=True)
        if config.limit:
            df = df.iloc[:config.limit]
        run.file("saliency").mkdir(exist_ok=True)
        rows = [_explain_one(ensemble, r, config, display, run.path, size)
                for _, r in progress(df.iterrows(), total=len(df), desc="explain", unit="img")]
        table = _with_decisions(pd.DataFrame(rows), df, info["operating_points"])
        write_text(run.file("saliency.csv"), table.to_csv(index=False, float_format="%.9g"))
        if config.html:
            write_report_html(run.file("report.html"), table.assign(path=df["path"]),
                              title=f"retinopathy explain: {Path(config.model).name}",
                              points=info["operating_points"], grade_names=GRADE_NAMES,
                              notes=notes, folder=run.path)
        run.record(images=len(table), skipped=skipped)
        table.attrs["skipped"] = skipped
        if "lesion_ratio" in table and table["lesion_ratio"].notna().any():
            run.record(median_lesion_ratio=float(table["lesion_ratio"].median()))
    return table
