"""A full training step with the hand-differentiated TanhRNN BPTT (``floss_core.training.tanh_bptt``) against autograd.

    python benchmarks/training_tanh.py [--networks 32] [--repeats 7] [--dtype float32] [--device cpu]

One training step of an ensemble of E TanhRNNs at the author's sizes (N = 80, batch 16, T = 300, XOR with delay 20,
float32): a fresh batch (``floss_core.training.sample_task``), the loss and its backward, per-network clipping of
every parameter array (``clip_per_network_``) and an Adam step; per network:

  tanh_task_loss   ``floss_core.training.tanh_bptt.tanh_task_loss`` (sub-batches on all of torch's threads, one each)
  task_loss        ``task_loss(method="autograd")`` (autograd through the rollout), on 1 and on 2 threads
  nn.RNN           ``torch.nn.RNN`` + ``nn.Linear`` readout + Adam for one network (fresh 1-network batch, the same
                   masked BCE, per-array clipping), on 1 and on 2 threads: the baseline is the faster of the two

The methods are interleaved repeat by repeat in one process, so that a change of load hits all alike; compare the
ratios. Between two methods the script pauses 20 ms: after an operation on two threads, torch's idle OpenMP thread
spins for a few milliseconds, which would slow whatever runs next (within a step, e.g. after drawing the batch, that
cost stays in). GFLOP/s counts the matmul flops of one network's step, 6 T B N^2 + 2 T B N (2 I + 3 O) (forward,
adjoint and W gradient, input and readout terms; ~188 MFLOP), over the median time. The header reports the load
average and the CPU time other processes used during the run (from /proc/stat), in cores.
"""
import argparse
import functools
import os
import statistics
import time

import torch
import torch.nn.functional as F
from _timing import busy_seconds, timed

from floss_core import TanhRNN, TaskConfig
from floss_core.ensemble import clip_per_network_
from floss_core.training import sample_task, task_loss
from floss_core.training.tanh_bptt import tanh_task_loss

N, BATCH, T, DELAY, CLIP, LR = 80, 16, 300, 20, 1.0, 1e-3
PAUSE = 0.02  # seconds between two methods


def ensemble_step(model, opt, task, gen, loss_fn):
    opt.zero_grad(set_to_none=True)
    batch = sample_task(task, model, gen)
    loss, _ = loss_fn(model, batch, model.train_state(BATCH))
    loss.sum().backward()
    params = list(model.parameters())
    clip_per_network_(params, CLIP)
    opt.step()


def nn_rnn_step(rnn, readout, opt, task, one, gen):
    """One network's step: ``one`` is a 1-network TanhRNN, used only to draw its batch with sample_task."""
    opt.zero_grad(set_to_none=True)
    batch = sample_task(task, one, gen)
    out, _ = rnn(batch.inputs[0])  # (B, T, N)
    bce = F.binary_cross_entropy_with_logits(readout(out), batch.targets[0], reduction="none")
    ((bce * batch.mask[0]).sum() / batch.mask[0].sum()).backward()
    for p in opt.param_groups[0]["params"]:  # the same per-array clipping as clip_per_network_
        torch.nn.utils.clip_grad_norm_([p], CLIP)
    opt.step()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="T = 40, 2 repeats (a smoke test)")
    args = ap.parse_args()
    E, dtype, device = args.networks, getattr(torch, args.dtype), torch.device(args.device)
    steps, repeats = (40, 2) if args.quick else (T, args.repeats)
    threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)
    task = TaskConfig(name="xor", delay=DELAY, seq_len=steps, batch=BATCH)
    model = TanhRNN(1, N, 1, n_networks=E, generator=gen, dtype=dtype, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    one = TanhRNN(1, N, 1, generator=gen, dtype=dtype, device=device)
    rnn = torch.nn.RNN(1, N, batch_first=True).to(device=device, dtype=dtype)
    readout = torch.nn.Linear(N, 1).to(device=device, dtype=dtype)
    rnn_opt = torch.optim.Adam([*rnn.parameters(), *readout.parameters()], lr=LR)

    def tanh():
        ensemble_step(model, opt, task, gen, tanh_task_loss)

    def autograd():
        ensemble_step(model, opt, task, gen, functools.partial(task_loss, method="autograd"))

    methods = {  # name: (threads, per-network divisor, step)
        f"tanh_task_loss, {threads} workers": (threads, E, tanh),
        "tanh_task_loss, 1 thread": (1, E, tanh),
        "task_loss (autograd), 1 thread": (1, E, autograd),
        "task_loss (autograd), 2 threads": (2, E, autograd),
        "nn.RNN + Adam, 1 thread": (1, 1, lambda: nn_rnn_step(rnn, readout, rnn_opt, task, one, gen)),
        "nn.RNN + Adam, 2 threads": (2, 1, lambda: nn_rnn_step(rnn, readout, rnn_opt, task, one, gen)),
    }
    load0, busy0, own0, wall0 = os.getloadavg(), busy_seconds(), time.process_time(), time.perf_counter()
    times = {name: [] for name in methods}
    for r in range(repeats + 1):  # the first round warms up (buffers, thread pools) and is not counted
        for name, (n_threads, div, fn) in methods.items():
            torch.set_num_threads(n_threads)
            time.sleep(PAUSE)
            runs = 1 if div > 1 else 4  # a single network's step is short: time a few
            w, c = timed(lambda fn=fn, runs=runs: [fn() for _ in range(runs)], device)
            if r:
                times[name].append((w / div / runs, c / div / runs))
    torch.set_num_threads(threads)
    load1 = os.getloadavg()
    others = (busy_seconds() - busy0 - (time.process_time() - own0)) / (time.perf_counter() - wall0)

    flops = 6 * steps * BATCH * N * N + 2 * steps * BATCH * N * (2 * 1 + 3 * 1)
    med = {name: statistics.median(w for w, _ in r) for name, r in times.items()}
    base = min(med["nn.RNN + Adam, 1 thread"], med["nn.RNN + Adam, 2 threads"])
    auto = min(med["task_loss (autograd), 1 thread"], med["task_loss (autograd), 2 threads"])
    print(f"device {device}, {dtype}, torch threads {threads}; N = {N}, batch {BATCH}, T = {steps}, E = {E}; "
          f"{repeats} repeats; load average before {load0[0]:.2f} / after {load1[0]:.2f} (1 min); other processes "
          f"used {others:.2f} cores during the run")
    print(f"per network: ms wall min / median / max, CPU ms median; ratios of medians; "
          f"{flops / 1e6:.1f} MFLOP per network-step\n")
    print("| method | wall min / med / max (ms) | CPU med (ms) | vs nn.RNN (faster) | vs autograd (faster) | GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for name, r in times.items():
        wall = [w for w, _ in r]
        cpu = statistics.median(c for _, c in r)
        print(f"| {name} | {1e3 * min(wall):.2f} / {1e3 * med[name]:.2f} / {1e3 * max(wall):.2f} | {1e3 * cpu:.2f} | "
              f"{base / med[name]:.2f}x | {auto / med[name]:.2f}x | {flops / med[name] / 1e9:.1f} |")


if __name__ == "__main__":
    main()
