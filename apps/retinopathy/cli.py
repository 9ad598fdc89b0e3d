"""``deepsci retinopathy``: grade diabetic retinopathy in fundus photographs.

Thin layer: parse options, build one config, call the stage.  TensorFlow is
imported inside the stages, so ``--help`` stays fast.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="Diabetic-retinopathy grading of fundus photographs (Inception, ICDR 0-4, "
         "referable DR with screening operating points).",
)

Labels = Annotated[Path | None, typer.Option(
    "--labels", help="Label CSV: EyePACS trainLabels.csv, APTOS train.csv, IDRiD grading CSV, "
                     "Messidor-2 adjudicated CSV, or any CSV with --image-col/--grade-col.")]
Images = Annotated[Path | None, typer.Option(
    "--images", help="Image folder (default: the dataset's usual folder next to the CSV).")]
Fmt = Annotated[str, typer.Option(
    "--format", help="auto|eyepacs|aptos|idrid|messidor2|generic")]
ImageCol = Annotated[str | None, typer.Option(help="Generic CSV: image id column.")]
GradeCol = Annotated[str | None, typer.Option(help="Generic CSV: ICDR grade column (0-4).")]
DmeCol = Annotated[str | None, typer.Option(help="Generic CSV: referable DME column (0/1).")]
PatientCol = Annotated[str | None, typer.Option(help="Column with patient ids (split by patient).")]
Ext = Annotated[str | None, typer.Option(help="Image extension when ids have none.")]
Cache = Annotated[Path | None, typer.Option(help="Preprocessed-image cache folder.")]
Workers = Annotated[int, typer.Option(help="Preprocessing threads.")]


def _spec(labels, images, fmt, image_col, grade_col, dme_col, patient_col, ext):
    from .io import DatasetSpec

    if labels is None:
        return None
    return DatasetSpec(labels=labels, images=images, fmt=fmt, image_col=image_col,
                       grade_col=grade_col, dme_col=dme_col, patient_col=patient_col, ext=ext)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder (EyePACS layout).")],
    patients: Annotated[int, typer.Option(help="Patients (two eyes each).")] = 50,
    size: Annotated[int, typer.Option(help="Fundus diameter in pixels.")] = 512,
    seed: int = 0,
    dme_prob: Annotated[float, typer.Option(help="P(referable DME | grade >= 2).")] = 0.3,
    ungradable_frac: Annotated[float, typer.Option(help="Fraction blurred/dark.")] = 0.0,
):
    """Paint ICDR-graded lesions onto real fundus photographs (skimage.data.retina)."""
    from .synth import SynthConfig, make_dataset

    table = make_dataset(out, SynthConfig(n_patients=patients, size=size, seed=seed,
                                          dme_prob=dme_prob, ungradable_frac=ungradable_frac))
    counts = table["level"].value_counts().sort_index().to_dict()
    typer.echo(f"wrote {len(table)} images to {out}/train, labels {out}/trainLabels.csv, "
               f"grades {counts}")


@app.command()
def preprocess(
    out: Annotated[Path, typer.Option("--out", help="Output folder (cache + quality.csv).")],
    labels: Labels = None, images: Images = None, fmt: Fmt = "auto",
    image_col: ImageCol = None, grade_col: GradeCol = None, dme_col: DmeCol = None,
    patient_col: PatientCol = None, ext: Ext = None,
    size: Annotated[int, typer.Option(help="Fundus diameter after rescaling.")] = 299,
    local_contrast: Annotated[bool, typer.Option(help="Subtract a blurred copy.")] = True,
    workers: Workers = 2,
):
    """Find the field of view, crop, rescale, normalise; flag ungradable images."""
    from deepsci.core.errors import ConfigError
    from deepsci.core.io import save_config, write_run_info, write_text

    from .io import read_dataset
    from .preprocess import PreprocessConfig, preprocess_table

    spec = _spec(labels, images, fmt, image_col, grade_col, dme_col, patient_col, ext)
    if spec is None:
        raise ConfigError("expected --labels, found none")
    cfg = PreprocessConfig(size=size, local_contrast=local_contrast)
    cfg.validate()
    df = preprocess_table(read_dataset(spec), cfg, out / "cache", workers=workers)
    write_text(out / "quality.csv", df.to_csv(index=False))
    save_config(cfg, out / "config.json")
    write_run_info(out, command="retinopathy preprocess", config=cfg)
    typer.echo(f"preprocessed {len(df)} images, {int((df['gradable'] != 1).sum())} flagged "
               f"ungradable; see {out / 'quality.csv'}")


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Model directory (resumes if present).")],
    labels: Labels = None, images: Images = None, fmt: Fmt = "auto",
    image_col: ImageCol = None, grade_col: GradeCol = None, dme_col: DmeCol = None,
    patient_col: PatientCol = None, ext: Ext = None,
    size: Annotated[int, typer.Option(help="Fundus diameter / network input side.")] = 299,
    local_contrast: bool = True,
    variant: Annotated[str, typer.Option(help="small (CPU) | v3 (full Inception-v3).")] = "small",
    width: Annotated[int, typer.Option(help="Small Inception base width.")] = 32,
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 1e-3,
    lr_schedule: str = "cosine",
    seed: int = 0,
    ensemble: Annotated[int, typer.Option(help="Models from seeds seed..seed+N-1.")] = 1,
    balance: Annotated[str, typer.Option(help="weights|sampling|none")] = "weights",
    augment: bool = True,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    split_seed: int = 0,
    dme_head: Annotated[str, typer.Option(help="auto|yes|no")] = "auto",
    patience: Annotated[int | None, typer.Option(help="Early stopping on val AUC.")] = None,
    restore_best: Annotated[bool, typer.Option(
        help="Keep the best-validation epoch instead of the final weights.")] = False,
    tensorboard: bool = True,
    cache: Cache = None,
    workers: Workers = 2,
    strategy: Annotated[str, typer.Option(
        help="auto|cpu|gpu|gpu:N|mirrored|tpu|multi-worker (see `deepsci devices`).")] = "auto",
):
    """Train the Inception ensemble; choose operating points on the validation split."""
    from deepsci.core.errors import ConfigError
    from deepsci.core.training import TrainConfig

    from .preprocess import PreprocessConfig
    from .train import RetinopathyConfig, fit

    spec = _spec(labels, images, fmt, image_col, grade_col, dme_col, patient_col, ext)
    if spec is None:
        raise ConfigError("expected --labels, found none")
    cfg = RetinopathyConfig(
        data=spec, preprocess=PreprocessConfig(size=size, local_contrast=local_contrast),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr,
                          lr_schedule=lr_schedule, seed=seed, monitor="val_referable_auc",
                          mode="max", patience=patience, tensorboard=tensorboard,
                          restore_best=restore_best),
        variant=variant, width=width, ensemble=ensemble, balance=balance, augment=augment,
        val_frac=val_frac, test_frac=test_frac, split_seed=split_seed, dme_head=dme_head,
        cache_dir=cache, workers=workers, strategy=strategy).validate()
    info = fit(cfg, out)
    v = info["validation"]
    typer.echo(f"trained {len(info['members'])} model(s) in {out}; validation referable AUC "
               f"{v['auc']:.3f} (95% CI {v['auc_ci_low']:.3f}-{v['auc_ci_high']:.3f}), n={v['n']}")


def _inference(model_dir, labels, images, fmt, image_col, grade_col, dme_col, patient_col, ext,
               files, split, operating_point, cache, n_boot, workers):
    from .predict import InferenceConfig

    return InferenceConfig(
        model_dir=model_dir,
        data=_spec(labels, images, fmt, image_col, grade_col, dme_col, patient_col, ext),
        images=list(files or []), split=split, operating_point=operating_point,
        cache_dir=cache, n_boot=n_boot, workers=workers)


ModelDir = Annotated[Path, typer.Argument(help="Model directory written by train.")]
Split = Annotated[str, typer.Option(help="test|val|train|all: rows of the model's splits.csv "
                                         "(only when --labels is the training CSV).")]
OpPoint = Annotated[str, typer.Option(help="high_sensitivity | high_specificity | a threshold.")]


@app.command()
def evaluate(
    model_dir: ModelDir,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    labels: Labels = None, images: Images = None, fmt: Fmt = "auto",
    image_col: ImageCol = None, grade_col: GradeCol = None, dme_col: DmeCol = None,
    patient_col: PatientCol = None, ext: Ext = None,
    split: Split = "all",
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the AUC CI.")] = 1000,
    cache: Cache = None, workers: Workers = 2,
):
    """Referable AUC (bootstrap CI), both operating points, kappa, confusion, ROC plot."""
    from .evaluate import evaluate_dataset

    cfg = _inference(model_dir, labels, images, fmt, image_col, grade_col, dme_col,
                     patient_col, ext, None, split, "high_sensitivity", cache, n_boot, workers)
    m = evaluate_dataset(cfg, out)
    typer.echo(f"referable AUC {m['auc']:.3f} (95% CI {m['auc_ci_low']:.3f}-"
               f"{m['auc_ci_high']:.3f}), n={m['n']} ({m['n_referable']} referable); "
               f"kappa {m['kappa']:.3f}")
    for name in ("high_sensitivity", "high_specificity"):
        p = m[name]
        typer.echo(f"{name}: threshold {p['threshold']:.4f} sensitivity "
                   f"{100 * p['sensitivity']:.1f}% specificity {100 * p['specificity']:.1f}%")
    typer.echo(f"wrote {out / 'metrics.json'}, {out / 'roc.png'}, {out / 'confusion.csv'}")


@app.command()
def predict(
    model_dir: ModelDir,
    out: Annotated[Path, typer.Option("--out", help="Output folder (predictions.csv).")],
    files: Annotated[list[Path] | None, typer.Argument(help="Fundus photographs.")] = None,
    labels: Labels = None, images: Images = None, fmt: Fmt = "auto",
    image_col: ImageCol = None, grade_col: GradeCol = None, dme_col: DmeCol = None,
    patient_col: PatientCol = None, ext: Ext = None,
    split: Split = "all", operating_point: OpPoint = "high_sensitivity",
    cache: Cache = None, workers: Workers = 2,
):
    """Grade photographs: probabilities, grade, referable decision, gradability (CSV)."""
    from .predict import predict_dataset

    cfg = _inference(model_dir, labels, images, fmt, image_col, grade_col, dme_col,
                     patient_col, ext, files, split, operating_point, cache, 0, workers)
    res = predict_dataset(cfg, out)
    n_ref = int((res["referable"] == 1).sum())
    n_ungr = int((res["gradable"] == 0).sum())
    typer.echo(f"graded {len(res) - n_ungr} image(s), {n_ref} referable at "
               f"{operating_point}, {n_ungr} ungradable; wrote {out / 'predictions.csv'}")


@app.command()
def explain(
    model_dir: ModelDir,
    out: Annotated[Path, typer.Option("--out", help="Output folder (saliency/ overlays).")],
    files: Annotated[list[Path] | None, typer.Argument(help="Fundus photographs.")] = None,
    labels: Labels = None, images: Images = None, fmt: Fmt = "auto",
    image_col: ImageCol = None, grade_col: GradeCol = None, dme_col: DmeCol = None,
    patient_col: PatientCol = None, ext: Ext = None,
    split: Split = "all",
    masks: Annotated[Path | None, typer.Option(
        help="Lesion masks <image>.png (e.g. synth's masks/) to score saliency against.")] = None,
    target: Annotated[str, typer.Option(help="referable | grade")] = "referable",
    steps: Annotated[int, typer.Option(help="Integrated-gradients steps.")] = 32,
    limit: Annotated[int | None, typer.Option(help="At most this many images.")] = None,
    cache: Cache = None, workers: Workers = 2,
):
    """Integrated-gradients saliency overlays showing which lesions drove the score."""
    from .explain import explain_images

    cfg = _inference(model_dir, labels, images, fmt, image_col, grade_col, dme_col,
                     patient_col, ext, files, split, "high_sensitivity", cache, 0, workers)
    table = explain_images(cfg, out, masks_dir=masks, target=target, steps=steps, limit=limit)
    msg = f"wrote {len(table)} overlay(s) to {out / 'saliency'}"
    if "lesion_ratio" in table:
        msg += f"; median lesion/background saliency {json.dumps(round(float(table['lesion_ratio'].median()), 2))}"
    typer.echo(msg)
