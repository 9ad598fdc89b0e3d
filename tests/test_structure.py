"""The house rules of the code's shape, checked on the source tree itself.

* no import cycle among deepsci modules (imports inside functions count);
* no module over 600 lines, no function or method over 80 lines;
* every app has the same stages: io, synth, model, train, predict, evaluate, cli, demo;
* no command's ``--help`` shows more than 15 options.

Each test names every offender in its failure message, and each has a twin on
a planted tree or command so that the check itself is known to fire.
"""
from __future__ import annotations

import ast
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


def _import_targets(tree: ast.AST, module: str, is_package: bool,
                    known: set[str]) -> set[str]:
    """The deepsci modules ``module`` imports anywhere in its file, relative ones resolved.

    ``from X import a`` depends on ``X.a`` when that is a module, else on ``X``;
    ``import X.Y`` on ``X.Y``. Names outside ``known`` (other libraries) are dropped.
    """
    package = module if is_package else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(kept + ([node.module] if node.module else []))
            subs = {f"{base}.{alias.name}" for alias in node.names} & known
            targets.update(subs)
            if len(subs) < len(node.names):
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
