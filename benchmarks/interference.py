"""Does anything the engines leave behind slow later work, and how does training fare beside another process?

    python benchmarks/interference.py [--networks 8] [--repeats 5]

Times, in ONE fresh process, a training step of an E-network TanhRNN ensemble (N = 80, batch 16, T = 300, XOR with
delay 20, float32, backward and Adam) in four situations, interleaved so that a change of load hits all alike:

  alone            nothing ran before in this process;
  after flossing   right after 20 flossing steps with the default (fast) engine, which runs worker threads;
  competing        while another process spins one core (a Python busy loop), to see whether training collapses
                   when a core is taken (two workers waiting on each other): the engines run their sub-batches on
                   the cores other processes leave free (``floss_core.spectrum.runtime.free_cores``);
  competing, not adapting   the same with that switched off (``runtime.ADAPT_TO_LOAD = False``): all workers;
  competing, 1 thread   the same with torch on one thread;
  alone, again     a second after the other process stopped.

Prints ms per step (min / median) and the ratios of medians to "alone". Targets (issue "Speed II"): after flossing
within 1.25x of alone; with a competing process within 2x of quiet. Check ``uptime`` first: run it on a quiet
machine.
"""
import argparse
import multiprocessing
import statistics
import time

import torch

from _timing import timed
from floss_core import FlossConfig, ModelConfig, TaskConfig, floss
from floss_core.spectrum import runtime
from floss_core.training import sample_task, task_loss


def spin(stop):
    while not stop.is_set():
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    model = ModelConfig().build(1, 1, n_networks=args.networks, generator=gen)
    task = TaskConfig(name="xor", delay=20)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        batch = sample_task(task, model, gen)
        loss, _ = task_loss(model, batch, model.train_state(task.batch))
        opt.zero_grad()
        loss.sum().backward()
        opt.step()

    def times(n=args.repeats):
        step()  # warm-up
        return [timed(step, "cpu")[0] * 1e3 for _ in range(n)]

    threads = torch.get_num_threads()
    runs = {"alone": times()}
    floss(model, 20, config=FlossConfig(), generator=gen)
    runs["after flossing"] = times()
    stop = multiprocessing.Event()
    other = multiprocessing.Process(target=spin, args=(stop,), daemon=True)
    other.start()
    time.sleep(0.5)
    try:
        runs["competing"] = times()
        runtime.ADAPT_TO_LOAD = False
        runs["competing, not adapting"] = times()
        runtime.ADAPT_TO_LOAD = True
        torch.set_num_threads(1)
        runs["competing, 1 thread"] = times()
    finally:
        runtime.ADAPT_TO_LOAD = True
        torch.set_num_threads(threads)
        stop.set()
        other.join()
    time.sleep(1.0)  # the load estimate looks back at least 0.5 s
    runs["alone, again"] = times()
    base = statistics.median(runs["alone"])
    print(f"training step, E = {args.networks}, {threads} threads")
    print("| situation | ms per step (min / median) | ratio to alone |")
    print("|---|---|---|")
    for name, ms in runs.items():
        med = statistics.median(ms)
        print(f"| {name} | {min(ms):.1f} / {med:.1f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
