"""Suite-wide settings: quiet TensorFlow, no progress bars, two logical CPUs.

The CPU is split before TensorFlow initialises its devices so that
multi-replica code (MirroredStrategy) is exercised on a CPU-only machine.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DEEPSCI_PROGRESS", "0")
os.environ.setdefault("DEEPSCI_NOTEBOOK_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Caches that default to the user's home go to a folder of this test session instead.
os.environ.setdefault("DEEPSCI_CACHE_DIR", __import__("tempfile").mkdtemp(prefix="deepsci-test-cache-"))

from deepsci.core.accelerator import split_cpu  # noqa: E402

split_cpu(2)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture
def run_notebook(monkeypatch, tmp_path):
    """Execute ``notebooks/<name>.ipynb`` on tiny settings in a temporary folder.

    Returns ``(text, figures)``: all text output, and how many figures were
    displayed (the kernel keeps its inline matplotlib backend).
    """

    def run(name: str, timeout: int = 300):
        import nbformat
        from nbclient import NotebookClient

        monkeypatch.setenv("DEEPSCI_NOTEBOOK_QUICK", "1")
        monkeypatch.setenv("DEEPSCI_PROGRESS", "0")
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
        monkeypatch.delenv("MPLBACKEND", raising=False)
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                       for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        figures = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
        return text, figures

    return run


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` (hidden ones too): relative path -> (size, mtime_ns)."""
    if not root.exists():
        return {}
    if root.is_file():
        st = root.stat()
        return {".": (st.st_size, st.st_mtime_ns)}
    out = {}
    for p in root.rglob("*"):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out


@pytest.fixture
def bad_input(capfd):
    """Assert the user-error promise of ``deepsci ARGV`` run in-process.

    ``bad_input(argv, watch=[folder, ...], match="regex")`` runs the CLI and asserts: exit
    status 2, exactly one non-empty line on stderr, starting with ``error: `` (and matching
    ``match`` when given), no ``Traceback`` anywhere, and every ``watch``ed path exactly as it
    was before (no output, no temporary file, no input changed). Returns the error line.

    Examples
    --------
    >>> bad_input(["molecules", "predict", "--data", missing, "--out", tmp / "o"],  # doctest: +SKIP
    ...           watch=[tmp], match="not found")
    """
    import re

    def check(argv, *, watch=(), match: str | None = None) -> str:
        from deepsci.apps.cli import main

        argv = [str(a) for a in argv]
        before = {str(w): _tree(Path(w)) for w in watch}
        capfd.readouterr()
        rc = main(argv)
        out, err = capfd.readouterr()
        lines = [line for line in err.splitlines() if line.strip()]
        assert "Traceback" not in out + err, f"{argv}: traceback\n{err}"
        assert rc == 2, f"{argv}: exit {rc}, expected 2\nstdout: {out}\nstderr: {err}"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{argv}: stderr {lines}"
        if match is not None:
            assert re.search(match, lines[0]), f"{argv}: {lines[0]!r} does not match {match!r}"
        after = {str(w): _tree(Path(w)) for w in watch}
        for w in before:
            new = sorted(set(after[w]) - set(before[w]))
            gone = sorted(set(before[w]) - set(after[w]))
            changed = sorted(k for k in before[w] if k in after[w] and after[w][k] != before[w][k]
                             and before[w][k][0] != -1)
            assert not (new or gone or changed), (f"{argv}: under {w} new {new}, removed {gone}, "
                                                  f"changed {changed}")
        return lines[0]

    return check
