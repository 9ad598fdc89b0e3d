"""The pathology notebook runs top to bottom on tiny settings."""


def test_notebook_executes(run_notebook):
    outputs, _ = run_notebook("pathology", timeout=240)
    assert "FROC" in outputs
