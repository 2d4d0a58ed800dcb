"""Running a sweep as shards of networks, in this process or on a Dask cluster, with the same numbers.

A sweep's networks are independent, so its work is split into *shards*: independent ensembles of at most
``shard_size`` networks (a field of every sweep config; default 16), each computing a contiguous range
[start, stop) of one stage's networks, say networks 8-15 of the training of a delay sweep. In this process the
shards run one after the other; on a cluster each is one Dask task and they run at once. Either way a shard is the
same computation on the same tensors, so the gathered result is bit-identical to the in-process one, given the same
number of torch threads per shard (the cluster's workers: one each, by Dask's default).

Why whole shards, and not any split of an ensemble: a network's numbers depend, at the level of roundoff, on the
ensemble it is computed in, even though every network draws from generators of its own
(``common.network_generators``). Measured here (torch 2.13, MKL, AVX-512): a batch of one matrix-vector product (the
one-output readout of a one-network ensemble) takes other code than a batch of several; MKL's Cholesky and
triangular solves (the fast spectrum engine's QR at odd k) and float64 ``baddbmm`` give bits that depend on each
matrix's memory alignment, i.e. on its position in the ensemble; the fast engine picks its sub-batches from E and
decides its float32-to-float64 fallback per sub-batch; the long-term-Jacobian SVD iterates until every matrix of its
batch has converged. So the shards are the unit of computation: the numbers depend on ``shard_size`` (roundoff
only), never on where the shards run.

``open_executor(cluster)`` gives the place where shards run:

    None                        this process (no dask import at all)
    distributed.Client          that client's cluster (left open)
    "tcp://HOST:PORT"           the scheduler there (a client is connected for the sweep and closed after it)
    a dask Cluster              its scheduler (``LocalCluster``, dask-jobqueue's ``SLURMCluster``, ...)

On a cluster a stage's tasks take the results they need from the previous stage's tasks as Dask dependencies.
Tasks are pure (inputs: the sweep's frozen config, the network range and the results they depend on; every random
stream is made inside the task; nothing is modified in place), so the scheduler may rerun any of them: when a worker
dies, it recomputes the shards that were running or held there, with the same result. A shard that raises is
reported as ``ShardError("shard of networks 8-15 of delay_sweep failed: ValueError: ...")``.
"""
from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from dataclasses import dataclass

import torch

from ..checks import check_int

__all__ = ["Shard", "ShardError", "connect", "join", "local_cluster", "open_executor", "ranges", "worker_environment"]


_NO_DASK = ("running a sweep on a cluster needs dask.distributed (pip install 'dask[distributed]', or "
            "floss_core[notebooks])")


class ShardError(RuntimeError):
    """A shard of a sweep failed on a cluster; the message names its networks and the original error."""


@dataclass(frozen=True)
class Shard:
    """Networks [start, stop) of one stage of a sweep (``unit`` names what is counted: networks, seeds)."""
    sweep: str
    start: int
    stop: int
    stage: str = ""
    unit: str = "networks"

    def __str__(self) -> str:
        stage = f" ({self.stage})" if self.stage else ""
        return f"shard of {self.unit} {self.start}-{self.stop - 1} of {self.sweep}{stage}"


def ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges covering 0..n-1 in order: as few as hold at most ``shard_size`` each, balanced (sizes
    differ by at most one)."""
    n_shards = -(-n // shard_size)
    sizes = [n // n_shards + (i < n % n_shards) for i in range(n_shards)]
    starts = [sum(sizes[:i]) for i in range(n_shards)]
    return [(a, a + size) for a, size in zip(starts, sizes)]


def join(parts: list, dims: dict | None = None) -> dict:
    """The results of a stage's shards (dicts of tensors, in network order) as one: each tensor concatenated along
    its network dimension (``dims[key]``, default 0); any other value is taken from the first shard."""
    dims = dims or {}
    return {key: torch.cat([p[key] for p in parts], dims.get(key, 0)) if isinstance(value, torch.Tensor) else value
            for key, value in parts[0].items()}


def run_shard(shard: Shard, fn, *args):
    """``fn(*args)`` on a worker; an error is raised again as ShardError naming the shard."""
    try:
        return fn(*args)
    except ShardError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the shard's computation, named
        raise ShardError(f"{shard} failed: {type(err).__name__}: {err}") from err


# Dask's nanny starts every worker with MALLOC_TRIM_THRESHOLD_=65536 (``distributed.nanny.pre-spawn-environ``), so
# that workers give freed memory back to the system. Setting it also fixes glibc's mmap threshold at 128 KiB, so
# every tensor above that is a fresh mmap whose pages fault on first touch, and is unmapped when freed. The engines
# allocate such tensors at every step: measured on a 2-core CPU, one thread, figure 3's shards (27 networks, N = 80,
# k = 75): 50 flossing steps 4.5 s -> 6.4 s, 301 training steps with 100 flossing steps 45.8 s -> 59.3 s (the
# flossing 1.65x slower, the training ~6%). Without the variable glibc adapts its thresholds and reuses the memory.
SLOW_WORKER_ENV = "MALLOC_TRIM_THRESHOLD_"


@contextlib.contextmanager
def worker_environment():
    """Within the block, Dask nannies start their workers without ``MALLOC_TRIM_THRESHOLD_`` (see above). Wrap the
    creation of a Dask cluster in it. Dask's nanny also writes the variable into the environment of the process that
    starts it (where it stays, and where it would take precedence over the config), so the block removes it from
    ``os.environ`` too and puts back what was there on the way out. Needs dask.distributed 2023.9.1 or later (a
    None in the nanny's environment config unsets the variable from then on)."""
    import dask

    try:  # its config defaults first: else the block would end by removing the whole "distributed" config section
        import distributed  # noqa: F401
    except ImportError:
        pass
    before = os.environ.pop(SLOW_WORKER_ENV, None)
    try:
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{SLOW_WORKER_ENV}": None}):
            yield
    finally:
        os.environ.pop(SLOW_WORKER_ENV, None)
        if before is not None:
            os.environ[SLOW_WORKER_ENV] = before


def local_cluster(n_workers: int | None = None, **kwargs):
    """A ``distributed.LocalCluster`` for the sweeps: ``n_workers`` (default: one per core) single-threaded worker
    processes, started without the malloc setting that slows the engines (``worker_environment``); ``kwargs`` go
    to LocalCluster (e.g. ``dashboard_address=None``). Use it as a context manager, or close it. Workers its
    nannies restart keep that environment unless this process's own has the variable; workers added later
    (``scale``, ``adapt``) get Dask's default (the sweeps warn)."""
    check_int("n_workers", n_workers, 1, none=True)
    try:
        from distributed import LocalCluster
    except ImportError as err:
        raise ImportError(_NO_DASK) from err
    if kwargs.get("asynchronous"):
        raise ValueError("local_cluster starts its workers at once (asynchronous=True would start them after the "
                         "worker environment is restored)")
    kwargs = {"threads_per_worker": 1, "processes": True, **kwargs}
    with worker_environment():
        return LocalCluster(n_workers=n_workers or os.cpu_count() or 1, **kwargs)


def slow_workers(client) -> list[str]:
    """The workers of ``client`` that run with ``MALLOC_TRIM_THRESHOLD_`` set (see above), by address."""
    env = client.run(_slow_setting, on_error="ignore")  # {worker: value or the error of one that did not answer}
    return sorted(worker for worker, value in env.items() if value is not None and not isinstance(value, BaseException))


def _slow_setting():
    """On a worker: its MALLOC_TRIM_THRESHOLD_, or None. (A function of this module, so that the worker reads its
    own environment: ``os.environ.get`` itself would be pickled together with this process's environment.)"""
    return os.environ.get(SLOW_WORKER_ENV)


_WARNED: set = set()  # schedulers already warned about


def warn_slow_workers(client) -> None:
    """A RuntimeWarning (once per scheduler) when some of the cluster's workers run with ``MALLOC_TRIM_THRESHOLD_``
    set, naming how many and the remedy."""
    try:
        slow = slow_workers(client)
    except Exception:  # noqa: BLE001 - a worker that does not answer (dying, restarting): no warning, no failure
        return
    address = client.scheduler.address
    if slow and address not in _WARNED:
        _WARNED.add(address)
        warnings.warn(f"{len(slow)} of {len(client.nthreads())} Dask worker(s) at {address} run with "
                      f"{SLOW_WORKER_ENV} set (Dask's default for workers started by a nanny), which makes the "
                      "engines up to 1.7x slower; start the workers inside floss_core.experiments.sharding."
                      f"worker_environment(), with local_cluster(), or set the Dask config "
                      f"distributed.nanny.pre-spawn-environ.{SLOW_WORKER_ENV} to null", RuntimeWarning, stacklevel=3)


def connect(cluster, timeout=None):
    """(client, owned): a ``distributed.Client`` for ``cluster`` (a Client, a scheduler address or a dask Cluster);
    ``owned`` is True when it was connected here (the caller closes it). An unreachable scheduler raises
    ConnectionError naming its address, after ``timeout`` (default: dask's distributed.comm.timeouts.connect)."""
    try:
        from distributed import Client
    except ImportError as err:
        raise ImportError(_NO_DASK) from err
    if isinstance(cluster, Client):
        return cluster, False
    address = getattr(cluster, "scheduler_address", cluster)
    if not isinstance(address, str) or not address:
        raise ValueError("cluster must be None, a distributed.Client, a scheduler address such as "
                         f"'tcp://HOST:PORT' or a dask Cluster, got {cluster!r}")
    try:
        _probe(address, timeout)
        return Client(address, set_as_default=False, **({} if timeout is None else {"timeout": timeout})), True
    except ValueError as err:  # distributed's parsing of the address
        raise ValueError(f"invalid Dask scheduler address {address!r}: {err}") from None
    except Exception as err:  # noqa: BLE001 - refused, timed out, not a Dask scheduler: one message
        raise ConnectionError(f"cannot reach the Dask scheduler at {address}: {type(err).__name__}: {err}") from None


def _probe(address: str, timeout) -> None:
    """For a tcp:// address, fail at once (OSError) where nothing listens, instead of retrying until the timeout."""
    import socket

    import dask
    from dask.utils import parse_timedelta
    from distributed.comm import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme == "tcp":
        seconds = parse_timedelta(timeout if timeout is not None else
                                  dask.config.get("distributed.comm.timeouts.connect"), "s")
        socket.create_connection(parse_host_port(location), timeout=seconds).close()


class InProcess:
    """Shards run here, one after the other, as they are submitted; errors propagate unchanged."""

    def submit(self, shard: Shard, fn, *args):
        return fn(*args)

    def gather(self, items: list, shards: list) -> list:
        return list(items)

    def close(self) -> None:
        pass


class OnDask:
    """Shards are Dask tasks; ``gather`` waits for them and returns their results in order."""

    def __init__(self, client, owned: bool, progress: bool):
        self.client, self.owned, self.progress = client, owned, progress
        warn_slow_workers(client)
        self.token = uuid.uuid4().hex[:12]  # task keys of this sweep call
        self.futures = []

    def submit(self, shard: Shard, fn, *args):
        key = f"{shard.sweep}-{shard.stage or 'shard'}-{shard.start}-{shard.stop}-{self.token}".replace(" ", "")
        future = self.client.submit(run_shard, shard, fn, *args, key=key, pure=False)
        self.futures.append(future)
        return future

    def gather(self, futures: list, shards: list) -> list:
        from distributed import as_completed
        from tqdm.auto import tqdm

        shard_of = {future.key: shard for future, shard in zip(futures, shards)}
        done = as_completed(futures, loop=self.client.loop)  # (the client need not be the default one)
        for future in tqdm(done, total=len(futures), disable=not self.progress, desc="shards"):
            if future.status != "finished":  # the first failure stops the sweep
                self._raise(future, shard_of[future.key])
        return [future.result() for future in futures]

    @staticmethod
    def _raise(future, shard: Shard):
        try:
            future.result()
        except ShardError:
            raise
        except Exception as err:  # noqa: BLE001 - a lost task (KilledWorker, ...) is named like a failed one
            raise ShardError(f"{shard} failed: {type(err).__name__}: {err}") from err

    def close(self) -> None:
        if self.futures:
            self.client.cancel(self.futures)
        if self.owned:
            self.client.close()


@contextlib.contextmanager
def open_executor(cluster=None, *, progress: bool = True):
    """Where a sweep's shards run (see the module docstring): a context that releases the cluster's tasks (and closes
    a client it connected) on the way out, also after an error."""
    if cluster is None:
        executor = InProcess()
    else:
        client, owned = connect(cluster)
        try:
            executor = OnDask(client, owned, progress)
        except BaseException:
            if owned:
                client.close()
            raise
    try:
        yield executor
    finally:
        executor.close()
