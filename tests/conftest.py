"""Suite-wide settings: quiet TensorFlow, no progress bars, two logical CPUs.

The CPU is split before TensorFlow initialises its devices so that
multi-replica code (MirroredStrategy) is exercised on a CPU-only machine.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DEEPSCI_PROGRESS", "0")
os.environ.setdefault("DEEPSCI_NOTEBOOK_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

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
