import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import shard_funcs  # noqa: E402

from deepsci.core.errors import ConfigError  # noqa: E402
from deepsci.core.parallel import marker_path, run_shards, threads_per_worker  # noqa: E402


def _tasks(out, n=5):
    return [{"i": i, "out": str(out)} for i in range(n)]


def _key(t):
    return f"shard:{t['i']}"


@pytest.mark.parametrize("scheduler", ["inline", "local"])
def test_runs_every_shard_and_writes_markers(tmp_path, scheduler):
    results = run_shards(shard_funcs.square, _tasks(tmp_path), key=_key, state_dir=tmp_path / "state",
                         scheduler=scheduler, workers=2, progress=False)
    assert list(results) == [f"shard:{i}" for i in range(5)]
    assert [r["square"] for r in results.values()] == [0, 1, 4, 9, 16]
    assert all(marker_path(tmp_path / "state", _key(t)).exists() for t in _tasks(tmp_path))
    assert (tmp_path / "4.txt").read_text() == "16"


def test_rerun_skips_finished_shards(tmp_path):
    with pytest.raises(RuntimeError, match="shard 3 broke"):
        run_shards(shard_funcs.fail_on_three, _tasks(tmp_path), key=_key, state_dir=tmp_path / "s",
                   scheduler="inline", progress=False)
    done = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert done == ["shard_0.done.json", "shard_1.done.json", "shard_2.done.json"]
    (tmp_path / "0.txt").unlink()  # a skipped shard is not run again
    results = run_shards(shard_funcs.square, _tasks(tmp_path), key=_key, state_dir=tmp_path / "s",
                         scheduler="inline", progress=False)
    assert [r["square"] for r in results.values()] == [0, 1, 4, 9, 16]
    assert not (tmp_path / "0.txt").exists() and (tmp_path / "3.txt").exists()


def test_bad_scheduler_and_duplicate_keys(tmp_path):
    with pytest.raises(ConfigError, match="scheduler"):
        run_shards(shard_funcs.square, _tasks(tmp_path), key=_key, state_dir=tmp_path,
                   scheduler="ftp://x", progress=False)
    with pytest.raises(ConfigError, match="unique"):
        run_shards(shard_funcs.square, _tasks(tmp_path), key=lambda t: "same", state_dir=tmp_path,
                   scheduler="inline", progress=False)


@pytest.mark.parametrize(("scheduler", "workers", "expected"),
                         [("local", 2, 1), (None, 1, 2), ("local", 8, 1), ("inline", 2, None),
                          ("tcp://10.0.0.1:8786", 2, None)])
def test_threads_per_worker_shares_the_cores(monkeypatch, scheduler, workers, expected):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert threads_per_worker(scheduler, workers) == expected


def test_limit_tf_threads_pins_a_fresh_process():
    # A fresh interpreter: TensorFlow's pools can only be sized before its first op.
    code = ("from deepsci.core.parallel import limit_tf_threads; import tensorflow as tf, os;"
            "n = limit_tf_threads(1); tf.constant(1.0) + 1.0;"
            "print(n, tf.config.threading.get_inter_op_parallelism_threads(), os.environ['OMP_NUM_THREADS'],"
            " limit_tf_threads(2))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-4:] == ["1", "1", "1", "1"]
