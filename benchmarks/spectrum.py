"""Per-network cost of a differentiable Lyapunov spectrum (forward + backward of mean(lambda^2)), several ways.

    python benchmarks/spectrum.py [--device cpu|cuda] [--dtype float64,float32] [--gain 1,2] [--repeats 5]
                                  [--sizes 80,75,300,32/64,16,512,64] [--threads T] [--quick]

For (N, k, T) = (80, 75, 300) with E = 32 networks (the author's sizes) and (64, 16, 512) with E = 64, zero input, a
quarter transient:

  straight   a straightforward single-network loop: dense Jacobian ``W * (1 - tanh(h)^2)``, ``torch.linalg.qr`` every
             step, autograd (one network at a time; the per-network time of one network), on all threads and on
             one thread ("straight, 1 thread"): the faster of the two is the baseline of every speed-up;
  reference  ``lyapunov_spectrum(..., method="reference")`` on the E networks batched (autograd through every step);
  default    ``lyapunov_spectrum(model, None, k, ...)`` with nothing else chosen: the fast engine with t_ons = "auto"
             (QRs only where the basis' conditioning requires them; the same exponents as a QR every step, up to
             roundoff); also on one thread ("default, 1 thread");
  t_ons=1    the fast engine with a QR every step, like the others (``lyapunov_spectrum(..., t_ons=1)``).

On the CPU the fast engine runs its sub-batches of networks on all threads at once (``workers``), one thread each.
Prints wall time per network (min / median / max over the repeats) and, because the machine may be shared, CPU time
of this process per network (median); the speed-up of each over the baseline (ratio of medians, and the ratio of
the worst time to the best baseline time), and over the reference and over t_ons=1; the achieved GFLOP/s of the
fast engine (its useful matmul and factorization flops over its time) against a large matmul measured in the same run
(on all threads); and the accuracy of the fast engine against the reference on the same trajectories (max |lambda
difference|, relative gradient difference). Run it in a fresh process: the ratios come from one run, the methods
interleaved repeat by repeat.
"""
import argparse
import math
import statistics

import torch

from _timing import timed
from floss_core import TanhRNN, lyapunov_spectrum
from floss_core.spectrum import fast_lyapunov_spectrum

CONFIGS = [(80, 75, 300, 32), (64, 16, 512, 64)]  # (N, k, T, E)
QUICK = [(20, 15, 40, 4), (16, 4, 60, 8)]


def straight_loop(W, U, b, xs, h0, Q0, n_transient):
    """The straightforward single-network loop. W (N, N), U (N, I), b (N,), xs T x (I,), h0 (N,), Q0 (N, k)."""
    h = h0
    Q, _ = torch.linalg.qr(Q0)
    logs = []
    for t, x in enumerate(xs):
        r = torch.tanh(h)
        J = W * (1 - r * r)  # dense step Jacobian W diag(1 - tanh(h)^2)
        h = W @ r + U @ x + b
        Q, R = torch.linalg.qr(J @ Q)
        if t >= n_transient:
            logs.append(torch.diagonal(R).abs().log())
    return torch.stack(logs).sum(0) / (len(xs) - n_transient)


