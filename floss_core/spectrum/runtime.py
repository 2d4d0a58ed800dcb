"""The CPU runtime the fast engines share: worker threads that run independent sub-batches at once, and a pool of
large buffers kept between calls.

Threads. Intra-op threads make small batched operations slower, not faster (measured on a 2-core CPU: a flossing step
at k = 75 took 3x longer on 2 threads than on 1), so on CPU an engine runs every operation on one thread and gets its
parallelism from independent sub-batches run at once, each on a thread of its own (torch releases the GIL inside
every operation): ``run_jobs``.

Buffers. An engine's one large allocation (the stored tangent bases, T x E x B x k x N) costs a page fault per 4 KiB
on first touch on CPU (measured: ~90 ms for 270 MB, a tenth of the whole spectrum at (64, 16, 512)), so buffers are
kept for the next call of the same shape (``take_buffer`` / ``give_buffer``). The CUDA caching allocator already
does this on GPUs.
"""
from __future__ import annotations

import concurrent.futures
import os
import threading
import time

import torch

from ..checks import check_number

__all__ = ["run_jobs", "take_buffer", "give_buffer", "clear_workspace", "MIN_INTRAOP_FLOPS", "free_cores",
           "LoadMonitor"]

# The stored tangent bases are the engine's one large allocation (T x E x B x k x N). On CPU, fresh memory costs a
# page fault per 4 KiB on first touch (measured: ~90 ms for 270 MB, a tenth of the whole spectrum at (64, 16, 512)),
# so buffers are kept for the next call of the same shape once the backward (or a forward without gradient) is done.
# The CUDA caching allocator already does this on GPUs.

_WORKSPACE: dict = {}
_WORKSPACE_KEEP = 2  # buffers kept per (shape, dtype)


_WORKSPACE_LOCK = threading.RLock()  # worker threads take and give buffers concurrently (re-entrant: a
# finalizer giving a buffer back may run in a garbage collection inside the lock)


def take_buffer(shape, dtype, device) -> torch.Tensor:
    """An uninitialized buffer: one kept from an earlier call (CPU) or a new one. Always a normal tensor, also inside
    ``torch.inference_mode()`` (an inference tensor, once pooled, could not be written by a later call with grad)."""
    device = torch.device(device)
    if device.type == "cpu":
        with _WORKSPACE_LOCK:
            free = _WORKSPACE.get((tuple(shape), dtype))
            if free:
                return free.pop()
    with torch.inference_mode(False):
        return torch.empty(shape, dtype=dtype, device=device)


def give_buffer(buf: torch.Tensor) -> None:
    """Keep ``buf`` for a later ``take_buffer`` of its shape and dtype (CPU, at most a few per shape; never an
    inference tensor)."""
    if buf.device.type == "cpu" and not buf.is_inference():
        with _WORKSPACE_LOCK:
            free = _WORKSPACE.setdefault((tuple(buf.shape), buf.dtype), [])
            if len(free) < _WORKSPACE_KEEP:
                free.append(buf)


def clear_workspace() -> None:
    """Free the buffers the engine keeps between calls (CPU only)."""
    with _WORKSPACE_LOCK:
        _WORKSPACE.clear()


# Intra-op threads make these small batched operations slower, not faster (measured on a 2-core CPU: a flossing step
# at k = 75 took 3x longer on 2 threads than on 1), so on CPU the engine runs every operation on one thread and
# gets its parallelism from independent sub-batches run at once, each on a thread of its own: torch releases the
# GIL inside every operation.

# The worker threads live for one call only. A pool kept between calls slowed everything after it: training in the
# same process ran 2.3-3.3x slower after flossing until the idle pool was shut down (measured on a 2-core CPU, an
# 8-network training step: 41 ms alone, 134 ms after 20 flossing steps). Starting two threads costs ~0.1 ms a call.
_THREADS_LOCK = threading.Lock()  # guards the intra-op thread count saved by the first concurrent caller
_THREADS_STATE = {"depth": 0, "before": None}
MIN_INTRAOP_FLOPS = 2e7  # CPU, one sub-batch at a time: from this many flops per step on, intra-op threads pay


