"""Inference with a trained ensemble: predict, evaluate, explain.

* :func:`predict_dataset` -- per-image grade probabilities, referable
  probability and decision at an operating point, gradability flag (CSV).
* :func:`evaluate_dataset` -- referable AUC with bootstrap CI, sensitivity and
  specificity at the validation-chosen operating points, quadratic kappa,
  confusion matrix, ROC plot.
* :func:`explain_images` -- integrated-gradients saliency overlays.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage as ndi

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import (
    atomic_path,
    read_json,
    save_config,
    write_json,
    write_run_info,
    write_text,
)
from deepsci.core.progress import progress

from .evaluate import OperatingPoint, plot_roc, screening_report
from .io import DatasetSpec, load_image, read_dataset, referable
from .preprocess import PreprocessConfig, circle_mask, find_fov, preprocess_table

GRADE_COLS = [f"p_grade{k}" for k in range(5)]


def load_ensemble(model_dir: str | Path, *, members: list[str] | None = None):
    """Load every member of a trained ensemble (``safe_mode=True``).

    Returns
    -------
    models : list of keras.Model
    info : dict
        ``ensemble.json`` (empty while training has not finished).
    """
    from deepsci.core.models.serialization import load_model

    model_dir = Path(model_dir)
    info = {}
    if members is None:
        if not (model_dir / "ensemble.json").is_file():
            raise InputError("expected a model directory written by `retinopathy train` "
                             "(ensemble.json), found none", model_dir)
        info = read_json(model_dir / "ensemble.json")
        members = info["members"]
    models = []
    for m in members:
        model, _ = load_model(model_dir / m)
        models.append(model)
    return models, info


def _load_cached(paths: list[str]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 preprocessed images (N, S, S, 3) -> float32 network input in [-1, 1]."""
    return images.astype(np.float32) / 127.5 - 1.0


