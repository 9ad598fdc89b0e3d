"""The ``explain`` stage: integrated-gradients saliency of the ensemble, as overlays.

:func:`explain_images` writes ``saliency/<image>.png`` (photograph | overlay)
and ``saliency.csv``; with lesion masks it scores how much saliency falls on
the lesions (:func:`lesion_ratio`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage as ndi

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import atomic_path, save_config, write_run_info, write_text
from deepsci.core.progress import progress

from .io import load_image
from .predict import InferenceConfig, inference_table, load_ensemble, predict_arrays
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


def _crop_mask(mask_path: Path, image_path: str, size: int) -> np.ndarray:
    """A lesion label mask cropped/rescaled with the photograph's own FOV."""
    fov = find_fov(load_image(image_path))
    m = Image.open(mask_path)
    r = fov.radius
    box = (fov.cx - r + 0.5, fov.cy - r + 0.5, fov.cx + r + 0.5, fov.cy + r + 0.5)
    return np.asarray(m.transform((size, size), Image.EXTENT, box, resample=Image.NEAREST))


def explain_images(config: InferenceConfig, out_dir: str | Path, *,
                   masks_dir: Path | None = None, target: str = "referable",
                   steps: int = 32, limit: int | None = None,
                   select: list[str] | None = None) -> pd.DataFrame:
    """Write ``saliency/<image>.png`` overlays and ``saliency.csv``.

    With ``masks_dir`` (lesion masks named ``<image>.png``, e.g. from ``synth``)
    the CSV also gives the lesion/background saliency ratio per image.
    ``select`` keeps only those image ids; ``limit`` the first ones.
    """
    if target not in ("referable", "grade"):
        raise ConfigError(f"expected target referable|grade, found {target!r}")
    out = Path(out_dir)
    (out / "saliency").mkdir(parents=True, exist_ok=True)
    models, info = load_ensemble(config.model_dir)
    df = inference_table(config, info)
    df = df[df["cache"] != ""].reset_index(drop=True)
    if select is not None:
        df = df[df["image"].isin(list(select))].reset_index(drop=True)
    if limit:
        df = df.iloc[:limit]
    size = info["preprocessing"]["size"]
    # Clinicians look at the photograph, not the network's contrast-normalised
    # input, and at no less than 448 px whatever the training size.
    display = dataclasses.replace(PreprocessConfig(**info["preprocessing"]), local_contrast=False,
                                  size=max(448, size))
    rows = []
    for _, r in progress(df.iterrows(), total=len(df), desc="explain", unit="img"):
        x = to_input(load_cached([r["cache"]]))
        attr = integrated_gradients(models, x, target=target, steps=steps)[0]
        sal = saliency_map(attr)
        shown, _, _ = preprocess_image(load_image(r["path"]), display)
        with atomic_path(out / "saliency" / f"{r['image']}.png") as tmp:
            Image.fromarray(np.concatenate([shown, overlay(shown, sal)], axis=1)).save(
                tmp, format="PNG")
        p = predict_arrays(models, x)
        row = {"image": r["image"], "p_referable": float(p["referable"][0]),
               "grade": int(p["grade"][0].argmax()), "overlay": f"saliency/{r['image']}.png"}
        if masks_dir is not None:
            mp = Path(masks_dir) / f"{r['image']}.png"
            if not mp.is_file():
                raise InputError("expected a lesion mask for the image, found none", mp)
            row["lesion_ratio"] = lesion_ratio(sal, _crop_mask(mp, r["path"], size))
        rows.append(row)
    table = pd.DataFrame(rows)
    write_text(out / "saliency.csv", table.to_csv(index=False, float_format="%.4f"))
    save_config(config, out / "config.json")
    write_run_info(out, command="retinopathy explain", config=config)
    return table
