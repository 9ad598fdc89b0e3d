import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from deepsci.apps.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "deepsci.apps", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_version_and_help(capsys):
    assert main(["version"]) == 0
    assert "deepsci" in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("version", "devices", "demo"):
        assert command in out


def test_devices_reports_auto(capsys):
    assert main(["devices"]) == 0
    assert "auto -> MirroredStrategy with 2 replica(s)" in capsys.readouterr().out


def test_user_error_is_one_line_and_exit_2():
    proc = _cli("demo", "--app", "astrology", "--out", "/tmp/none")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: expected apps among")
    assert "Traceback" not in proc.stderr


def test_usage_error_exit_2(capsys):
    assert main(["demo", "--no-such-flag"]) == 2


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    mapping = {"core": "deepsci.core", "apps": "deepsci.apps", "data": "deepsci.data"}
    found = set()
    for top, name in mapping.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)))
    assert found == listed


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    """``core/models/ffn.py`` -> ``("deepsci.core.models.ffn", False)``; packages give True."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(["deepsci", *parts]), is_package


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module name a file imports, at any depth (inside functions too).

    Relative imports are resolved against ``module``; ``from X import a`` also
    yields ``X.a`` (``a`` may be a submodule); ``importlib.import_module`` with a
    constant (or f-string) name yields that name, with ``*`` for the variable part.
    """
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (isinstance(node, ast.Call) and node.args and ast.unparse(node.func) in
              ("importlib.import_module", "import_module", "__import__")):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                found.add(f"{arg.values[0].value}*")
    return found


def _direction_violations(root: Path) -> list[str]:
    """``module -> import`` for every import that breaks core <- apps/<app> <- cli."""
    apps = {p.parent.name for p in (root / "apps").glob("*/__init__.py")}
    bad = []
    for top in ("core", "apps"):
        for path in sorted((root / top).rglob("*.py")):
            module, is_package = _module_name(path, root)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            parts = module.split(".")
            own = parts[2] if top == "apps" and len(parts) > 2 and parts[2] in apps else None
            for target in sorted(_imported(tree, module, is_package)):
                if not target.startswith("deepsci.apps"):
                    continue
                owner = (target.split(".") + [""])[2]
                if top == "core":
                    bad.append(f"{module} -> {target} (the core imports an app)")
                elif own is not None and owner != own and (owner in apps or owner in
                                                           ("cli", "__main__", "*")):
                    bad.append(f"{module} -> {target} (an app imports another app or the top CLI)")
    return bad


def test_imports_flow_one_way_core_apps_cli():
    """No module under core/ imports deepsci.apps; no app imports another app or apps/cli.py.

    Fails on any such import anywhere in the file, inside a function or not,
    absolute or relative (``from ...variants import io``), or by a constant name
    through ``importlib.import_module``.
    """
    assert len(list((ROOT / "apps").rglob("*.py"))) > 20  # the walk really saw the tree
    assert _direction_violations(ROOT) == []


def test_importing_the_core_loads_no_app():
    """At run time too: fails if importing the core's modules pulls in any deepsci.apps module."""
    modules = sorted(_module_name(p, ROOT)[0] for p in (ROOT / "core").rglob("*.py"))
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.startswith('deepsci.apps')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_direction_check_catches_planted_imports(tmp_path):
    planted = {
        "core/__init__.py": "",
        "core/a.py": "def f():\n    from deepsci.apps.variants import io\n",
        "core/b.py": "import importlib\nimportlib.import_module(f'deepsci.apps.{name}.demo')\n",
        "apps/__init__.py": "APPS = ()\n",
        "apps/cli.py": "import deepsci.apps.variants.cli\n",
        "apps/variants/__init__.py": "",
        "apps/variants/io.py": "from . import synth\nfrom .synth import x\nimport deepsci.core.io\n",
        "apps/variants/synth.py": "def g():\n    from ..molecules import featurize\n",
        "apps/molecules/__init__.py": "from deepsci.apps import APPS\n",
        "apps/molecules/cli.py": "from deepsci.apps.cli import app\n",
    }
    for name, text in planted.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert _direction_violations(tmp_path) == [
        "deepsci.core.a -> deepsci.apps.variants (the core imports an app)",
        "deepsci.core.a -> deepsci.apps.variants.io (the core imports an app)",
        "deepsci.core.b -> deepsci.apps.* (the core imports an app)",
        "deepsci.apps.molecules.cli -> deepsci.apps.cli (an app imports another app or the top CLI)",
        "deepsci.apps.molecules.cli -> deepsci.apps.cli.app (an app imports another app or the top CLI)",
        "deepsci.apps.variants.synth -> deepsci.apps.molecules (an app imports another app or the top CLI)",
        "deepsci.apps.variants.synth -> deepsci.apps.molecules.featurize "
        "(an app imports another app or the top CLI)",
    ]
