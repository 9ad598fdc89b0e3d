"""Shared checks of the molecules tests."""
import numpy as np
import pandas as pd
import pytest


def _check(metrics, predictions, labels, printed, units):
    """Each target's reported MAE, ratio and n equal an independent computation from the files.

    Fails when evaluate scores other predictions than it writes, mixes up targets, ids
    or units, averages over the wrong molecules, or prints other numbers than it records.
    """
    pred = pd.read_csv(predictions).set_index("id")
    truth = pd.read_csv(labels).set_index("id")
    assert sorted(pred.index) == sorted(truth.index) and len(truth) > 0
    chem_acc = {"gap": 0.043, "u0": 0.043, "mu": 0.1, "homo": 0.043, "lumo": 0.043}
    assert sorted(metrics) == sorted(units)
    for name, unit in units.items():
        col = f"{name} [{unit}]"
        err = (pred.loc[truth.index, col] - truth[col]).abs()
        m = metrics[name]
        assert m["unit"] == unit and m["n"] == len(truth)
        # predictions.csv holds 8 significant digits: that rounding is the tolerance.
        tol = 1e-7 * float(pred[col].abs().max() + truth[col].abs().max())
        assert m["mae"] == pytest.approx(err.mean(), abs=tol)
        assert m["rmse"] == pytest.approx(np.sqrt((err ** 2).mean()), abs=tol)
        assert m["chemical_accuracy"] == chem_acc[name]
        assert m["ratio"] == pytest.approx(err.mean() / chem_acc[name], abs=tol / chem_acc[name])
        row = next(line for line in printed.splitlines() if line.startswith(f"| {name} "))
        assert f"{m['mae']:.4g}" in row and f"{m['ratio']:.2f}" in row, row


@pytest.fixture
def check_reported_mae():
    """``check(metrics, predictions_csv, labels_csv, printed_text, {target: unit})``."""
    return _check
