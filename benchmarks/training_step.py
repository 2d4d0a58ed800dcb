"""Per-network cost of a training step of an ensemble against a single-network loop, and of a flossing step.

    python benchmarks/training_step.py [--device cpu|cuda] [--dtype float32] [--networks 1,8,32] [--repeats 5]

Training step (the author's setting: N = 80, batch 16, T = 300, XOR task with delay 20): a fresh batch,
``floss_core.training.task_loss`` (rollout, readout, masked BCE) and its backward, for an ensemble of E networks, per
network; against

  single loop  a straightforward single-network implementation (the voltage-form step ``W tanh(h) + U x + b`` in a
               Python loop over time, readout, BCE, backward);
  nn.RNN       ``torch.nn.RNN`` (cuDNN on GPUs), one network: the same cost class in rate form.

Flossing step (``FlossConfig`` defaults: k = 75 exponents over 55 steps, 16 of them transient, task-like inputs):
the exponents and the backward of the flossing loss, per network, with the reference ``lyapunov_spectrum`` and with
``floss_core.spectrum.fast_lyapunov_spectrum`` (t_ons = 1 and "auto").

Checkpointed BPTT (``task_loss(..., checkpoint=30)``) against plain BPTT for the largest ensemble, at T and 10 T:
time of a training step (whole ensemble) and the memory autograd holds between the forward and the backward
(distinct storages seen by saved-tensor hooks, the checkpoints' segment-boundary states included; the backward's
recomputation adds one segment's activations at a time).

Prints wall time per network (min / median / max over the repeats), CPU time of this process per network (median,
because the machine may be shared) and the speed-up over the single-network loop (ratio of medians).
"""
import argparse
import statistics

import torch
import torch.nn.functional as F

from _timing import timed
from floss_core import FlossConfig, TanhRNN, flossing_loss, lyapunov_spectrum, make_batch, task_loss
from floss_core.spectrum import fast_lyapunov_spectrum
from floss_core.flossing import flossing_inputs

N, BATCH, T, DELAY = 80, 16, 300, 20


