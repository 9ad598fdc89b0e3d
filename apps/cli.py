"""The ``deepsci`` command: version, devices, demo, and one group per app.

Errors a user can fix (:class:`~deepsci.core.errors.DeepSciError`) print one
line ``error: <what> (<file>)`` and exit with status 2; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import typer  # noqa: E402

try:  # typer >= 0.26 vendors click; its exceptions are not click's
    from typer._click.exceptions import ClickException  # noqa: E402
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import ClickException  # noqa: E402

from deepsci.apps import APPS  # noqa: E402
from deepsci.core.errors import ConfigError, DeepSciError  # noqa: E402

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


@app.command()
def demo(
    app_name: list[str] = typer.Option(None, "--app", help="Run only this app (repeatable)."),
    out: Path = typer.Option(Path("demo-report"), help="Folder for the report and each app's outputs."),
    quick: bool = typer.Option(
        True, "--quick/--full",
        help="Small settings, all five apps within 10 minutes on 2 cores (default); "
             "--full trains longer on more data (about 10–12 minutes on 2 cores) for stronger metrics."),
) -> None:
    """Run each app's demo on built-in data and write one report (Markdown + HTML)."""
    from deepsci.core.report import write_report

    available = _available_apps()
    chosen = app_name or available
    unknown = [a for a in chosen if a not in available]
    if unknown:
        raise ConfigError(f"expected apps among {', '.join(available)}; found {', '.join(unknown)}")
    results = []
    for name in chosen:
        typer.echo(f"== {name} demo", err=True)
        module = importlib.import_module(f"deepsci.apps.{name}.demo")
        start = time.perf_counter()
        result = module.run_demo(out / name, quick=quick)
        result.seconds = time.perf_counter() - start
        results.append(result)
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


def _main(argv: list[str] | None) -> int:
    try:
        result = app(args=argv, prog_name="deepsci", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except DeepSciError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except ClickException as e:
        e.show()
        return e.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
