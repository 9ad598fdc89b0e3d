"""The molecules notebook runs top to bottom on tiny settings (DEEPSCI_NOTEBOOK_QUICK=1) and
shows the metrics of the model it trained: each MAE it prints is recomputed here from the
predictions and held-out labels it wrote.
"""
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest


@pytest.mark.timeout(300)
def test_notebook_executes(run_notebook, check_reported_mae):
    outputs, figures = run_notebook("molecules", timeout=240)
    work = Path(re.search(r"outputs in (\S+)", outputs).group(1))
    try:
        metrics = json.loads((work / "eval/metrics.json").read_text())["targets"]
        check_reported_mae(metrics, work / "eval/predictions.csv", work / "run/test_set.csv.gz",
                           outputs, {"gap": "eV", "homo": "eV", "lumo": "eV", "mu": "D", "u0": "eV"})
        # The bundled subset's 10 % test split of the 200 sampled molecules.
        assert metrics["gap"]["n"] == 20
        assert figures >= 1  # the parity plot
        new = pd.read_csv(work / "new_predictions.csv")
        assert list(new["id"]) == ["ethanol", "benzene", "butyrolactone", "cyanogen"]
        shown = re.findall(r"^\d\s+(ethanol|benzene|butyrolactone|cyanogen)\s", outputs, re.M)
        assert shown == list(new["id"]), outputs[-2000:]
    finally:
        shutil.rmtree(work, ignore_errors=True)
