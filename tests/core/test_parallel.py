import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import shard_funcs  # noqa: E402

from deepsci.core.errors import ConfigError  # noqa: E402
from deepsci.core.parallel import (  # noqa: E402
    marker_path,
    open_cluster,
    run_shards,
    threads_per_worker,
    worker_tf_threads,
)


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


def test_open_cluster_shares_cores_and_serves_run_shards(tmp_path):
    with open_cluster("local", 2) as (client, started_here):
        assert started_here
        threads = worker_tf_threads(client)
        assert len(threads) == 2
        assert set(threads.values()) == {max(1, (os.cpu_count() or 1) // 2)}
        results = run_shards(shard_funcs.square, _tasks(tmp_path, 3), key=_key, state_dir=tmp_path / "s",
                             client=client, progress=False)
        assert [r["square"] for r in results.values()] == [0, 1, 4]
        assert client.status == "running"  # a given client is left open for the next run
    assert client.status == "closed"
    with pytest.raises(ConfigError, match="scheduler"), open_cluster("ftp://x"):
        pass


def test_exit_fast_at_shutdown_skips_teardown_but_flushes(tmp_path):
    flag = tmp_path / "teardown-ran"
    code = ("import atexit, pathlib; from deepsci.core.parallel import exit_fast_at_shutdown;"
            f"atexit.register(lambda: pathlib.Path({str(flag)!r}).write_text('x'));"
            "exit_fast_at_shutdown(); exit_fast_at_shutdown(); print('flushed', end='')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (out.returncode, out.stdout) == (0, "flushed")
    assert not flag.exists()  # handlers registered before it (the slow teardown) are skipped


def test_card_reads_without_tensorflow(tmp_path):
    import json

    from deepsci.core.models.card import ModelCard

    (tmp_path / "m.keras").write_bytes(b"")
    (tmp_path / "m.card.json").write_text(json.dumps(ModelCard(app="x", task="t").to_dict()))
    code = ("import sys; from deepsci.core.models.card import read_card;"
            f"print(read_card({str(tmp_path / 'm.keras')!r}).app, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["x", "False"]
    from deepsci.core.errors import InputError
    from deepsci.core.models.card import read_card
    (tmp_path / "m.card.json").unlink()
    with pytest.raises(InputError, match="model card m.card.json"):
        read_card(tmp_path / "m.keras")
