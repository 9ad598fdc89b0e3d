"""``deepsci retinopathy``: grade diabetic retinopathy in fundus photographs.

Thin layer: each command is built from its stage's config dataclass
(:func:`deepsci.core.cli.config_command`), so every default is declared once,
there; ``--config run.json`` re-runs a recorded run.  TensorFlow is imported
inside the stages.
"""
from __future__ import annotations

import inspect
import json
import typing

import typer

from deepsci.core.cli import RunOptions, config_command
from deepsci.core.compress import ExportConfig

from .compress import DistillConfig
from .evaluate import EvaluateConfig
from .explain import ExplainConfig
from .predict import PredictConfig
from .preprocess import PreprocessRunConfig
from .synth import SynthConfig
from .train import RetinopathyConfig

app = typer.Typer(
    no_args_is_help=True,
    help="Diabetic-retinopathy grading of fundus photographs (Inception, ICDR 0-4, "
         "referable DR with screening operating points).",
)

#: Dataset options every command that reads a label CSV lists in --help.
DATA = ["labels", "images", "format"]


def _variadic(name: str, param: str, help_text: str) -> None:
    """Let the positional ``param`` of command ``name`` take any number of values.

    The core builds positionals from comma-separated fields; photographs are
    passed as separate arguments (``photos/*.jpeg``), so the parameter is
    re-declared as a list of paths, which the core's list field accepts as is.
    """
    info = next(c for c in app.registered_commands if c.name == name)
    sig = inspect.signature(info.callback)
    params = [p.replace(default=typer.Argument(None, help=help_text, show_default=False,
                                               metavar=param.upper()),
                        annotation=typing.Optional[list[str]])  # noqa: UP045 - typer reads it
              if p.name == param else p for p in sig.parameters.values()]
    info.callback.__signature__ = sig.replace(parameters=params)
    info.callback.__annotations__[param] = typing.Optional[list[str]]  # noqa: UP045


@config_command(app, SynthConfig, name="synth", arguments=["out"],
                shown=["patients", "size", "seed", "dme-prob", "ungradable-frac"])
def synth(cfg: SynthConfig, opts: RunOptions) -> None:
    """Paint ICDR-graded lesions onto real fundus photographs (skimage.data.retina)."""
    from .synth import run_synth

    table = run_synth(cfg, overwrite=opts.overwrite)
    counts = table["level"].value_counts().sort_index().to_dict()
    typer.echo(f"wrote {len(table)} images to {cfg.out}/train, labels {cfg.out}/trainLabels.csv, "
               f"grades {counts}")


@config_command(app, PreprocessRunConfig, name="preprocess",
                shown=["out", *DATA, "size", "local-contrast", "workers"])
def preprocess(cfg: PreprocessRunConfig, opts: RunOptions) -> None:
    """Find the field of view, crop, rescale, normalise; flag ungradable images."""
    from .preprocess import run_preprocess

    df = run_preprocess(cfg, overwrite=opts.overwrite)
    typer.echo(f"preprocessed {len(df)} images, {int((df['gradable'] != 1).sum())} flagged "
               f"ungradable; see {cfg.out / 'quality.csv'}")


@config_command(app, RetinopathyConfig, name="train", exclude=["train.progress"],
                shown=["labels", "out", "size", "variant", "width", "epochs", "batch-size", "lr",
                       "seed", "ensemble"])
def train(cfg: RetinopathyConfig, opts: RunOptions) -> None:
    """Train the Inception ensemble; choose operating points on the validation split."""
    from .train import run_train

    info = run_train(cfg, overwrite=opts.overwrite)
    v = info["validation"]
    typer.echo(f"trained {len(info['members'])} model(s) in {cfg.out}; validation referable AUC "
               f"{v['auc']:.3f} (95% CI {v['auc_ci_low']:.3f}-{v['auc_ci_high']:.3f}), n={v['n']}")


@config_command(app, EvaluateConfig, name="evaluate", exclude=["files"],
                shown=["model", "out", *DATA, "split", "n-boot", "cache", "workers"])
