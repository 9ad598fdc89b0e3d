"""The notebook and the demo hook run end to end on tiny settings."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_notebook_executes(run_notebook):
    outputs, figures = run_notebook("connectomics", timeout=120)
    assert "vi_split" in outputs and "watershed baseline" in outputs
    assert figures


@pytest.mark.slow
def test_demo_quick(tmp_path):
    from deepsci.apps.connectomics.demo import run_demo

    result = run_demo(tmp_path, quick=True)
    assert result.app == "connectomics"
    for key in ("ffn_vi_total", "baseline_vi_total", "ffn_erl", "ffn_adapted_rand"):
        assert isinstance(result.metrics[key], float)
    assert all(Path(f).exists() for f in result.figures)
    assert (tmp_path / "segment" / "run_info.json").exists()
