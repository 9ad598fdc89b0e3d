"""The notebook runs top to bottom on tiny settings."""
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "retinopathy.ipynb"


def test_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSCI_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("DEEPSCI_PROGRESS", "0")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "test referable AUC" in outputs and "lesion_ratio" in outputs
    assert os.environ.get("DEEPSCI_NOTEBOOK_QUICK") == "1"