def single_network_step(W, U, b, V, c, h0, batch):
    """The straightforward loop for one network: W (N, N), U (N, 1), b (N,), V (1, N), c (1,), h0 (N,)."""
    xs = batch.inputs[0].unbind(1)  # T x (B, 1)
    h = h0.expand(batch.inputs.shape[1], -1)
    logits = []
    for x in xs:
        h = torch.tanh(h) @ W.T + x @ U.T + b
        logits.append(h @ V.T + c)
    logits = torch.stack(logits, 1)  # (B, T, 1)
    bce = F.binary_cross_entropy_with_logits(logits, batch.targets[0], reduction="none")
    loss = (bce * batch.mask[0]).sum() / batch.mask[0].sum()
    loss.backward()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--networks", default="1,8,32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="T = 40, 2 repeats (a smoke test)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    steps = 40 if args.quick else T
    repeats = 2 if args.quick else args.repeats
    Es = [int(e) for e in args.networks.split(",")]
    gen = torch.Generator().manual_seed(0)

    def batch_for(E):
        return make_batch("xor", delay=DELAY, seq_len=steps, batch=BATCH, n_networks=E, generator=gen, dtype=dtype,
                          device=device)

    models = {E: TanhRNN(1, N, 1, gain=1.0, n_networks=E, generator=gen, dtype=dtype).to(device) for E in Es}
    one = models[min(Es)]
    W, U, b, V, c, h0 = (getattr(one, n)[0].detach().clone().requires_grad_() for n in ("W", "U", "b", "V", "c", "h0"))
    rnn = torch.nn.RNN(1, N, batch_first=True).to(device=device, dtype=dtype)
    readout = torch.nn.Linear(N, 1).to(device=device, dtype=dtype)

    def nn_rnn_step(batch):
        out, _ = rnn(batch.inputs[0])
        bce = F.binary_cross_entropy_with_logits(readout(out), batch.targets[0], reduction="none")
        ((bce * batch.mask[0]).sum() / batch.mask[0].sum()).backward()

    def ensemble_step(model, batch):
        loss, _ = task_loss(model, batch, model.train_state(BATCH), method="autograd")
        loss.sum().backward()

    cfg = FlossConfig()

    def floss_step(model, fn, **kw):
        g = torch.Generator(device=device).manual_seed(1)
        inputs = flossing_inputs(model, cfg, g)
        lam = fn(model, inputs, cfg.k, n_transient=cfg.n_transient, generator=g, check=False, **kw)
        flossing_loss(lam, cfg.target).sum().backward()

    runs = {"single loop": [], "nn.RNN (one network)": []}
    runs.update({f"task_loss, E = {E}": [] for E in Es})
    floss_runs = {}
    for E in Es:
        for name in ("reference", "fast", "fast auto"):
            floss_runs[f"flossing step, E = {E}, {name}"] = []
    for _ in range(repeats):  # interleaved, so that a change of load hits all alike
        batch1 = batch_for(1)
        runs["single loop"].append(timed(lambda: single_network_step(W, U, b, V, c, h0, batch1), device))
        runs["nn.RNN (one network)"].append(timed(lambda: nn_rnn_step(batch1), device))
        for E in Es:
            batch = batch_for(E)
            w, cpu = timed(lambda: ensemble_step(models[E], batch), device)
            runs[f"task_loss, E = {E}"].append((w / E, cpu / E))
            for name, fn, kw in (("reference", lyapunov_spectrum, {"method": "reference"}),
                                 ("fast", fast_lyapunov_spectrum, {}),
                                 ("fast auto", fast_lyapunov_spectrum, {"t_ons": "auto"})):
                w, cpu = timed(lambda: floss_step(models[E], fn, **kw), device)
                floss_runs[f"flossing step, E = {E}, {name}"].append((w / E, cpu / E))

    def row(name, r, base):
        wall = [w for w, _ in r]
        med = statistics.median(wall)
        cpu = statistics.median(cp for _, cp in r)
        return (f"| {name} | {1e3 * min(wall):.2f} / {1e3 * med:.2f} / {1e3 * max(wall):.2f} | {1e3 * cpu:.2f} | "
                f"{base / med:.1f}x |")

    print(f"device {device}, {dtype}, {torch.get_num_threads()} thread(s); N = {N}, batch {BATCH}, T = {steps}; "
          "per network, ms: wall min / median / max (CPU median)")
    print("\n| training step | wall min / med / max | CPU med | speed-up over the single loop (medians) |")
    print("|---|---|---|---|")
    base = statistics.median(w for w, _ in runs["single loop"])
    for name, r in runs.items():
        print(row(name, r, base))
    print(f"\n| flossing step (k = {cfg.k}, T = {cfg.seq_len}) | wall min / med / max | CPU med | "
          "speed-up over the reference (medians) |")
    print("|---|---|---|---|")
    for E in Es:
        base = statistics.median(w for w, _ in floss_runs[f"flossing step, E = {E}, reference"])
        for name in ("reference", "fast", "fast auto"):
            print(row(f"E = {E}, {name}", floss_runs[f"flossing step, E = {E}, {name}"], base))

    checkpointing(models[max(Es)], max(Es), steps, repeats, device, dtype, gen)


def saved_bytes(fn):
    """Bytes of the distinct storages autograd holds for the backward of fn() (saved-tensor hooks); runs it."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    loss.backward()
    return sum(storages.values())


def checkpointing(model, E, steps, repeats, device, dtype, gen):
    """task_loss + backward with and without checkpointed BPTT (segments of 30 steps), at T and 10 T."""
    print(f"\n| checkpointing, E = {E} | wall min / med / max | CPU med | held for the backward | time vs plain |")
    print("|---|---|---|---|---|")
    for T_ in (steps, 10 * steps):
        batch = make_batch("xor", delay=DELAY, seq_len=T_, batch=BATCH, n_networks=E, generator=gen, dtype=dtype,
                           device=device)
        base = None
        for seg in (0, 30):
            def step():
                return task_loss(model, batch, model.train_state(BATCH), checkpoint=seg, method="autograd")[0].sum()
            held = saved_bytes(step)
            r = [timed(lambda: step().backward(), device) for _ in range(repeats)]
            wall = [w for w, _ in r]
            med = statistics.median(wall)
            base = base or med
            print(f"| T = {T_}, {'plain' if not seg else f'segments of {seg}'} | {1e3 * min(wall):.1f} / "
                  f"{1e3 * med:.1f} / {1e3 * max(wall):.1f} ms | {1e3 * statistics.median(c for _, c in r):.1f} ms | "
                  f"{held / 2 ** 20:.1f} MiB | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
