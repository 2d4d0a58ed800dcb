"""A figure sweep sharded over a local Dask cluster against the same sweep in this process, and with a worker killed.

    python benchmarks/sharding.py [--workers 2] [--threads 2] [--networks 4] [--steps 200] [--kill-after 3]

The sweep is a small but real ``delay_sweep`` (figure 3's three conditions, copy and XOR at delays 10 and 20, N = 32,
``--networks`` seeds, ``--steps`` training steps; flossing k = 16, 100 steps before training, one episode of 50
during training): 3 x 2 x 2 x 4 = 48 trained networks in shards of ``--shard-size``. Three runs, the same sweep:

  in-process   ``delay_sweep(sweep)`` on ``--threads`` torch threads (the notebooks' default: all cores)
  sharded      ``delay_sweep(sweep, cluster=client)`` on ``sharding.local_cluster``: ``--workers`` single-threaded
               worker processes (started and warmed up before the clock starts; its start-up is printed apart)
  killed       the same on a fresh cluster whose first worker to start a training shard dies ``--kill-after``
               seconds later (``floss_core.repro.faults.KillOnce``); Dask recomputes what it lost

Prints each wall time, the ratio in-process / sharded, whether the killed run's numbers equal the sharded run's bit
for bit (they must), and whether the in-process numbers equal the sharded ones (bit for bit only with one thread per
shard on both sides: ``--threads 1``; ``--check-one-thread`` adds an in-process run on one thread to check that).
The load average is printed first: the machine is shared, so read the ratio with it.
"""
import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from distributed import Client

from floss_core.experiments import DelaySweep, build, delay_sweep
from floss_core.experiments.sharding import local_cluster
from floss_core.repro.faults import KillOnce


def make_sweep(args) -> DelaySweep:
    return build(DelaySweep, delays=[10, 20], n_networks=args.networks, model={"n_hidden": 32}, seq_len=100,
                 train={"n_steps": args.steps}, floss={"k": 16},
                 schedule={"pre_steps": 100, "every": 100, "episode_steps": 50, "max_episodes": 1},
                 shard_size=args.shard_size)


def same(a, b) -> bool:
    """Every tensor of two results equal bit for bit (NaN where the other has NaN)."""
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and bool(torch.allclose(a, b, rtol=0, atol=0, equal_nan=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def in_process(sweep, threads: int):
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    result = delay_sweep(sweep, progress=False)
    return result, time.perf_counter() - t0


def on_cluster(sweep, workers: int, kill_after: float | None = None):
    """(result, sweep seconds, cluster start-up seconds, killed task or None) on a fresh LocalCluster."""
    t0 = time.perf_counter()
    with local_cluster(workers, dashboard_address=None, silence_logs=logging.CRITICAL) as cluster, \
            Client(cluster) as client:
        client.run(lambda: __import__("floss_core.experiments"))  # workers import torch before the clock starts
        startup = time.perf_counter() - t0
        marker = Path(tempfile.mkdtemp()) / "killed"
        if kill_after is not None:
            client.register_plugin(KillOnce(marker, prefix="delay_sweep-shard", delay=kill_after))
        t0 = time.perf_counter()
        result = delay_sweep(sweep, progress=False, cluster=client)
        seconds = time.perf_counter() - t0
    return result, seconds, startup, KillOnce.victim(marker)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes, one thread each")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the in-process run")
    parser.add_argument("--networks", type=int, default=4, help="seeds per task, delay and condition")
    parser.add_argument("--steps", type=int, default=200, help="training steps")
    parser.add_argument("--shard-size", type=int, default=8, help="networks per shard")
    parser.add_argument("--kill-after", type=float, default=3.0, help="seconds into the first training shard")
    parser.add_argument("--check-one-thread", action="store_true", help="also run in-process on one thread")
    args = parser.parse_args()
    sweep = make_sweep(args)
    n = len(sweep.conditions) * len(sweep.tasks) * len(sweep.delays) * sweep.n_networks
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; delay_sweep: {n} networks, N = 32, "
          f"{args.steps} steps, shards of {args.shard_size}; {torch.__version__}", flush=True)

    local, t_local = in_process(sweep, args.threads)
    print(f"in-process, {args.threads} thread(s):      {t_local:7.1f} s", flush=True)
    sharded, t_sharded, startup, _ = on_cluster(sweep, args.workers)
    print(f"sharded, {args.workers} workers x 1 thread: {t_sharded:7.1f} s  (cluster start-up {startup:.1f} s)  "
          f"ratio in-process / sharded {t_local / t_sharded:.2f}; numbers equal in-process: {same(local, sharded)}",
          flush=True)
    killed, t_killed, _, victim = on_cluster(sweep, args.workers, kill_after=args.kill_after)
    print(f"sharded, a worker killed:      {t_killed:7.1f} s  (killed: {victim[1] if victim else 'none'}); "
          f"numbers equal the sharded run: {same(sharded, killed)}", flush=True)
    if args.check_one_thread:
        one, t_one = in_process(sweep, 1)
        print(f"in-process, 1 thread:          {t_one:7.1f} s  numbers equal the sharded run: {same(one, sharded)}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if same(sharded, killed) and victim else 1


if __name__ == "__main__":
    sys.exit(main())
