"""The molecules notebook runs top to bottom on tiny settings (DEEPSCI_NOTEBOOK_QUICK=1)."""
import pytest


@pytest.mark.timeout(300)
def test_notebook_executes(run_notebook):
    outputs, _ = run_notebook("molecules", timeout=240)
    assert "MAE / chem. acc." in outputs
