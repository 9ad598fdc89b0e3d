"""The core quickstart notebook runs end to end on tiny settings."""
import os
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("DEEPSCI_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("DEEPSCI_PROGRESS", "0")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "quickstart" in text and "held-out accuracy" in text
    accuracy = float(text.split("held-out accuracy")[-1].split()[0])
    assert accuracy >= 0.7, text[-500:]
    assert os.path.exists(NOTEBOOK)
