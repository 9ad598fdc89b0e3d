"""The notebook runs top to bottom on tiny settings."""


def test_notebook_executes(run_notebook):
    outputs, _ = run_notebook("retinopathy")
    assert "test referable AUC" in outputs and "lesion_ratio" in outputs
