"""The core quickstart notebook runs end to end on tiny settings and its numbers agree.

The notebook trains with ``restore_best`` on ``val_accuracy``, saves the model with
its sidecar, loads it back (``safe_mode=True``) and prints the held-out accuracy of
the loaded model on the validation images. That number must equal the best
``val_accuracy`` the training loop recorded: it fails when the loop's validation
metric is wrong, when the best weights are not restored, or when saving and
loading loses or changes weights (BatchNorm statistics included); and it fails
when the model does not learn the task (chance is 0.5).
"""
import ast
import re

import deepsci.core


def test_quickstart_notebook_agrees_with_its_training_history(run_notebook):
    text, _ = run_notebook("quickstart")
    history = ast.literal_eval(re.search(r"\[\(\d+,.*?\)\]", text, re.S).group(0))
    # Outputs are joined without separators: "...(4, 0.021, 0.5)]quickstart 0.1.0 held-out ...".
    printed = re.search(r"(\w+) (\S+) held-out accuracy ([0-9.]+)", text)
    assert printed, text[-1000:]
    app, version, accuracy = printed.group(1), printed.group(2), float(printed.group(3))
    assert (app, version) == ("quickstart", deepsci.core.__version__)
    best_val = max(val for _, _, val in history)
    # The history shows val_accuracy rounded to 3 decimals; 20 images give multiples of 0.05.
    assert abs(accuracy - best_val) < 1e-3, (accuracy, history)
    assert accuracy >= 0.7, history
