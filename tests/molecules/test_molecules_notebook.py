"""The molecules notebook runs top to bottom on tiny settings (DEEPSCI_NOTEBOOK_QUICK=1)."""
import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "molecules.ipynb"


@pytest.mark.timeout(300)
def test_notebook_executes(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("DEEPSCI_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("DEEPSCI_PROGRESS", "0")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "MAE / chem. acc." in outputs
    assert os.environ["DEEPSCI_NOTEBOOK_QUICK"] == "1"
