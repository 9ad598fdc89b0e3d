"""The core quickstart notebook runs end to end on tiny settings."""


def test_quickstart_notebook_executes(run_notebook):
    text, _ = run_notebook("quickstart")
    assert "quickstart" in text and "held-out accuracy" in text
    accuracy = float(text.split("held-out accuracy")[-1].split()[0])
    assert accuracy >= 0.7, text[-500:]