def predict_arrays(models: list, x: np.ndarray, *, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Average the members' probabilities.

    Parameters
    ----------
    models : list of keras.Model
    x : ndarray of float32, shape (N, S, S, 3)

    Returns
    -------
    dict
        ``grade`` (N, 5) softmax, ``referable`` (N,) and, when the models have
        a DME head, ``dme`` (N,) sigmoid probabilities.
    """
    import tensorflow as tf

    sums: dict[str, np.ndarray] = {}
    for model in models:
        for start in range(0, len(x), batch_size):
            out = model(x[start:start + batch_size], training=False)
            probs = {"grade": tf.nn.softmax(out["grade"]).numpy(),
                     "referable": tf.sigmoid(out["referable"]).numpy()[:, 0]}
            if "dme" in out:
                probs["dme"] = tf.sigmoid(out["dme"]).numpy()[:, 0]
            for k, v in probs.items():
                sums.setdefault(k, np.zeros((len(x),) + v.shape[1:], np.float64))
                sums[k][start:start + len(v)] += v
    return {k: v / len(models) for k, v in sums.items()}


def predict_images(models: list, cache_paths: list[str], size: int, *,
                   batch_size: int = 32) -> dict[str, np.ndarray]:
    """:func:`predict_arrays` over cached preprocessed PNGs, loaded chunk by chunk."""
    chunks: dict[str, list] = {}
    for start in range(0, len(cache_paths), 256):
        x = to_input(_load_cached(cache_paths[start:start + 256]))
        for k, v in predict_arrays(models, x, batch_size=batch_size).items():
            chunks.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in chunks.items()}


@dataclass
class InferenceConfig:
    """Settings of ``predict``/``evaluate``/``explain``.

    Parameters
    ----------
    model_dir : Path
        A directory written by ``train``.
    data : DatasetSpec or None
        Labelled images (evaluate) -- or, for predict/explain, optionally a
        labelled set; otherwise ``images`` lists files.
    images : list of Path
        Unlabelled image files (predict/explain).
    split : str
        With ``data`` from training: keep only this split of ``splits.csv``
        (``test``, ``val``, ``train`` or ``all``).
    operating_point : str
        ``high_sensitivity``, ``high_specificity`` or a probability threshold.
    cache_dir : Path or None
    n_boot : int
        Bootstrap resamples for the AUC interval.
    """

    model_dir: Path
    data: DatasetSpec | None = None
    images: list[Path] = dataclasses.field(default_factory=list)
    split: str = "all"
    operating_point: str = "high_sensitivity"
    cache_dir: Path | None = None
    n_boot: int = 1000
    workers: int = 2


def _threshold(info: dict, spec: str) -> tuple[str, float]:
    points = info.get("operating_points", {})
    if spec in points:
        return spec, float(points[spec]["threshold"])
    try:
        t = float(spec)
    except ValueError:
        raise ConfigError(f"expected operating point {sorted(points)} or a probability, "
                          f"found {spec!r}") from None
    if not 0 <= t <= 1:
        raise ConfigError(f"expected a threshold in [0, 1], found {t}")
    return "threshold", t


def _table(config: InferenceConfig, info: dict, out_dir: Path) -> pd.DataFrame:
    """The images to run on, preprocessed with the models' own settings."""
    if config.data is not None:
        df = read_dataset(config.data)
        if config.split != "all":
            splits = config.model_dir / "splits.csv"
            if not splits.is_file():
                raise InputError("expected splits.csv written by train, found none", splits)
            s = pd.read_csv(splits, dtype={"image": str})
            df = df.merge(s[["image", "split"]], on="image", how="left")
            df = df[df["split"] == config.split].reset_index(drop=True)
            if len(df) == 0:
                raise InputError(f"expected images of split {config.split!r}, found none", splits)
    else:
        if not config.images:
            raise ConfigError("expected image files or --labels, found neither")
        for p in config.images:
            if not Path(p).is_file():
                raise InputError("expected an image file, found nothing", p)
        df = pd.DataFrame({"image": [Path(p).stem for p in config.images],
                           "path": [str(Path(p).absolute()) for p in config.images],
                           "grade": -1, "dme": -1})
    pp = PreprocessConfig(**info["preprocessing"])
    cache = Path(config.cache_dir) if config.cache_dir else config.model_dir / "cache"
    return preprocess_table(df, pp, cache, workers=config.workers)


def _probabilities(models, df: pd.DataFrame, size: int) -> pd.DataFrame:
    ok = (df["cache"] != "").to_numpy()
    out = pd.DataFrame(index=df.index, columns=GRADE_COLS + ["p_referable"], dtype=float)
    if ok.any():
        probs = predict_images(models, df.loc[ok, "cache"].tolist(), size)
        out.loc[ok, GRADE_COLS] = probs["grade"]
        out.loc[ok, "p_referable"] = probs["referable"]
        if "dme" in probs:
            out.loc[ok, "p_dme"] = probs["dme"]
    return out


def predict_dataset(config: InferenceConfig, out_dir: str | Path) -> pd.DataFrame:
    """Write ``predictions.csv``: per image the grade probabilities, predicted grade,
    referable probability, referable decision at the operating point and
    gradability.  Ungradable images are flagged and get no grade or decision.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models, info = load_ensemble(config.model_dir)
    name, thr = _threshold(info, config.operating_point)
    df = _table(config, info, out)
    probs = _probabilities(models, df, info["preprocessing"]["size"])
    res = pd.concat([df[["image"]], probs], axis=1)
    gradable = df["gradable"].astype(int) == 1
    res["grade"] = np.where(gradable, probs[GRADE_COLS].fillna(0).to_numpy().argmax(1), -1)
    res["referable"] = np.where(gradable, (probs["p_referable"].fillna(0) >= thr).astype(int), -1)
    res["gradable"] = gradable.astype(int)
    res["quality"] = df["reasons"]
    res["operating_point"] = name
    res["threshold"] = thr
    # Empty cells, not numbers, where no grade was given.
    for col in ("grade", "referable"):
        res[col] = res[col].astype("Int64").mask(~gradable)
    write_text(out / "predictions.csv", res.to_csv(index=False, float_format="%.5f"))
    save_config(config, out / "config.json")
    write_run_info(out, command="retinopathy predict", config=config)
    return res


def evaluate_dataset(config: InferenceConfig, out_dir: str | Path) -> dict:
    """Score the ensemble on a labelled set; write ``metrics.json``, ``roc.png``,
    ``confusion.csv`` and ``predictions.csv``.

    Operating points come unchanged from the validation set (``ensemble.json``).
    Ungradable or unlabelled images are counted and excluded from the metrics.
    """
    if config.data is None:
        raise ConfigError("expected --labels for evaluate, found none")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models, info = load_ensemble(config.model_dir)
    df = _table(config, info, out)
    probs = _probabilities(models, df, info["preprocessing"]["size"])
    keep = ((df["gradable"].astype(int) == 1) & (df["grade"] >= 0)).to_numpy()
    if keep.sum() == 0:
        raise InputError("expected gradable labelled images, found none", config.data.labels)
    y_ref = referable(df["grade"].to_numpy(), df["dme"].to_numpy())[keep]
    points = {k: OperatingPoint(**v) for k, v in info["operating_points"].items()}
    metrics = screening_report(y_ref, probs["p_referable"].to_numpy(float)[keep],
                               df["grade"].to_numpy()[keep],
                               probs[GRADE_COLS].to_numpy(float)[keep], points,
                               n_boot=config.n_boot)
    metrics["n_ungradable_excluded"] = int((~keep).sum())
    metrics["split"] = config.split
    write_json(out / "metrics.json", metrics)
    cm = pd.DataFrame(metrics["confusion"], index=[f"true_{k}" for k in range(5)],
                      columns=[f"pred_{k}" for k in range(5)])
    write_text(out / "confusion.csv", cm.to_csv())
    plot_roc(y_ref, probs["p_referable"].to_numpy(float)[keep], points, out / "roc.png")
    res = pd.concat([df[["image", "grade", "dme"]], probs], axis=1)
    res["referable_true"] = referable(df["grade"].to_numpy(), df["dme"].to_numpy())
    res["gradable"] = df["gradable"]
    write_text(out / "predictions.csv", res.to_csv(index=False, float_format="%.5f"))
    save_config(config, out / "config.json")
    write_run_info(out, command="retinopathy evaluate", config=config)
    return metrics


# ------------------------------------------------------------------ saliency


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
    df = _table(config, info, out)
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
        x = to_input(_load_cached([r["cache"]]))
        attr = integrated_gradients(models, x, target=target, steps=steps)[0]
        sal = saliency_map(attr)
        from .preprocess import preprocess_image

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
