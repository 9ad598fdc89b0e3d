"""The variants notebook runs top to bottom on tiny settings (DEEPSCI_NOTEBOOK_QUICK=1)."""
from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "variants.ipynb"


@pytest.mark.timeout(400)
def test_notebook_executes(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("DEEPSCI_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("DEEPSCI_PROGRESS", "0")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.delenv("MPLBACKEND", raising=False)     # the notebook plots inline
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                   for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "labels hom-ref/het/hom-alt" in text
    assert "METRIC.F1_Score" in text and "bcftools" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells
                 for o in c.get("outputs", []))
    assert images >= 1
