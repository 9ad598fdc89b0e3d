"""The ``deepsci`` command: version, devices, demo, and one group per app.

Errors a user can fix (:class:`~deepsci.core.errors.DeepSciError`) print one
line ``error: <what> (<file>)`` and exit with status 2; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import typer  # noqa: E402

try:  # typer >= 0.26 vendors click; its exceptions are not click's
    from typer._click.exceptions import ClickException, UsageError  # noqa: E402
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import ClickException, UsageError  # noqa: E402
try:
    from typer._click.exceptions import NoArgsIsHelpError  # noqa: E402
except ImportError:  # pragma: no cover - older click has no such class
    NoArgsIsHelpError = ()

from deepsci.apps import APPS  # noqa: E402
from deepsci.core.errors import ConfigError, DeepSciError, InputError  # noqa: E402

app = typer.Typer(
    name="deepsci",
    help="Deep learning for retinopathy, pathology, variant calling, molecules and connectomics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _available_apps() -> list[str]:
    """Apps whose command-line module is present in this installation."""
    return [a for a in APPS if importlib.util.find_spec(f"deepsci.apps.{a}.cli") is not None]


for _name in _available_apps():
    app.add_typer(importlib.import_module(f"deepsci.apps.{_name}.cli").app, name=_name)


@app.command()
def version() -> None:
    """Print the deepsci, TensorFlow and Keras versions."""
    import keras
    import tensorflow as tf

    from deepsci.core import __version__

    typer.echo(f"deepsci {__version__}\ntensorflow {tf.__version__}\nkeras {keras.__version__}")


@app.command()
def devices(
    logical_cpus: int = typer.Option(None, help="Split the CPU into N logical devices first."),
) -> None:
    """Show the devices TensorFlow sees and the strategy `auto` picks."""
    from deepsci.core.accelerator import describe_devices, split_cpu

    if logical_cpus is not None and logical_cpus < 1:
        raise ConfigError(f"expected --logical-cpus >= 1, found {logical_cpus}")
    if logical_cpus:
        split_cpu(logical_cpus)
    info = describe_devices()
    typer.echo(f"tensorflow {info['tensorflow']} (CUDA build: {info['built_with_cuda']})")
    for d in info["physical"]:
        typer.echo(f"  {d['type']:4s} {d['name']}")
    auto = info["auto"]
    typer.echo(f"auto -> {auto['strategy']} with {auto['replicas']} replica(s): "
               f"{', '.join(auto['devices'])}; mixed precision would use {auto['mixed_precision']}")
    if info["tf_config"] or info["slurm"]:
        typer.echo("multi-worker: TF_CONFIG or Slurm found; `--strategy multi-worker` will use it")


models_app = typer.Typer(help="The trained models that ship with deepsci: list, info, path, build.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")


#: Leaf names of a card's metrics that make a one-line headline, and branches that hold a
#: peer's score rather than the model's.
_HEADLINE = ("f1", "mae", "auc", "froc", "slide_auc", "vi_split", "vi_merge", "kappa")
_PEERS = ("bcftools", "ridge", "baseline", "watershed")


def _leaves(tree, prefix=""):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield f"{prefix}{k}", v


def _fmt_metric(card) -> str:
    for split in ("test", "validation"):
        scores = card.metrics.get(split)
        if not isinstance(scores, dict):
            continue
        leaves = [(k, v) for k, v in _leaves(scores)
                  if not any(p in k.lower() for p in _PEERS)]
        items = [(k, v) for k, v in leaves if k.rsplit(".", 1)[-1] in _HEADLINE] or leaves
        if items:
            return f"{split}: " + ", ".join(f"{k} {v:.4g}" for k, v in items[:2])
    return "-"


@models_app.command("list")
def models_list() -> None:
    """One line per shipped model: name, app/task, default, data, size, a held-out score."""
    from deepsci.core.models.registry import shipped_models

    models = shipped_models()
    if not models:
        typer.echo("no models ship with this installation")
        return
    for m in models:
        flags = ("default" if m.default else "") + (" synthetic-only" if m.synthetic_only else "")
        typer.echo(f"{m.name:30s} {m.card.app + '/' + m.card.task:28s} {flags.strip() or '-':24s} "
                   f"{m.size_bytes / 1e6:6.2f} MB  {_fmt_metric(m.card)}")


@models_app.command("info")
def models_info(name: str = typer.Argument(..., help="A name from `deepsci models list`.")) -> None:
    """Print a shipped model's card (JSON)."""
    import json

    from deepsci.core.models.registry import shipped

    m = shipped(name)
    card = m.card.to_dict()
    card["shipped"] = {"path": str(m.path), "members": m.members, "size_bytes": m.size_bytes}
    typer.echo(json.dumps(card, indent=2))


@models_app.command("path")
def models_path(name: str = typer.Argument(..., help="A name from `deepsci models list`.")) -> None:
    """Print the path that `--model` would load for NAME."""
    from deepsci.core.models.registry import shipped

    typer.echo(str(shipped(name).path))


