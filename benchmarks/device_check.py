"""Run floss_core on an accelerator: correctness against the CPU, then the figure computations at paper scale, timed.

    python benchmarks/device_check.py --device cuda [--skip-sweeps]

1. TanhRNN / LSTM / GRU built from a CPU generator give the same weights on the device; spectra (reference and fast
   engines) and their gradients, and the task loss with its gradients (hand-written BPTT, plain and checkpointed,
   and autograd), equal the CPU's (float64) to 1e-8; floss, train, the diagnostics and the adapters (single-layer
   cells and modules on the fast engine, a stacked nn.LSTM / nn.GRU on the reference) run.
2. The computations of figures 1-2 (flossing_sweep) and 3-4 (delay_sweep) with the notebooks' default parameters,
   timed, with their key numbers (to compare with figures/*_numbers.json from the CPU run).
"""
import argparse
import time

import torch

from _timing import sync
import floss_core as F
from floss_core import experiments as X
from floss_core.diagnostics import gradient_norm_profile, long_term_jacobian_singular_values


def check(dev):
    worst = 0.0
    for cls in (F.TanhRNN, F.LSTM, F.GRU):
        models = {d: cls(2, 12, 1, n_networks=3, gain=1.5, dtype=torch.float64, device=d,
                         generator=torch.Generator().manual_seed(0)) for d in ("cpu", dev)}
        assert torch.equal(models["cpu"].W, models[dev].W.cpu()), "weights differ across devices"
        x = torch.randn(3, 2, 80, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        for method in ("reference", "fast"):
            out = {}
            for d, m in models.items():
                lam = F.lyapunov_spectrum(m, x.to(d), 6, generator=torch.Generator().manual_seed(2), method=method)
                (g,) = torch.autograd.grad(lam.sum(), m.W)
                out[d] = (lam.detach().cpu(), g.cpu())
            worst = max(worst, (out["cpu"][0] - out[dev][0]).abs().max().item(),
                        ((out["cpu"][1] - out[dev][1]).norm() / out["cpu"][1].norm()).item())
        trained = {d: cls(1, 12, 2, n_networks=3, gain=1.5, dtype=torch.float64, device=d,
                          generator=torch.Generator().manual_seed(0)) for d in ("cpu", dev)}
        batch = F.make_batch("copy", delay=3, seq_len=24, batch=4, n_networks=3, n_channels=2,
                             generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        for bptt, checkpoint in (("fast", 0), ("fast", 5), ("autograd", 0)):  # the task loss and its gradients
            out = {}
            for d, m in trained.items():
                b = F.TaskBatch(inputs=batch.inputs[..., :1].to(d), targets=batch.targets.to(d),
                                mask=batch.mask.to(d), bits=batch.bits.to(d))
                m.zero_grad(set_to_none=True)
                loss, _ = F.task_loss(m, b, m.train_state(4), checkpoint=checkpoint, method=bptt)
                loss.sum().backward()
                out[d] = (loss.detach().cpu(), torch.cat([p.grad.flatten().cpu() for p in m.parameters()]))
            worst = max(worst, (out["cpu"][0] - out[dev][0]).abs().max().item(),
                        ((out["cpu"][1] - out[dev][1]).norm() / out["cpu"][1].norm()).item())
        m = models[dev]
        F.floss(m, 3, config=F.FlossConfig(k=4, seq_len=30, n_transient=5), generator=torch.Generator().manual_seed(3))
        F.train(cls(1, 12, 1, n_networks=3, device=dev, generator=torch.Generator().manual_seed(0)),
                F.TaskConfig(name="xor", delay=4, seq_len=20, batch=4), config=F.TrainConfig(n_steps=3),
                floss_config=F.FlossConfig(k=4, seq_len=30, n_transient=5),
                schedule=F.FlossSchedule(pre_steps=2, every=1, episode_steps=1, max_episodes=1),
                generator=torch.Generator().manual_seed(4), progress=False)
        gradient_norm_profile(m, x.to(dev)[:, :, :40], generator=torch.Generator().manual_seed(5))
        long_term_jacobian_singular_values(m, x.to(dev)[:, :1, :40], 4, generator=torch.Generator().manual_seed(6))
    for module in (torch.nn.LSTMCell(2, 8), torch.nn.GRU(2, 8, batch_first=True),
                   torch.nn.LSTM(2, 8, num_layers=2, batch_first=True), torch.nn.GRU(2, 8, num_layers=3)):
        module = module.double().to(dev)
        x = torch.randn(2, 50, 2, dtype=torch.float64, device=dev)
        if isinstance(module, torch.nn.GRU) and not module.batch_first:
            x = x.transpose(0, 1)  # (T, B, I)
        F.adapters.flossing_loss_of(module, x, 4, generator=torch.Generator().manual_seed(8)).backward()
    print(f"device check: CPU vs {dev} worst difference (exponents abs / gradients rel, float64): {worst:.2e}")
    return worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--skip-sweeps", action="store_true")
    args = ap.parse_args()
    dev = args.device
    print("torch", torch.__version__, "device", torch.cuda.get_device_name() if dev.startswith("cuda") else dev)
    assert check(dev) < 1e-8
    if args.skip_sweeps:
        return
    t0 = time.perf_counter()
    sweep = X.build(X.DelaySweep, delays=[10, 20, 30, 40, 60, 90], seq_len=150,
                    train={"n_steps": 1500, "record_k": 8}, schedule={"episode_steps": 100})
    r = X.delay_sweep(sweep, device=dev, progress=False)
    sync(dev)
    print(f"delay_sweep (figures 3-4, paper-scale defaults): {time.perf_counter() - t0:.1f} s", flush=True)
    for t in r["tasks"]:
        s = X.summarize_delay_sweep(r, t)
        for c in r["conditions"]:
            print(f"  {t} {c}: successes per delay {s['success'][c].sum(1).tolist()}", flush=True)
    t0 = time.perf_counter()
    sweep = X.build(X.FlossingSweep, floss={"gradient": "detached", "batch": 4, "seq_len": 100, "n_transient": 30,
                                            "input": "zero"})
    r = X.flossing_sweep(sweep, device=dev, progress=False)
    sync(dev)
    print(f"flossing_sweep (figures 1-2): {time.perf_counter() - t0:.1f} s", flush=True)
    for i, (k, _) in enumerate(r["runs"]):
        sel = r["gains"] == 2.0
        print(f"  g=2, k={k}: median max|lambda_i<=k| after = "
              f"{r['spectrum_after'][i][sel][:, :k].abs().max(1).values.median().item():.4f}")


if __name__ == "__main__":
    main()
