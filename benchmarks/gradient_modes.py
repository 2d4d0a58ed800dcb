"""Full vs state-detached flossing gradients of a chaotic network, in float32 and float64.

    python benchmarks/gradient_modes.py [--networks 8] [--steps 300]

For g = 2 (chaotic), N = 80, k = 16, zero input, trajectories of T in {55, 100, 300} steps (a quarter transient):
  * median norm of d(flossing loss)/dW per mode and dtype,
  * median relative difference between the float32 and float64 gradients (same weights, same starts),
  * median cosine between the full and the detached gradient (float64),
and then the outcome of flossing each mode from g = 2 (lr 1e-3, batch 8, T = 100): max |lambda_i|, i <= k, measured
over 4 x 3000-step trajectories afterwards. Prints a markdown table.
"""
import argparse
import copy

import torch

from floss_core import FlossConfig, TanhRNN, floss, flossing_loss, lyapunov_spectrum


def grad(model, T, mode, seed):
    g = torch.Generator().manual_seed(seed)
    lam = lyapunov_spectrum(model, None, 16, n_steps=T, batch=1, n_transient=T // 4, gradient=mode, generator=g,
                            check=False)
    (gW,) = torch.autograd.grad(flossing_loss(lam).sum(), model.W)
    return gW.flatten(1)  # (E, N*N)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--networks", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    E = args.networks
    m64 = TanhRNN(1, 80, 1, gain=2.0, n_networks=E, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m32 = copy.deepcopy(m64).float()
    print("| T | mode | norm float64 | norm float32 | rel. diff f32 vs f64 | cos(full, detached) |")
    print("|---|---|---|---|---|---|")
    for T in (55, 100, 300):
        g = {}
        for mode in ("full", "detached"):
            g[mode, 64] = grad(m64, T, mode, 1)
            g[mode, 32] = grad(m32, T, mode, 1).double()
        cos = torch.nn.functional.cosine_similarity(g["full", 64], g["detached", 64], dim=1).median().item()
        for mode in ("full", "detached"):
            n64 = g[mode, 64].norm(dim=1)
            rel = ((g[mode, 32] - g[mode, 64]).norm(dim=1) / n64).median().item()
            n32 = g[mode, 32].norm(dim=1).median().item()
            print(f"| {T} | {mode} | {n64.median().item():.3g} | {n32:.3g} | {rel:.2%} | {cos:.2f} |")
    print()
    print("| flossing from g = 2 | max abs lambda_i, i <= 16 (median over networks) | lambda_17 |")
    print("|---|---|---|")
    for mode in ("full", "detached"):
        m = TanhRNN(1, 80, 1, gain=2.0, n_networks=E, generator=torch.Generator().manual_seed(0))
        cfg = FlossConfig(k=16, gradient=mode, input="zero", batch=8, seq_len=100, n_transient=30)
        floss(m, args.steps, config=cfg, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            lam = lyapunov_spectrum(m, None, 17, n_steps=3000, batch=4, generator=torch.Generator().manual_seed(3))
        print(f"| {mode}, {args.steps} steps | {lam[:, :16].abs().max(1).values.median().item():.3f} | "
              f"{lam[:, 16].median().item():.3f} |")


if __name__ == "__main__":
    main()