@models_app.command("build")
def models_build(
    app_name: str = typer.Argument(..., metavar="APP", help="The app whose shipped models to build."),
    out: Path = typer.Option(None, help="Folder to write <name>/ into (default: the package's data/models)."),
    tiny: bool = typer.Option(False, help="Tiny data and a few steps (what the tests build)."),
) -> None:
    """Rebuild an app's shipped models reproducibly (data, recipe, held-out scores, card)."""
    from deepsci.core.models.registry import shipped_root

    if app_name not in _available_apps():
        raise ConfigError(f"expected an app among {', '.join(_available_apps())}, found {app_name}")
    release = importlib.import_module(f"deepsci.apps.{app_name}.release")
    for path in release.build(out or shipped_root(), tiny=tiny):
        typer.echo(f"built {path}")


DEMO_MARK = ".deepsci-demo"


def _claim_demo_folder(out: Path) -> None:
    """Make ``out`` the demo's folder: new, empty, or one an earlier demo wrote (marked).

    A rerun of ``make demo`` replaces the earlier demo's app folders; a folder of the
    user's own files is never written into.
    """
    if out.is_dir() and any(out.iterdir()) and not (out / DEMO_MARK).is_file():
        raise InputError("expected a new folder or an earlier demo's for --out, found a folder "
                         "of other files", out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARK).write_text("written by deepsci demo; a rerun replaces this folder's apps\n")


@app.command()
def demo(
    app_name: list[str] = typer.Option(None, "--app", help="Run only this app (repeatable)."),
    out: Path = typer.Option(Path("demo-report"), help="Folder for the report and each app's outputs."),
    quick: bool = typer.Option(
        True, "--quick/--full",
        help="Small settings, all five apps within 10 minutes on 2 cores (default); "
             "--full uses more data (with --train: trains longer, about 10–12 minutes on 2 cores)."),
    train: bool = typer.Option(
        False, "--train",
        help="Train every model from scratch on synthetic data instead of using the shipped models."),
) -> None:
    """Score the shipped models beside each field's baseline on fresh held-out data (Markdown + HTML).

    The data is generated with seeds no shipped model was trained on; `--train`
    keeps the train-from-scratch demo.
    """
    from deepsci.core.report import write_report
    from deepsci.core.runs import check_output_location

    available = _available_apps()
    chosen = app_name or available
    unknown = [a for a in chosen if a not in available]
    if unknown:
        raise ConfigError(f"expected apps among {', '.join(available)}, found {', '.join(unknown)}")
    check_output_location(out)
    _claim_demo_folder(out)
    results = []
    for name in chosen:
        typer.echo(f"== {name} demo", err=True)
        module = importlib.import_module(f"deepsci.apps.{name}.demo")
        if (out / name).exists():   # an earlier demo's outputs: each run starts fresh
            shutil.rmtree(out / name)
        start = time.perf_counter()
        result = module.run_demo(out / name, quick=quick, train=train)
        result.seconds = time.perf_counter() - start
        results.append(result)
        if result.rows:
            summary = "; ".join(
                f"{r.metric} {r.deepsci:.4g}" + (f" vs {r.baseline:.4g} {r.baseline_name} ({r.verdict})"
                                                  if r.baseline is not None else "")
                for r in result.rows if r.deepsci is not None)
        else:
            summary = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in list(result.metrics.items())[:6])
        typer.echo(f"{name}: {summary} ({result.seconds:.0f} s)")
    report = write_report(results, out)
    typer.echo(f"report: {report} and {report.with_suffix('.html')}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status (the console script's entry point).

    From the console (``argv`` None) native libraries' stderr goes to the
    run's log unless ``-v``/``--verbose`` is given.
    """
    verbose = any(a in ("-v", "--verbose") for a in (sys.argv[1:] if argv is None else argv))
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return _main(argv)
    from deepsci.core.logs import capture_native_stderr, quiet_python_logs

    quiet_python_logs()
    if argv is not None or os.environ.get("DEEPSCI_NATIVE_LOG") == "0":
        return _main(argv)
    with capture_native_stderr():
        return _main(argv)


def usage_line(e: UsageError) -> str:
    """Click's usage error as deepsci's one line: the message, then where help is.

    Click prints three lines (``Usage:``, ``Try ...``, ``Error: ...``); every
    other user error is one line, so this one is too.

    Examples
    --------
    >>> usage_line(UsageError("No such option: --data"))
    "no such option: --data (try 'deepsci --help')"
    """
    text = " ".join(e.format_message().split())
    text = text[:1].lower() + text[1:].rstrip(".")
    where = e.ctx.command_path if e.ctx is not None else "deepsci"
    return f"{text} (try '{where} --help')"


def _main(argv: list[str] | None) -> int:
    from deepsci.core.logs import held_notes

    try:
        with held_notes():
            result = app(args=argv, prog_name="deepsci", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except DeepSciError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except NoArgsIsHelpError as e:  # a bare group: its help is the answer, not an error
        e.show()
        return e.exit_code
    except UsageError as e:
        print(f"error: {usage_line(e)}", file=sys.stderr)
        return 2
    except ClickException as e:
        print(f"error: {' '.join(e.format_message().split())}", file=sys.stderr)
        return e.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
