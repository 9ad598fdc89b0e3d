"""The variants notebook runs top to bottom on tiny settings (DEEPSCI_NOTEBOOK_QUICK=1)."""
import pytest


@pytest.mark.timeout(400)
def test_notebook_executes(run_notebook):
    text, figures = run_notebook("variants")
    assert "labels hom-ref/het/hom-alt" in text
    assert "METRIC.F1_Score" in text and "bcftools" in text
    assert figures >= 1
