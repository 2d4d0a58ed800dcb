"""Where a figure-3 training shard spends its time: training steps, exponent records, flossing-episode steps.

    python benchmarks/figure_breakdown.py [--networks 32] [--quick]

One ensemble of E TanhRNNs at the author's sizes (N = 80, batch 16, T = 300, XOR with delay 20, the sweep's model
and flossing defaults), trained with ``floss_core.training.train`` three times in this process, one after the other:

  plain       200 training steps, nothing recorded
  recorded    the same with the exponents recorded every 20 steps (11 records)
  episode     101 training steps with one flossing episode of 100 steps at step 100

From the differences: ms per training step, per exponent record and per flossing step (whole ensemble and per
network); the cost of recording every 100 steps relative to the training; and the share of training in a
"pre+during" network of figures 3-4 (3001 training steps, 2 episodes of 500 flossing steps, 31 records). Wall times
on a shared machine: run it on a quiet one (the header prints the load average).
"""
import argparse
import os
import time

import torch

from floss_core import experiments
from floss_core.flossing import FlossConfig
from floss_core.tasks import TaskConfig
from floss_core.training import FlossSchedule, TrainConfig, train


def timed_train(E: int, n_steps: int, record_every: int, schedule: FlossSchedule) -> float:
    """Seconds for ``train`` of a fresh E-network ensemble (seeded generators, no progress bar)."""
    model = experiments.DelaySweep().model.build(1, 1, n_networks=E,
                                                 generator=[torch.Generator().manual_seed(i) for i in range(E)])
    gens = [torch.Generator().manual_seed(1000 + i) for i in range(E)]
    t = time.perf_counter()
    train(model, TaskConfig(name="xor", delay=20), config=TrainConfig(n_steps=n_steps, record_every=record_every),
          floss_config=FlossConfig(), schedule=schedule, generator=gens, progress=False)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="a smoke test: 4 networks, a tenth of the steps")
    args = ap.parse_args()
    E, scale = (4, 10) if args.quick else (args.networks, 1)
    n_plain, every, n_episode = 200 // scale, 20 // scale, 100 // scale
    print(f"E = {E}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f} (1 min)")
    timed_train(E, 2, 0, FlossSchedule.none())  # warm-up
    plain = timed_train(E, n_plain, 0, FlossSchedule.none())
    recorded = timed_train(E, n_plain, every, FlossSchedule.none())
    episode = timed_train(E, n_episode + 1, 0, FlossSchedule(pre_steps=0, every=n_episode, episode_steps=n_episode,
                                                             max_episodes=1))
    n_records = len(range(0, n_plain, every)) + int((n_plain - 1) % every != 0)  # and the last step
    step = plain / n_plain
    record = (recorded - plain) / n_records
    floss_step = (episode - (n_episode + 1) * step) / n_episode
    print(f"training step   {step * 1e3:8.1f} ms ({step / E * 1e3:.2f} ms per network)")
    print(f"exponent record {record * 1e3:8.1f} ms: every 100 steps adds {record / (100 * step):.1%} to the training")
    print(f"flossing step   {floss_step * 1e3:8.1f} ms ({floss_step / E * 1e3:.2f} ms per network)")
    total = 3001 * step + 1000 * floss_step + 31 * record
    print(f"a pre+during network (3001 training steps, 1000 episode steps, 31 records): training "
          f"{3001 * step / total:.0%}, episodes {1000 * floss_step / total:.0%}, records {31 * record / total:.0%}")


if __name__ == "__main__":
    main()
