"""The house rules of the code's shape, checked on the source tree itself.

* no import cycle among deepsci modules (imports inside functions count);
* imports flow one way, core <- apps/<app> <- cli, in the source and at run time;
* ``deepsci --help`` imports no TensorFlow;
* no module over 600 lines, no function or method over 80 lines;
* every app has the same stages: io, synth, model, train, predict, evaluate, cli, demo;
* no command's ``--help`` shows more than 15 options.

Each test names every offender in its failure message, and each has a twin on
a planted tree or command so that the check itself is known to fire.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "apps")  # folders of deepsci.core and deepsci.apps
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
MAX_HELP_OPTIONS = 15
APP_MODULES = ("io", "synth", "model", "train", "predict", "evaluate", "cli", "demo")


# --------------------------------------------------------------------------- the import graph

def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """``deepsci.<dotted name>`` -> (file, is_package) for every module under core/ and apps/."""
    found = {}
    for top in PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join(["deepsci", *parts])] = (path, is_package)
    return found


def _import_statements(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, list[str]]]:
    """``(base, names)`` for every import in a file, at any depth (inside functions too).

    Relative bases are resolved against ``module``; ``import X.Y`` gives
    ``("X.Y", [])``; ``importlib.import_module`` with a constant (or f-string)
    name gives that name, with ``*`` for the variable part.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(kept + ([node.module] if node.module else []))
            yield base, [alias.name for alias in node.names if alias.name != "*"]
        elif (isinstance(node, ast.Call) and node.args and ast.unparse(node.func) in
              ("importlib.import_module", "import_module", "__import__")):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield arg.value, []
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                yield f"{arg.values[0].value}*", []


