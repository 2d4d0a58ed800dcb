"""The runner's Dask cluster (``./run_all.sh --cluster local|ADDRESS``): started or reached once, before any notebook
runs; its scheduler address goes to every notebook as the ``cluster`` parameter, which the notebooks hand to the
sweeps (``floss_core.experiments.sharding``); closed (if started here) after the last notebook.

    local               a ``distributed.LocalCluster`` on this machine: one single-threaded worker process per core
                        (``n_workers``: FLOSS_THREADS, default all cores), its dashboard on a free port, started
                        without Dask's malloc setting that slows the engines (``sharding.local_cluster``)
    tcp://HOST:PORT     an existing scheduler (``dask scheduler``, dask-jobqueue's ``SLURMCluster``, ...): reached
                        once here, so that an unreachable address stops the run before any notebook (exit 2)

Its workers must import the same floss_core code as the runner (checked here, by the cache's code version, on the
workers connected at the start): the cache files a result under the runner's code version.

dask is imported only here, only when ``--cluster`` is given.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from dataclasses import dataclass

from .settings import UsageError

__all__ = ["ClusterInfo", "check_cluster_spec", "open_cluster"]

LOCAL = "local"


@dataclass
class ClusterInfo:
    """Where the notebooks' shards run."""

    address: str  # the scheduler, passed to the notebooks
    dashboard: str | None  # Dask's dashboard, for a browser
    workers: int  # worker processes now
    threads: int  # task slots over all workers

    def describe(self) -> str:
        dashboard = self.dashboard or "(none)"
        if self.dashboard and importlib.util.find_spec("bokeh") is None:  # Dask serves its dashboard with bokeh
            dashboard += " (Dask serves it with bokeh, which is not installed here: pip install bokeh)"
        return (f"Dask scheduler {self.address}, {self.workers} worker(s), {self.threads} thread(s); "
                f"dashboard {dashboard}")


def check_cluster_spec(spec: str) -> None:
    """UsageError unless ``spec`` is "local" or looks like a scheduler address "SCHEME://HOST:PORT"."""
    if spec == "none":
        raise UsageError("--cluster 'none' means no cluster: the runner handles it; open_cluster needs 'local' or an "
                         "address like tcp://HOST:PORT")
    scheme, sep, rest = spec.partition("://")
    if spec != LOCAL and not (sep and scheme and rest):
        raise UsageError(f"--cluster must be 'local', 'none' or a scheduler address like tcp://HOST:PORT, got {spec!r}")


@contextlib.contextmanager
def open_cluster(spec: str, *, n_workers: int):
    """The cluster ``spec`` describes, as a ClusterInfo, for the duration of the block.

    "local" starts a LocalCluster of ``n_workers`` single-threaded worker processes and closes it afterwards; an
    address is reached with a client (kept open meanwhile, closed afterwards). UsageError naming the address when
    it cannot be reached, or when dask.distributed is missing."""
    check_cluster_spec(spec)
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--cluster needs dask.distributed: pip install 'dask[distributed]' (or the package's "
                         "[notebooks] extra)") from None
    from ..experiments.sharding import connect, local_cluster, warn_slow_workers

    with contextlib.ExitStack() as stack:
        if spec == LOCAL:
            cluster = stack.enter_context(local_cluster(n_workers, dashboard_address=":0", silence_logs=logging.ERROR))
            client = stack.enter_context(Client(cluster, set_as_default=False))
        else:
            try:
                client, _ = connect(spec)
            except (ConnectionError, ValueError) as err:
                raise UsageError(str(err)) from None
            stack.callback(client.close)
        _check_code(client)
        warn_slow_workers(client)
        nthreads = client.nthreads()
        address = cluster.scheduler_address if spec == LOCAL else spec
        yield ClusterInfo(address, client.dashboard_link, len(nthreads), sum(nthreads.values()))


def _worker_code() -> tuple[str, str]:
    """(code version, package directory) of the floss_core a worker imports."""
    import floss_core

    from .cache import code_version

    return code_version(), os.path.dirname(floss_core.__file__)


def _check_code(client) -> None:
    """UsageError unless every worker imports the same floss_core code as this process (the cache keys results by
    this process's code version, so workers running other code would put wrong numbers under it)."""
    here, _ = _worker_code()
    other = {worker: (version, path) for worker, (version, path) in client.run(_worker_code).items() if version != here}
    if other:
        worker, (version, path) = sorted(other.items())[0]
        raise UsageError(f"{len(other)} Dask worker(s) import other floss_core code than this run (code version "
                         f"{here}): e.g. {worker} imports {path} (code version {version}); give the workers this "
                         "checkout and environment")
