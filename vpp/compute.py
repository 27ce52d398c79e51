"""Where parallel work runs: a Dask client for a local cluster of N worker processes, or an existing cluster.

One context manager for everything that fans out (scenario sweeps, the
optimizer's decomposition, the daemon): ``--workers N`` starts a
``LocalCluster`` of N single-threaded worker processes without a dashboard,
and ``--scheduler tcp://host:8786`` connects to a cluster someone else runs
(its workers must see the same files and the same installed engine).
Nothing here seeds anything: results must not depend on which worker ran a
task, so callers derive seeds from their inputs.
"""

from __future__ import annotations

import logging

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from vpp.errors import InputError

if TYPE_CHECKING:
    from distributed import Client


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Client]:
    """A connected ``distributed.Client``; the local cluster (if any) is shut down on exit."""
    if workers is not None and scheduler is not None:
        raise InputError("--workers/--scheduler", "workers", f"{workers} and {scheduler}", "either a worker count or a scheduler address, not both")
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # the 'cluster' extra is not installed
        raise InputError("--workers", "dask", "not installed", 'the Dask extra: pip install "vpp-engine[cluster]"') from exc
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise InputError("--scheduler", "scheduler", scheduler, f"a reachable Dask scheduler ({exc})") from exc
        try:
            yield client
        finally:
            client.close()
        return
    n = workers or 1
    if n < 1:
        raise InputError("--workers", "workers", n, "at least 1")
    import dask

    # Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=64 KiB, returning freed memory to the OS
    # at once. Optimization pieces allocate and free many small arrays: with it, 250 piece LPs per
    # worker took 12.1 s against 9.4 s in a plain process pool; with 128 MiB, 10.3 s (measured,
    # docs/architecture.md).
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 128 * 1024 * 1024}):
        # silence_logs: a task's failure reaches the caller as its exception; what the workers would log
        # besides is shutdown noise (a comm closed while the cluster stops, printed as a traceback)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.CRITICAL)
    quiet = logging.getLogger("distributed")
    level, quiet.level = quiet.level, logging.CRITICAL  # the scheduler in this process logs the same noise
    try:
        with cluster, Client(cluster) as client:
            yield client
    finally:
        quiet.setLevel(level)
