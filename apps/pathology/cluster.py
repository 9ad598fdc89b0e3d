"""Dask clusters for ``heatmap``: one started for a run, or a running one reused across runs.

A pathology team keeps a cluster up and submits slides all day
(``dask scheduler`` and ``dask worker tcp://host:8786 --nworkers 2 --nthreads 1``,
then ``deepsci pathology heatmap --scheduler tcp://host:8786 ...``). Each worker
process keeps its loaded model between runs (:func:`.predict.engine`), so
only the first run on a cluster pays TensorFlow's import, model loading and
tracing. When no cluster is given, a local one is started for the run.

Either way the model is loaded in every worker as soon as the cluster is up
(:func:`warm_up`), while this process is still checking the slides, and a
local cluster started here is closed without waiting for each worker's
interpreter teardown (every output is written before its task returns).
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

from deepsci.core import parallel
from deepsci.core.parallel import worker_tf_threads as worker_threads

__all__ = ["open_cluster", "worker_threads", "worker_tf_threads", "warm_up"]


@contextmanager
def open_cluster(scheduler: str | None, workers: int, threads: int | None = None):
    """Start a local cluster of ``workers`` processes, or connect to ``tcp://host:port``.

    Parameters
    ----------
    scheduler : str or None
        ``None``/``"local"`` or a scheduler address.
    workers : int
        Local worker processes (ignored for a running cluster).
    threads : int, optional
        TensorFlow threads per worker; default: the cores split among the
        Dask threads of each machine (:func:`worker_threads`).

    Yields
    ------
    (distributed.Client, dict)
        The client and ``worker address -> TensorFlow threads`` its tasks should use.
    """
    with parallel.open_cluster(scheduler, workers) as (client, local):
        if local:
            # Dask's own guard (a pipe the worker watches) acts only once a worker has
            # finished starting, and a worker importing TensorFlow may take tens of seconds
            # to notice; the kernel kills these at once when this process dies (SIGKILL too).
            client.run(parallel.die_with_parent)
        # One rule for local and running clusters (on a local one: cores // workers).
        tf_threads = worker_threads(client)
        if threads:
            tf_threads = {w: threads for w in tf_threads}
        yield client, tf_threads


def worker_tf_threads() -> int | None:
    """In a Dask worker: its :func:`worker_threads` count from the scheduler's current view.

    For a worker that joined a running cluster after the run mapped the
    threads (``None`` outside a worker).
    """
    from distributed import get_client, get_worker

    try:
        worker = get_worker()
    except ValueError:
        return None
    return worker_threads(get_client()).get(worker.address)


def warm_up(client, tf_threads: dict[str, int | None], func: Callable, *args, todo: int) -> list:
    """Run ``func(*args, threads)`` once on every worker, now; return the futures.

    Skipped (``[]``) when there are fewer slides to do (``todo``) than
    workers: a worker that gets no slide would load the model for nothing,
    on cores the others are using. Keep the futures until the run ends
    (dropping them cancels the work).
    """
    import uuid

    if todo < len(tf_threads):
        return []
    run = uuid.uuid4().hex[:8]
    return [client.submit(func, *args, threads, workers=[addr], allow_other_workers=False,
                          pure=False, key=f"warm-up-{run}-{addr}")
            for addr, threads in tf_threads.items()]