def matmul_gflops(dtype, device, n=1024, repeats=5):
    A = torch.randn(n, n, dtype=dtype, device=device)
    A @ A
    best = min(timed(lambda: A @ A, device)[0] for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def fast_flops(N, k, T, n_qr):
    """Useful flops of one network's fast forward + backward (matmuls and factorizations, not elementwise)."""
    per_step = 2 * N * N * k + 2 * (2 * N * N * (k + 1))  # push; W^T [Y_bar | h_bar] and the W_bar accumulation
    cholesky_qr = 2 * N * k * k + k ** 3 / 3 + N * k * k  # Gram, Cholesky, triangular solve
    qr_backward = 2 * N * k * k + 2 * N * k * k + N * k * k  # Q^T Q_bar, Q S, triangular solve
    per_qr = cholesky_qr + qr_backward
    return T * per_step + n_qr * per_qr


def bench(N, k, T, E, gain, dtype, device, repeats, single_repeats):
    gen = torch.Generator().manual_seed(0)
    model = TanhRNN(1, N, 1, gain=gain, n_networks=E, generator=gen, dtype=dtype).to(device)
    n_tr = T // 4
    h0 = torch.randn(E, 1, N, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
    Q0 = torch.randn(E, 1, N, k, generator=torch.Generator().manual_seed(2), dtype=dtype).to(device)
    kw = dict(n_steps=T, n_transient=n_tr, h0=h0, Q0=Q0)
    params = [model.W, model.U, model.b]

    def run_batched(fn, **extra):
        def go():
            lam = fn(model, None, k, **kw, **extra)
            (lam ** 2).mean().backward()
        return go

    def run_single(e):
        W = model.W[e].detach().clone().requires_grad_()
        U = model.U[e].detach().clone().requires_grad_()
        b = model.b[e].detach().clone().requires_grad_()
        xs = torch.zeros(T, 1, dtype=dtype, device=device).unbind(0)

        def go():
            lam = straight_loop(W, U, b, xs, h0[e, 0], Q0[e, 0], n_tr)
            (lam ** 2).mean().backward()
        return go

    info = {}
    threads = torch.get_num_threads()
    one = {"straight, 1 thread": 1, "default, 1 thread": 1}  # methods also timed on a single thread
    names = ["straight, 1 thread", "straight", "reference", "t_ons=1", "default", "default, 1 thread"]
    if threads == 1 or device.type != "cpu":
        names = [n for n in names if n not in one]
    runs = {name: [] for name in names}
    for rep in range(repeats):  # interleaved, so that a change of load on a shared machine hits all alike
        for name in names:
            if name.startswith("straight"):
                if rep >= single_repeats:
                    continue
                fn, per = run_single(rep % E), 1
            elif name == "reference":
                fn, per = run_batched(lyapunov_spectrum, method="reference"), E
            elif name == "t_ons=1":
                fn, per = run_batched(lyapunov_spectrum, t_ons=1), E
            else:  # the default call: nothing but the sizes and the start chosen
                fn, per = run_batched(lyapunov_spectrum, **(dict(info=info) if name == "default" else {})), E
            torch.set_num_threads(one.get(name, threads))
            w, c = timed(fn, device)
            torch.set_num_threads(threads)
            runs[name].append((w / per, c / per))
    for p in params:
        p.grad = None

    # accuracy of the fast engine against the reference, same trajectories, per network (a chaotic float32 network
    # can overflow its full gradient: those are left out and counted)
    ref = lyapunov_spectrum(model, None, k, check=False, method="reference", **kw)
    g_ref = per_network(torch.autograd.grad((ref ** 2).mean(), params))
    acc = {}
    for name, t_ons in (("t_ons=1", 1), ("default", "auto")):
        lam = lyapunov_spectrum(model, None, k, t_ons=t_ons, check=False, **kw)
        g = per_network(torch.autograd.grad((lam ** 2).mean(), params))
        finite = torch.isfinite(g_ref).all(1) & torch.isfinite(ref).flatten(1).all(1)
        rel = ((g - g_ref).norm(dim=1) / g_ref.norm(dim=1))[finite]
        d_lam = (lam - ref).flatten(1).abs().amax(1)[finite]
        acc[name] = (d_lam.max().item() if finite.any() else math.nan, rel.max().item() if finite.any() else math.nan,
                     int((~finite).sum()))
    return runs, acc, info.get("n_qr", T)


def per_network(grads):
    """Gradients of W, U, b as one row per network: (E, N * N + N * I + N)."""
    return torch.cat([g.flatten(1) for g in grads], 1).double()  # float64: float32 norms of ~1e27 overflow


def check(device, dtypes):
    """fast == reference on this device: exponents and gradients (W, U, b), chaotic and stable nets."""
    print("| dtype | N, k, T, E, B | g | t_ons | max abs d lambda | rel d grad W, U, b | QRs |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for dtype in dtypes:
        for N, k, T, E, B in ((6, 6, 40, 2, 3), (6, 3, 40, 2, 3), (20, 8, 60, 3, 2), (80, 75, 40, 4, 1),
                              (64, 16, 120, 4, 1)):
            for gain in (0.5, 2.0, 3.0):
                gen = torch.Generator().manual_seed(1)
                model = TanhRNN(2, N, 1, gain=gain, n_networks=E, generator=gen, dtype=dtype).to(device)
                x = torch.randn(E, B, T, 2, generator=gen, dtype=dtype).to(device)
                h0 = torch.randn(E, B, N, generator=gen, dtype=dtype).to(device)
                Q0 = torch.randn(E, B, N, k, generator=gen, dtype=dtype).to(device)
                params = [model.W, model.U, model.b]
                ref = lyapunov_spectrum(model, x, k, h0=h0, Q0=Q0, method="reference")
                g_ref = torch.autograd.grad((ref ** 2).mean(), params)
                for t_ons in (1, "auto"):
                    info = {}
                    lam = fast_lyapunov_spectrum(model, x, k, h0=h0, Q0=Q0, t_ons=t_ons, info=info)
                    g = torch.autograd.grad((lam ** 2).mean(), params)
                    rel = [((a - b).norm() / b.norm()).item() for a, b in zip(g, g_ref)]
                    d = (lam - ref).abs().max().item()
                    if dtype == torch.float64:
                        worst = max(worst, d, *rel)
                    print(f"| {str(dtype)[6:]} | {N}, {k}, {T}, {E}, {B} | {gain:g} | {t_ons} | {d:.1e} | "
                          f"{', '.join(f'{r:.1e}' for r in rel)} | {info['n_qr']:g} |")
    print(f"\nworst float64 difference (exponents or relative gradient): {worst:.1e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float64,float32")
    ap.add_argument("--gain", default="1,2", help="recurrent gains g (comma separated)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--single-repeats", type=int, default=3, help="repeats of the (slow) single-network loop")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="threads (default: torch's default, all cores); the straight loop and the default call "
                         "are also timed on one thread")
    ap.add_argument("--sizes", default="/".join(",".join(map(str, c)) for c in CONFIGS),
                    help="N,k,T,E of each configuration, separated by / (default: the two above)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 2 repeats (a smoke test)")
    ap.add_argument("--check", action="store_true", help="only compare fast with the reference on this device")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.check:
        return check(device, [getattr(torch, d) for d in args.dtype.split(",")])
    configs = QUICK if args.quick else [tuple(int(v) for v in c.split(",")) for c in args.sizes.split("/")]
    repeats = 2 if args.quick else args.repeats
    single = min(repeats, 2 if args.quick else args.single_repeats)
    print(f"device {device}, {torch.get_num_threads()} thread(s), torch {torch.__version__}; times per network in ms: "
          "wall min / median / max (CPU median); speed-up = baseline median / this median "
          "(worst case: baseline min / this max); baseline = the straight loop on its faster thread count")
    for dname in args.dtype.split(","):
        dtype = getattr(torch, dname)
        peak = matmul_gflops(dtype, device, n=4096 if device.type == "cuda" else 1024)
        print(f"\n## {dname}: large matmul {peak:.0f} GFLOP/s")
        print("| N, k, T, E | g | method | wall min / med / max | CPU med | speed-up (worst) | vs reference | "
              "vs t_ons=1 | GFLOP/s | max abs d lambda | rel d grad |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        summary = []
        for N, k, T, E in configs:
            for gain in (float(g) for g in args.gain.split(",")):
                runs, acc, n_qr = bench(N, k, T, E, gain, dtype, device, repeats, single)
                # the baseline: the straight loop on whichever thread count runs it faster
                base = min((n for n in runs if n.startswith("straight")),
                           key=lambda n: statistics.median(w for w, _ in runs[n]))
                s_wall = [w for w, _ in runs[base]]
                s_med, s_min = statistics.median(s_wall), min(s_wall)
                r_med = statistics.median(w for w, _ in runs["reference"])
                t1_med = statistics.median(w for w, _ in runs["t_ons=1"])
                for name, r in runs.items():
                    wall = [w for w, _ in r]
                    cpu = statistics.median(c for _, c in r)
                    med = statistics.median(wall)
                    speed = f"{s_med / med:.1f}x ({s_min / max(wall):.1f}x)"
                    gf, acc_s = "", " | "
                    if name in ("t_ons=1", "default", "default, 1 thread"):
                        gf = f"{fast_flops(N, k, T, T if name == 't_ons=1' else n_qr) / med / 1e9:.1f}"
                        d_lam, d_grad, n_bad = acc[name.split(",")[0]]
                        acc_s = f"{d_lam:.1e} | {d_grad:.1e}" + (f" ({n_bad} of {E} overflow)" if n_bad else "")
                    print(f"| {N}, {k}, {T}, {E} | {gain:g} | {name} | {1e3 * min(wall):.2f} / {1e3 * med:.2f} / "
                          f"{1e3 * max(wall):.2f} | {1e3 * cpu:.2f} | {speed} | {r_med / med:.1f}x | "
                          f"{t1_med / med:.2f}x | {gf} | {acc_s} |")
                print(f"|  |  | (baseline: {base}; default: {n_qr:g} QRs in {T} steps) |  |  |  |  |  |  |  |  |")
                d_med = statistics.median(w for w, _ in runs["default"])
                summary.append(f"{N}, {k}, {T}, {E}, g = {gain:g}: default {s_med / d_med:.1f}x the straight loop "
                               f"(t_ons=1 {s_med / t1_med:.1f}x, reference {s_med / r_med:.1f}x); default / t_ons=1 "
                               f"{t1_med / d_med:.2f}x")
        print(f"\nSummary ({dname}; the straight loop on its faster thread count):")
        print("\n".join(summary))


if __name__ == "__main__":
    main()
