"""The notebook and the demo hook run end to end on tiny settings."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "connectomics.ipynb"


@pytest.mark.slow
def test_notebook_executes():
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env_before = os.environ.get("DEEPSCI_NOTEBOOK_QUICK")
    os.environ["DEEPSCI_NOTEBOOK_QUICK"] = "1"
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        if env_before is None:
            os.environ.pop("DEEPSCI_NOTEBOOK_QUICK", None)
        else:
            os.environ["DEEPSCI_NOTEBOOK_QUICK"] = env_before
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "vi_split" in outputs and "watershed baseline" in outputs
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images


@pytest.mark.slow
def test_demo_quick(tmp_path):
    from deepsci.apps.connectomics.demo import run_demo

    result = run_demo(tmp_path, quick=True)
    assert result.app == "connectomics"
    for key in ("ffn_vi_total", "baseline_vi_total", "ffn_erl", "ffn_adapted_rand"):
        assert isinstance(result.metrics[key], float)
    assert all(Path(f).exists() for f in result.figures)
    assert (tmp_path / "segment" / "run_info.json").exists()
