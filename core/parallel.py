"""Embarrassingly parallel shards (regions, slides, sub-volumes) on Dask.

One helper runs a function over tasks on a local cluster by default or on a
running Dask cluster given its scheduler address, so the same command scales
from a laptop to many machines. Each finished shard leaves a marker holding
its result; a re-run skips those and returns what they recorded.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import ConfigError
from .io import read_json, write_json
from .progress import progress

__all__ = ["run_shards", "marker_path", "limit_tf_threads", "threads_per_worker"]


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key)


def marker_path(state_dir: str | os.PathLike, key: str) -> Path:
    """Where the completion marker of shard ``key`` lives."""
    return Path(state_dir) / f"{_safe(key)}.done.json"


def threads_per_worker(scheduler: str | None, workers: int | None) -> int | None:
    """TensorFlow threads each shard should use so local workers share the cores.

    ``None`` (leave TensorFlow's default: one thread per core) for ``"inline"``
    and for remote clusters, whose machines this process cannot see.
    """
    if scheduler not in (None, "local"):
        return None
    cores = os.cpu_count() or 1
    return max(1, cores // (workers or cores))


def limit_tf_threads(threads: int | None) -> int:
    """Pin this process's TensorFlow pools to ``threads``; return the intra-op count in force.

    Call it in a worker before TensorFlow runs its first op. Several local
    Dask workers each default to one thread per core, which oversubscribes
    the cores ``workers``-fold. Once TensorFlow is running its pools are kept.
    """
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1 if threads == 1 else 2)
        except RuntimeError:
            pass
        else:  # native libraries that size their own pools from the environment
            os.environ["OMP_NUM_THREADS"] = str(threads)
    return tf.config.threading.get_intra_op_parallelism_threads() or (os.cpu_count() or 1)


def _run_one(func: Callable, task, marker: str):
    result = func(task)
    json.dumps(result)  # fail in the worker, with its traceback, if not serialisable
    write_json(marker, {"result": result})
    return result


def run_shards(
    func: Callable,
    tasks: Sequence,
    *,
    key: Callable[[object], str],
    state_dir: str | os.PathLike,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    progress: bool = True,  # noqa: A002 - public keyword
    desc: str = "shards",
) -> dict[str, object]:
    """Run ``func(task)`` for every task not already finished; return all results.

    Parameters
    ----------
    func : callable
        Picklable top-level function; writes its own outputs atomically and
        returns something JSON-serialisable.
    tasks : sequence
        Picklable task descriptions.
    key : callable
        Unique, stable name of a task (e.g. ``"chrI:0-100000"``).
    state_dir : path
        Where completion markers live.
    scheduler : str, optional
        ``None`` or ``"local"``: a Dask ``LocalCluster`` of ``workers``
        processes; ``"tcp://host:port"``: an existing cluster; ``"inline"``:
        run in this process without Dask.
    workers : int, optional
        Local worker processes (default: the CPU count).
    threads_per_worker : int
        Threads per local worker.

    Returns
    -------
    dict
        ``key -> result`` for every task, finished now or before.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    keys = [key(t) for t in tasks]
    if len(set(keys)) != len(keys):
        raise ConfigError("expected unique shard keys, found duplicates")
    results: dict[str, object] = {}
    todo = []
    for k, t in zip(keys, tasks, strict=True):
        marker = marker_path(state_dir, k)
        if marker.exists():
            results[k] = read_json(marker)["result"]
        else:
            todo.append((k, t, str(marker)))
    bar = _bar(len(keys), len(results), desc, progress)
    try:
        if scheduler == "inline":
            for k, t, marker in todo:
                results[k] = _run_one(func, t, marker)
                bar.update(1)
        elif todo:
            _run_dask(func, todo, results, bar, scheduler, workers, threads_per_worker)
    finally:
        bar.close()
    return {k: results[k] for k in keys}


def _bar(total: int, done: int, desc: str, show: bool):
    return progress(total=total, desc=desc, unit="shard", initial=done,
                    disable=None if show else True)


def _run_dask(func, todo, results, bar, scheduler, workers, threads_per_worker):
    from dask.distributed import Client, LocalCluster, as_completed

    if scheduler in (None, "local"):
        cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1,
                               threads_per_worker=threads_per_worker, processes=True,
                               # ":0" (a free port): None still binds 8787 and warns
                               # when a second cluster runs on the machine.
                               dashboard_address=":0", silence_logs=40)
        client = Client(cluster)
    elif scheduler.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        cluster, client = None, Client(scheduler)
    else:
        raise ConfigError(f"expected a scheduler 'local', 'inline' or tcp://host:port, found {scheduler!r}")
    try:
        futures = {client.submit(_run_one, func, t, marker, key=f"shard-{k}", pure=False): k
                   for k, t, marker in todo}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