def _import_targets(tree: ast.AST, module: str, is_package: bool,
                    known: set[str]) -> set[str]:
    """The deepsci modules ``module`` imports anywhere in its file, relative ones resolved.

    ``from X import a`` depends on ``X.a`` when that is a module, else on ``X``;
    ``import X.Y`` on ``X.Y``. Names outside ``known`` (other libraries) are dropped.
    """
    targets = set()
    for base, names in _import_statements(tree, module, is_package):
        subs = {f"{base}.{n}" for n in names} & known
        targets.update(subs)
        if not names or len(subs) < len(names):
            targets.add(base)
    return (targets & known) - {module}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the deepsci modules it imports (at module level or inside functions)."""
    modules = _modules(root)
    known = set(modules)
    graph = {}
    for name, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = _import_targets(tree, name, is_package, known)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest import path from the component's first module back to itself."""
    start, inside = component[0], set(component)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph[path[-1]] & inside):
            if w == start:
                return [*path, start]
            if w not in seen:
                seen.add(w)
                paths.append([*path, w])
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def cycle_report(graph: dict[str, set[str]]) -> list[str]:
    """One line per import cycle: its modules, and one concrete path around it."""
    return [f"{len(c)} modules: {', '.join(c)}; e.g. {' -> '.join(_one_cycle(graph, c))}"
            for c in strongly_connected(graph)]


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and sum(map(len, graph.values())) > 50  # the walk saw the tree
    cycles = cycle_report(graph)
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def test_cycle_check_fires_on_a_planted_cycle(tmp_path):
    files = {
        "core/__init__.py": "",
        "core/a.py": "from . import b\n",
        "core/b.py": "def f():\n    from .sub.c import g\n",  # hidden inside a function
        "core/sub/__init__.py": "",
        "core/sub/c.py": "import deepsci.core.a\nimport numpy\n",
        "apps/__init__.py": "",
        "apps/x/__init__.py": "from .m import y\n",
        "apps/x/m.py": "from deepsci.core import a\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["deepsci.apps.x"] == {"deepsci.apps.x.m"}
    assert graph["deepsci.core.sub.c"] == {"deepsci.core.a"}
    assert cycle_report(graph) == [
        "3 modules: deepsci.core.a, deepsci.core.b, deepsci.core.sub.c; "
        "e.g. deepsci.core.a -> deepsci.core.b -> deepsci.core.sub.c -> deepsci.core.a"]


# --------------------------------------------------------------------------- import direction

def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    """``core/models/ffn.py`` -> ``("deepsci.core.models.ffn", False)``; packages give True."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(["deepsci", *parts]), is_package


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
            targets = {base for base, _ in _import_statements(tree, module, is_package)} | {
                f"{base}.{n}" for base, names in _import_statements(tree, module, is_package) for n in names}
            for target in sorted(targets):
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


def test_the_command_line_loads_without_tensorflow():
    """``deepsci --help`` and every app's help stay fast: TensorFlow loads inside commands only."""
    code = ("import sys\nimport deepsci.apps.cli\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# --------------------------------------------------------------------------- sizes

def _python_files(root: Path = ROOT) -> Iterator[Path]:
    for top in PACKAGES:
        yield from sorted((root / top).rglob("*.py"))


def long_modules(root: Path = ROOT) -> list[str]:
    """``path (N lines)`` for every module over :data:`MAX_MODULE_LINES`."""
    out = []
    for path in _python_files(root):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            out.append(f"{path.relative_to(root)} ({n} lines)")
    return out


def long_functions(root: Path = ROOT) -> list[str]:
    """``path:line name (N lines)`` for every function or method over :data:`MAX_FUNCTION_LINES`."""
    out = []
    for path in _python_files(root):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_module_over_600_lines():
    offenders = long_modules()
    assert offenders == [], "modules over 600 lines:\n" + "\n".join(offenders)


def test_no_function_over_80_lines():
    offenders = long_functions()
    assert offenders == [], "functions over 80 lines:\n" + "\n".join(offenders)


def test_size_checks_fire_on_planted_files(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "apps").mkdir()
    (tmp_path / "core" / "big.py").write_text("x = 1\n" * 601)
    (tmp_path / "core" / "ok.py").write_text("x = 1\n" * 600)
    body = "".join(f"        a{i} = {i}\n" for i in range(79))
    (tmp_path / "apps" / "f.py").write_text(
        f"class C:\n    def long(self):\n{body}        return 0\n"  # 81 lines
        f"    def fits(self):\n{body}\n")  # 80 lines
    assert long_modules(tmp_path) == ["core/big.py (601 lines)"]
    assert long_functions(tmp_path) == ["apps/f.py:2 long (81 lines)"]


# --------------------------------------------------------------------------- the apps' shape

def missing_app_modules(root: Path = ROOT) -> dict[str, list[str]]:
    """app -> the modules of :data:`APP_MODULES` it lacks (as ``name.py`` or ``name/``)."""
    out = {}
    for init in sorted((root / "apps").glob("*/__init__.py")):
        folder = init.parent
        have = {p.stem for p in folder.glob("*.py")} | {
            p.parent.name for p in folder.glob("*/__init__.py")}
        missing = [m for m in APP_MODULES if m not in have]
        if missing:
            out[folder.name] = missing
    return out


def test_every_app_has_the_same_stages():
    apps = [p.parent.name for p in (ROOT / "apps").glob("*/__init__.py")]
    assert len(apps) >= 5, apps
    missing = missing_app_modules()
    assert missing == {}, "apps missing stage modules: " + "; ".join(
        f"{app}: {', '.join(names)}" for app, names in missing.items())


def test_stage_check_fires_on_a_planted_app(tmp_path):
    app = tmp_path / "apps" / "toy"
    (app / "io").mkdir(parents=True)
    for name in ("__init__.py", "io/__init__.py", "synth.py", "model.py", "train.py",
                 "evaluate.py", "cli.py"):
        (app / name).write_text("")
    (app / "predict").mkdir()  # a folder without __init__.py is no package
    assert missing_app_modules(tmp_path) == {"toy": ["predict", "demo"]}


# --------------------------------------------------------------------------- --help

def help_option_counts(command, name: str = "deepsci", parent=None) -> Iterator[tuple[str, int]]:
    """(command path, options its ``--help`` lists) for a click command and all below it.

    Hidden options are left out; ``--help`` itself counts; arguments are not options.
    """
    ctx = command.context_class(command, info_name=name, parent=parent)
    shown = [p for p in command.get_params(ctx)
             if p.param_type_name == "option" and not getattr(p, "hidden", False)]
    yield ctx.command_path, len(shown)
    for sub_name in getattr(command, "list_commands", lambda _ctx: [])(ctx):
        sub = command.get_command(ctx, sub_name)
        if sub is not None and not sub.hidden:
            yield from help_option_counts(sub, sub_name, ctx)


def test_every_help_shows_at_most_15_options():
    import typer

    from deepsci.apps.cli import app

    counts = dict(help_option_counts(typer.main.get_command(app)))
    assert len(counts) > 20, counts  # every app's group was walked
    over = {path: n for path, n in counts.items() if n > MAX_HELP_OPTIONS}
    assert over == {}, "commands whose --help shows more than 15 options:\n" + "\n".join(
        f"{path}: {n}" for path, n in sorted(over.items()))


def test_help_count_fires_on_a_planted_command():
    import typer

    toy = typer.Typer(add_completion=False)

    @toy.command()
    def wide(a: int = 0, b: int = 0, c: int = typer.Option(0, hidden=True)) -> None:
        """Two shown options, one hidden, plus --help."""

    @toy.command()
    def narrow(path: str) -> None:
        """An argument only, plus --help."""

    counts = dict(help_option_counts(typer.main.get_command(toy), "toy"))
    assert counts == {"toy": 1, "toy wide": 3, "toy narrow": 1}
