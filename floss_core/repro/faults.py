"""Fault injection for checking that a sharded sweep survives a lost worker: ``KillOnce`` kills one Dask worker
process while it computes a shard, exactly once per cluster.

    client.register_plugin(KillOnce(tmp / "killed", prefix="delay_sweep-shard", delay=1.0))
    result = delay_sweep(sweep, cluster=client)   # the same numbers as without the kill

The first worker to start a task whose key begins with ``prefix`` (a sweep's task keys are
``<sweep>-<stage>-<start>-<stop>-<token>``, the stage "shard" for plain training shards) creates the marker file and
exits ``delay`` seconds later with ``os._exit(1)``: no cleanup, as if the machine had died. The marker file (on a
file system every worker sees) makes it happen once, also when the nanny restarts the worker with the plugin; it holds
the killed process id and the task key. Dask then recomputes the shards that were running or held on that worker.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["KillOnce"]


class KillOnce(WorkerPlugin):
    """A worker plugin that kills the first worker starting a task with key prefix ``prefix``, ``delay`` s later."""

    name = "floss-core-kill-once"

    def __init__(self, marker, *, prefix: str = "", delay: float = 0.0):
        self.marker, self.prefix, self.delay = str(marker), prefix, float(delay)

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or not str(key).startswith(self.prefix):
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:  # someone was killed already
            return
        with os.fdopen(fd, "w") as out:
            out.write(f"{os.getpid()} {key}\n")
        threading.Timer(self.delay, os._exit, args=(1,)).start()

    @staticmethod
    def victim(marker) -> tuple[int, str] | None:
        """(process id, task key) of the killed worker, None if none was."""
        path = Path(marker)
        if not path.exists():
            return None
        pid, key = path.read_text().split(maxsplit=1)
        return int(pid), key.strip()