def evaluate(cfg: EvaluateConfig, opts: RunOptions) -> None:
    """Referable AUC (bootstrap CI), both operating points, kappa, confusion, ROC plot."""
    from .evaluate import run_evaluate

    m = run_evaluate(cfg, overwrite=opts.overwrite)
    typer.echo(f"referable AUC {m['auc']:.3f} (95% CI {m['auc_ci_low']:.3f}-"
               f"{m['auc_ci_high']:.3f}), n={m['n']} ({m['n_referable']} referable); "
               f"kappa {m['kappa']:.3f}")
    for name in ("high_sensitivity", "high_specificity"):
        p = m[name]
        typer.echo(f"{name}: threshold {p['threshold']:.4f} sensitivity "
                   f"{100 * p['sensitivity']:.1f}% specificity {100 * p['specificity']:.1f}%")
    out = cfg.out
    typer.echo(f"wrote {out / 'metrics.json'}, {out / 'roc.png'}, {out / 'confusion.csv'}")


@config_command(app, PredictConfig, name="predict", arguments=["files"],
                shown=["model", "out", *DATA, "split", "operating-point", "html", "cache",
                       "workers"])
def predict(cfg: PredictConfig, opts: RunOptions) -> None:
    """Grade photographs: probabilities, grade, referable decisions, gradability (CSV + HTML page)."""
    from .predict import run_predict

    res = run_predict(cfg, overwrite=opts.overwrite)
    n_ref = int((res["referable"] == 1).sum())
    n_ungr = int((res["gradable"] == 0).sum())
    n_skip = int((res["skipped"] != "").sum()) if "skipped" in res else 0
    typer.echo(f"graded {int((res['gradable'] == 1).sum())} image(s), {n_ref} referable at "
               f"{cfg.operating_point}, {n_ungr} ungradable"
               + (f", {n_skip} unreadable skipped" if n_skip else "")
               + f"; wrote {cfg.out / 'predictions.csv'}"
               + (f" and {cfg.out / 'report.html'}" if cfg.html else ""))


@config_command(app, ExplainConfig, name="explain", arguments=["files"],
                shown=["model", "out", "labels", "split", "masks", "target", "steps", "limit",
                       "html", "cache"])
def explain(cfg: ExplainConfig, opts: RunOptions) -> None:
    """Integrated-gradients saliency overlays showing which lesions drove the score."""
    from .explain import run_explain

    table = run_explain(cfg, overwrite=opts.overwrite)
    msg = f"wrote {len(table)} overlay(s) to {cfg.out / 'saliency'}"
    if table.attrs.get("skipped"):
        msg += f" ({len(table.attrs['skipped'])} unreadable skipped)"
    if cfg.html:
        msg += f" and {cfg.out / 'report.html'}"
    if "lesion_ratio" in table:
        ratio = round(float(table["lesion_ratio"].median()), 2)
        msg += f"; median lesion/background saliency {json.dumps(ratio)}"
    typer.echo(msg)


@config_command(app, ExportConfig, name="export", arguments=["model"],
                shown=["out", "quantize", "inputs", "samples", "check", "batch-size", "tolerance",
                       "seed"])
def export(cfg: ExportConfig, opts: RunOptions) -> None:
    """Export one .keras model (e.g. member_0/model.keras) to LiteRT (.tflite, int8|float16|none).

    --inputs: a label CSV or a folder of photographs to calibrate on and check
    against (default: photographs painted by synth, fixed seed). The check is
    the mean |change of the referable probability| on held-out inputs.
    """
    from .compress import export as run_export

    run_export(cfg, overwrite=opts.overwrite, say=typer.echo)


@config_command(app, DistillConfig, name="distill",
                shown=["teacher", "labels", "out", "width", "temperature", "alpha", "fraction",
                       "epochs", "batch-size", "lr"])
def distill(cfg: DistillConfig, opts: RunOptions) -> None:
    """Distil a teacher ensemble into one small Inception (a normal model folder)."""
    from .compress import distill as run_distill

    info = run_distill(cfg, overwrite=opts.overwrite)
    v, d = info["validation"], info["distillation"]
    typer.echo(f"distilled {len(d['teacher'])} teacher model(s) into {cfg.out} (width {cfg.width}, "
               f"T={d['temperature']:g}, alpha={d['alpha']:g}, {d['data']['train_images']} "
               f"training images); validation referable AUC {v['auc']:.3f}, n={v['n']}")


_variadic("predict", "files", "Fundus photographs.")
_variadic("explain", "files", "Fundus photographs.")