class LoadMonitor:
    """How many of this process's cores other processes leave free, from the system's CPU time (Linux'
    /proc/stat) minus this process's own, over the last ``every`` seconds or more.

    Why: the engines run their sub-batches on one thread per core. With another process busy on one of two cores,
    two workers wait on each other (measured on a 2-core CPU, an 8-network training step: 2.07x the quiet time on 2
    workers, 1.08x on one thread), so they run on the cores that are free. Non-blocking: ``free()`` reads
    /proc/stat at most every ``every`` seconds and otherwise returns the last estimate; the first call, and any
    system without /proc/stat, says every core is free. The CPUs are those this process may run on (read again at
    every reading), or ``cpus`` (their numbers); ``clock`` and ``own_time`` (seconds) are for tests. A reading
    after the CPU set changed, or in a forked child (whose own CPU time restarts), starts a new baseline instead of
    comparing with the old one."""

    def __init__(self, every: float = 0.5, stat_path: str = "/proc/stat", clock=time.monotonic,
                 own_time=time.process_time, cpus=None):
        self.every = check_number("LoadMonitor every (seconds)", every, 0, low_open=True)
        if cpus is not None:
            cpus = list(cpus)
            if not cpus or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cpus):
                raise ValueError(f"LoadMonitor cpus must be a non-empty list of CPU numbers >= 0, got {cpus!r}")
        self.stat_path, self.clock, self.own_time, self.fixed = stat_path, clock, own_time, cpus
        self._affinity()
        self._free = self.cores
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()  # also replaces a lock a fork may have copied while held
        self._pid = os.getpid()
        self._last = None  # (wall time, busy seconds of those CPUs, own CPU seconds, the CPUs)

    def _affinity(self) -> None:
        affinity = self.fixed if self.fixed is not None else \
            os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        self.cpus = frozenset(f"cpu{i}" for i in affinity)  # the /proc/stat lines of the CPUs this process may use
        self.cores = max(1, len(self.cpus))

    def _busy(self) -> float | None:
        """Seconds the CPUs of this process's affinity spent busy since boot (None where /proc/stat cannot be read
        or lacks one of them)."""
        try:
            busy, seen = 0, 0
            with open(self.stat_path) as f:
                for line in f:
                    fields = line.split()
                    if fields and fields[0] in self.cpus:
                        if len(fields) < 9:
                            return None
                        ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
                        busy += sum(ticks) - ticks[3] - ticks[4]
                        seen += 1
            return busy / os.sysconf("SC_CLK_TCK") if seen == len(self.cpus) else None
        except (OSError, ValueError, AttributeError):
            return None

    def free(self) -> int:
        """Cores of this process's affinity not busy with other processes (at least 1)."""
        if self._pid != os.getpid():  # a forked child: its own CPU time is not the parent's
            self._reset()
        now = self.clock()
        with self._lock:
            if self._last is not None and now - self._last[0] < self.every:
                return self._free
            self._affinity()
            busy, own = self._busy(), self.own_time()
            if busy is None:
                return self._free
            if self._last is not None and self._last[3] == self.cpus:
                wall, busy0, own0, _ = self._last
                others = max(0.0, (busy - busy0) - (own - own0)) / (now - wall)  # cores busy with others
                self._free = max(1, min(self.cores, round(self.cores - others)))
            else:
                self._free = min(self._free, self.cores) if self._last is not None else self.cores
            self._last = (now, busy, own, self.cpus)
            return self._free


_MONITOR = LoadMonitor()
ADAPT_TO_LOAD = True  # run_jobs uses at most free_cores() workers (False: always the workers it is given)


def free_cores() -> int:
    """Cores of this process not busy with other processes, estimated over the last half second or more
    (``LoadMonitor``); all of them before the second call and where the load cannot be read."""
    return _MONITOR.free()


def run_jobs(workers: int, jobs: list, one_thread: bool, device_type: str) -> list:
    """Run the zero-argument ``jobs`` (independent sub-batches) on ``workers`` threads; their results, in order.

    With ``one_thread`` torch's intra-op threads are set to 1 meanwhile (restored by the last concurrent caller to
    leave), so that the operations neither oversubscribe the cores nor pay for threads on small matrices; then at
    most ``free_cores()`` workers run (with ``ADAPT_TO_LOAD``): the jobs are the same whichever thread runs them, so
    the results do not depend on the load. Every job runs with the caller's grad mode and without autocast (the same
    in a worker thread and here)."""
    grad_mode = torch.is_grad_enabled()  # thread-local: off inside an autograd Function, on in a fresh thread

    def in_worker(job):
        with torch.set_grad_enabled(grad_mode), torch.autocast(device_type, enabled=False):
            return job()

    if one_thread and ADAPT_TO_LOAD and workers > 1 and len(jobs) > 1:
        workers = min(workers, free_cores())
    if one_thread:
        with _THREADS_LOCK:
            if _THREADS_STATE["depth"] == 0:
                _THREADS_STATE["before"] = torch.get_num_threads()
                torch.set_num_threads(1)
            _THREADS_STATE["depth"] += 1
    try:
        if workers <= 1 or len(jobs) <= 1:
            return [in_worker(job) for job in jobs]
        with concurrent.futures.ThreadPoolExecutor(min(workers, len(jobs)),
                                                   thread_name_prefix="floss_core.runtime") as pool:
            futures = [pool.submit(in_worker, job) for job in jobs]
            concurrent.futures.wait(futures)  # all of them, also when one fails, before the thread count is restored
        return [f.result() for f in futures]
    finally:
        if one_thread:
            with _THREADS_LOCK:
                _THREADS_STATE["depth"] -= 1
                if _THREADS_STATE["depth"] == 0:
                    torch.set_num_threads(_THREADS_STATE["before"])
