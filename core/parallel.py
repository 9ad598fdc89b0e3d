"""Embarrassingly parallel shards (regions, slides, sub-volumes) on Dask.

One helper runs a function over tasks on a local cluster by default or on a
running Dask cluster given its scheduler address, so the same command scales
from a laptop to many machines. Each finished shard leaves a marker holding
its result; a re-run skips those and returns what they recorded.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError
from .io import read_json, write_json
from .progress import progress

__all__ = ["run_shards", "marker_path", "limit_tf_threads", "threads_per_worker", "open_cluster",
           "worker_tf_threads", "exit_fast_at_shutdown", "REMOTE_SCHEMES", "process_map",
           "thread_map", "start_child", "die_with_parent"]

#: Scheduler address prefixes of a running cluster.
REMOTE_SCHEMES = ("tcp://", "tls://", "ucx://", "inproc://")


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
    client=None,
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
    client : distributed.Client, optional
        Run on this client's cluster (from :func:`open_cluster`, e.g. after
        warming its workers up) instead of opening one; ``scheduler`` and
        ``workers`` are then ignored and the client is left open.

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
        if client is not None:
            _submit_all(client, func, todo, results, bar)
        elif scheduler == "inline":
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
    with open_cluster(scheduler, workers, threads_per_worker=threads_per_worker) as (client, _):
        _submit_all(client, func, todo, results, bar)


def _submit_all(client, func, todo, results, bar):
    from dask.distributed import as_completed

    futures = {client.submit(_run_one, func, t, marker, key=f"shard-{k}", pure=False): k
               for k, t, marker in todo}
    for future in as_completed(futures):
        results[futures[future]] = future.result()
        bar.update(1)


@contextmanager
def open_cluster(scheduler: str | None = None, workers: int | None = None, *,
                 threads_per_worker: int = 1) -> Iterator[tuple[object, bool]]:
    """Start a local Dask cluster for one run, or connect to a running one.

    A local cluster's workers skip the interpreter teardown when it closes
    (:func:`exit_fast_at_shutdown`): with TensorFlow loaded that teardown takes
    seconds per worker, and every task here has written its outputs
    atomically before returning.

    Parameters
    ----------
    scheduler : str, optional
        ``None``/``"local"``: a ``LocalCluster`` of ``workers`` processes;
        ``"tcp://host:port"`` (or tls/ucx/inproc): that cluster, left running.
    workers : int, optional
        Local worker processes (default: the CPU count).
    threads_per_worker : int
        Dask threads per local worker.

    Yields
    ------
    (distributed.Client, bool)
        The client, and whether the cluster was started here.
    """
    from dask.distributed import Client, LocalCluster

    if scheduler in (None, "local"):
        n = workers or os.cpu_count() or 1
        cluster = LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True,
                               # ":0" (a free port): None still binds 8787 and warns
                               # when a second cluster runs on the machine.
                               dashboard_address=":0", silence_logs=40)
        client = Client(cluster)
        client.wait_for_workers(n)
        client.run(exit_fast_at_shutdown)
        # The workers are this process's children (their nannies live here): a SIGKILLed
        # run must not leave them computing and writing shards.
        client.run(die_with_parent, os.getpid())
    elif isinstance(scheduler, str) and scheduler.startswith(REMOTE_SCHEMES):
        cluster, client = None, Client(scheduler)
    else:
        raise ConfigError(f"expected a scheduler 'local', 'inline' or tcp://host:port, found {scheduler!r}")
    try:
        yield client, cluster is not None
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def worker_tf_threads(client) -> dict[str, int]:
    """TensorFlow threads per worker address so the workers of each machine share its cores.

    Each worker gets ``cores * its Dask threads / all Dask threads on its
    host`` (at least 1): ``dask worker --nworkers 2 --nthreads 1`` on a
    2-core machine gives 1 each, instead of TensorFlow's default of one
    thread per core in every process. Works for local and running clusters.
    """
    info = client.scheduler_info(n_workers=-1)["workers"]
    cores = client.run(os.cpu_count)
    per_host: Counter = Counter()
    for w in info.values():
        per_host[w["host"]] += w["nthreads"]
    return {addr: max(1, (cores.get(addr) or 1) * w["nthreads"] // max(1, per_host[w["host"]]))
            for addr, w in info.items()}


_FAST_EXIT = False


def exit_fast_at_shutdown() -> None:
    """Let this (worker) process end without the interpreter's teardown.

    Only for workers of a cluster the run started itself and whose tasks
    write their outputs atomically before returning: stdio is flushed, then
    the process exits at once.
    """
    global _FAST_EXIT
    if not _FAST_EXIT:
        atexit.register(_exit_now)  # last registered runs first: before the slow teardown
        _FAST_EXIT = True


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask the kernel to kill this (child) process when its parent dies (Linux).

    A SIGKILLed parent runs no clean-up, so without this its pool workers and
    background children keep writing for seconds after it is gone. When
    ``parent_pid`` is given and the parent died before this call (the signal
    would then never come), this process kills itself at once.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover - no libc
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)


def _child_main(target, args, parent_pid=None):
    die_with_parent(parent_pid)
    return target(*args)


def process_map(func: Callable, items: Sequence, *, workers: int | None = None, chunksize: int = 1,
                context: str = "spawn", desc: str = "", progress: bool = False,  # noqa: A002
                initializer: Callable | None = None, initargs: tuple = ()) -> list:
    """``[func(item) for item in items]`` on a pool of processes, in order.

    Parameters
    ----------
    func : callable
        A picklable top-level function.
    items : sequence
    workers : int, optional
        Processes (default: the CPU count). With ``workers <= 1`` or a single
        item the work runs in this process: no start-up cost.
    chunksize : int
        Items sent to a worker at a time.
    context : {"spawn", "fork", "forkserver"}
        Start method; ``spawn`` is safe after TensorFlow started threads.
    initializer, initargs
        Run once in each worker first (e.g. :func:`limit_tf_threads`).

    Workers die with this process, also when it is SIGKILLed.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    items = list(items)
    workers = min(len(items), workers or os.cpu_count() or 1)
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        return [func(item) for item in items]
    bar = _bar(len(items), 0, desc, progress)
    out = []
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context(context),
                                 initializer=_pool_init,
                                 initargs=(initializer, initargs, os.getpid())) as pool:
            for result in pool.map(func, items, chunksize=max(1, chunksize)):
                out.append(result)
                bar.update(1)
    finally:
        bar.close()
    return out


def _pool_init(initializer, initargs, parent_pid=None):
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def thread_map(func: Callable, items: Sequence, *, workers: int | None = None) -> list:
    """``[func(item) for item in items]`` on threads, in order (I/O-bound work, decoders that free the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    items = list(items)
    workers = min(len(items), workers or os.cpu_count() or 1)
    if workers <= 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(func, items))


def start_child(target: Callable, args: tuple = (), *, name: str, context: str = "fork",
                daemon: bool = True):
    """Start ``target(*args)`` in a background process that dies with this one.

    ``fork`` starts at once with this process's imports (use it before
    TensorFlow starts threads); ``spawn`` where fork is unavailable or unsafe.
    """
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    ctx = mp.get_context(context if context in methods else "spawn")
    child = ctx.Process(target=_child_main, args=(target, tuple(args), os.getpid()), name=name,
                        daemon=daemon)
    child.start()
    return child
