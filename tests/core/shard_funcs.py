"""Top-level shard functions (picklable for Dask workers) used by test_parallel."""
from pathlib import Path

from deepsci.core.io import write_text


def square(task):
    out = Path(task["out"]) / f"{task['i']}.txt"
    write_text(out, str(task["i"] ** 2))
    return {"i": task["i"], "square": task["i"] ** 2}


def fail_on_three(task):
    if task["i"] == 3:
        raise RuntimeError("shard 3 broke")
    return square(task)
