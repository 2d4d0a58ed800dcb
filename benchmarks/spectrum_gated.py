"""The fast engine for LSTM and GRU (``floss_core.spectrum.gated``) against the reference, in two settings.

    python benchmarks/spectrum_gated.py [--part spectrum,qr,training] [--repeats 5] [--threads T] [--quick]

1. spectrum: the default ``lyapunov_spectrum(model, None, k, n_steps=T)`` (fast engine, t_ons="auto") and its
   backward (of the sum of exponents) per network, for a GRU (H = 80) and an LSTM (H = 40, state S = 2H = 80) at
   S = 80, k = 75, T = 300, E = 16, float64, zero input, gain 1 (the LSTM also at k = H = 40); against
   ``method="reference"`` (autograd through every step and every ``torch.linalg.qr``) and against the TanhRNN fast
   engine at N = 80 (same S, k, T, E). Every method is timed on all threads and on one thread; each ratio takes
   each side on its faster thread count.
2. qr: what a QR after every step costs alone, the floor of any engine that must orthonormalize every step (as
   the LSTM here must: its bases spread by 5-6 nats a step): T steps of ``Q <- qr(Q)`` on (E, S, k) and the
   backward of sum log|diag R|, by ``torch.linalg.qr`` (Householder, what the reference calls) and by an autograd
   Cholesky QR (Gram, ``cholesky``, ``solve_triangular``), per network.
3. training: one step of a user's training loop with a plain ``torch.nn.GRU`` / ``nn.LSTM`` (H = 64, input size 1,
   batch_first): a batch of 64 sequences of 64 steps, a linear readout of the last h, cross-entropy over 10 classes,
   backward, Adam step; with ``+ 0.1 * floss_core.adapters.flossing_loss_of(rnn, x[:4], k=8)`` (float32, the
   module's dtype) against the same step without it; also with the reference engine.

Prints wall time (min / median of the repeats, ms), the CPU time of this process (median) and the ratios of medians.
The methods of a table run interleaved repeat by repeat in one process, so that a change of load on a shared machine
hits all alike; on a busy machine the one-thread CPU-time ratios are the steadier numbers (they do not count the time
other processes hold the core). Run it in a fresh process and note the load (``uptime``).
"""
import argparse
import statistics

import torch

from _timing import timed
from floss_core import GRU, LSTM, TanhRNN, lyapunov_spectrum
from floss_core.adapters import flossing_loss_of

SPECTRUM = dict(S=80, k=75, T=300, E=16)
HALF = "LSTM k=H"  # the LSTM at k = H = S / 2 exponents
QUICK_SPECTRUM = dict(S=16, k=12, T=60, E=4)


def spectrum_model(name: str, S: int, E: int, dtype):
    """GRU (H = S), LSTM (H = S / 2) or TanhRNN (N = S) with E networks, one input channel."""
    g = torch.Generator().manual_seed(0)
    if name == "GRU":
        return GRU(1, S, 1, n_networks=E, generator=g, dtype=dtype)
    if name == "LSTM":
        return LSTM(1, S // 2, 1, n_networks=E, generator=g, dtype=dtype)
    return TanhRNN(1, S, 1, gain=2.0, n_networks=E, generator=g, dtype=dtype)


def bench_spectrum(repeats: int, size: dict, threads: int):
    S, k, T, E = size["S"], size["k"], size["T"], size["E"]
    dtype = torch.float64
    info, calls = {}, []
    for name in ("GRU", "LSTM", HALF, "TanhRNN"):
        k_of = S // 2 if name == HALF else k  # the LSTM once more at k = H: only its slowly contracting directions
        model = spectrum_model(name.split()[0], S, E, dtype)
        h0 = model.initial_state(1, torch.Generator().manual_seed(1))
        Q0 = torch.randn(E, 1, S, k_of, generator=torch.Generator().manual_seed(2), dtype=dtype)
        methods = ("fast", "reference") if name != "TanhRNN" else ("fast",)
        for method in methods:
            for n_threads in sorted({1, threads}):
                key = (name, method, n_threads)
                info[key] = {}

                def go(model=model, h0=h0, Q0=Q0, method=method, key=key, k=k_of):
                    lam = lyapunov_spectrum(model, None, k, n_steps=T, h0=h0, Q0=Q0, method=method,
                                            info=info[key] if method == "fast" else None)
                    lam.sum().backward()
                calls.append((key, go, n_threads))
    return interleaved(calls, repeats, E, threads), info


def interleaved(calls, repeats: int, E: int, threads: int, warm_up: bool = False) -> dict:
    """Time the calls [(key, fn, n_threads), ...] repeat by repeat, interleaved (a change of load hits all alike),
    each on its thread count: {key: [(wall, cpu) per network, ...]}; the thread count is ``threads`` after."""
    runs = {key: [] for key, _, _ in calls}
    for rep in range(repeats + warm_up):
        for key, go, n_threads in calls:
            torch.set_num_threads(n_threads)
            wall, cpu = timed(go, "cpu")
            if rep >= warm_up:
                runs[key].append((wall / E, cpu / E))
    torch.set_num_threads(threads)
    return runs


def med(r, i=0):
    """Median wall (i = 0) or CPU (i = 1) time of runs [(wall, cpu), ...]."""
    return statistics.median(v[i] for v in r)


def best(runs, name, method):
    """The faster thread count's runs (by median wall time) of one method, and its key."""
    key = min((key for key in runs if key[:2] == (name, method)), key=lambda c: med(runs[c]))
    return runs[key], key


def print_spectrum(runs, info, size, threads):
    S, k, T, E = size["S"], size["k"], size["T"], size["E"]
    print(f"\n## spectrum: S = {S}, k = {k}, T = {T}, E = {E}, float64, forward + backward of sum(lambda); ms per "
          "network")
    print("| cell | method | threads | wall min / median | CPU median | QRs |")
    print("|---|---|---|---|---|---|")
    for key, r in runs.items():
        n_qr = info[key].get("n_qr", T) if key[1] == "fast" else T
        print(f"| {key[0]} | {key[1]} | {key[2]} | {1e3 * min(w for w, _ in r):.1f} / {1e3 * med(r):.1f} | "
              f"{1e3 * med(r, 1):.1f} | {n_qr:g} |")
    tanh, tanh_key = best(runs, "TanhRNN", "fast")
    print("\n| cell | fast (threads) | reference (threads) | reference / fast | fast / TanhRNN fast | "
          "1 thread, CPU time: reference / fast, fast / TanhRNN |")
    print("|---|---|---|---|---|---|")
    for name in ("GRU", "LSTM", HALF):
        fast, fk = best(runs, name, "fast")
        ref, rk = best(runs, name, "reference")
        cpu = {m: med(runs[(n, m, 1)], 1) for n, m in ((name, "fast"), (name, "reference"))}
        tanh_cpu = med(runs[("TanhRNN", "fast", 1)], 1)
        print(f"| {name} | {1e3 * med(fast):.1f} ({fk[2]}) | {1e3 * med(ref):.1f} ({rk[2]}) | "
              f"{med(ref) / med(fast):.2f}x | {med(fast) / med(tanh):.2f}x (TanhRNN {1e3 * med(tanh):.1f} ms, "
              f"{tanh_key[2]} threads) | {cpu['reference'] / cpu['fast']:.2f}x, {cpu['fast'] / tanh_cpu:.2f}x |")


def bench_qr(repeats: int, size: dict, threads: int):
    """ms per network of T per-step QRs (forward + backward of sum log|diag R|), Householder and Cholesky, on each
    thread count: {(name, threads): [(wall, cpu), ...]}."""
    S, k, T, E = size["S"], size["k"], size["T"], size["E"]
    A = torch.linalg.qr(torch.randn(E, S, k, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]

    def householder():
        Q, total = A.clone().requires_grad_(), 0.0
        for _ in range(T):
            Q, R = torch.linalg.qr(Q)
            total = total + R.diagonal(dim1=-2, dim2=-1).abs().log().sum()
        total.backward()

    def cholesky():
        Q, total = A.clone().requires_grad_(), 0.0
        for _ in range(T):
            L = torch.linalg.cholesky(Q.mT @ Q)  # (E, k, k)
            Q = torch.linalg.solve_triangular(L, Q.mT, upper=False).mT  # (E, S, k)
            total = total + L.diagonal(dim1=-2, dim2=-1).log().sum()
        total.backward()

    calls = [((name, n), go, n) for name, go in (("Householder", householder), ("Cholesky", cholesky))
             for n in sorted({1, threads})]
    return interleaved(calls, repeats, E, threads, warm_up=True)


def print_qr(runs, size):
    S, k, T, E = size["S"], size["k"], size["T"], size["E"]
    print(f"\n## a QR after every step alone: T = {T} QRs of (E = {E}, S = {S}, k = {k}), float64, forward + backward;"
          " ms per network")
    print("| QR | threads | wall min / median | CPU median |")
    print("|---|---|---|---|")
    for (name, n), r in runs.items():
        print(f"| {name} | {n} | {1e3 * min(w for w, _ in r):.1f} / {1e3 * med(r):.1f} | {1e3 * med(r, 1):.1f} |")


def bench_training(repeats: int, threads: int, quick: bool):
    """Per kind: ms per training step without flossing, with the fast engine's and with the reference's loss."""
    H, B, T, C = (16, 16, 16, 10) if quick else (64, 64, 64, 10)
    rows = {}
    for kind in ("GRU", "LSTM"):
        torch.manual_seed(0)  # nn.Module's own initialization draws from the global generator
        rnn = getattr(torch.nn, kind)(1, H, batch_first=True)
        readout = torch.nn.Linear(H, C)
        opt = torch.optim.Adam(list(rnn.parameters()) + list(readout.parameters()), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(B, T, 1, generator=g)
        y = torch.randint(0, C, (B,), generator=g)

        def step(method):
            out, _ = rnn(x)
            loss = torch.nn.functional.cross_entropy(readout(out[:, -1]), y)
            if method:
                loss = loss + 0.1 * flossing_loss_of(rnn, x[:4], k=8, method=method)
            opt.zero_grad()
            loss.backward()
            opt.step()

        for n_threads in sorted({1, threads}):
            torch.set_num_threads(n_threads)
            for method in (None, "fast", "reference"):  # warm-up
                step(method)
            r = {None: [], "fast": [], "reference": []}
            for rep in range(repeats):
                for method in r:
                    if method == "reference" and rep >= max(2, repeats // 2):
                        continue  # slow: fewer repeats
                    r[method].append(timed(lambda: step(method), "cpu"))
            rows[(kind, n_threads)] = r
        torch.set_num_threads(threads)
    return rows


def print_training(rows, quick: bool):
    H = 16 if quick else 64
    print(f"\n## training step: nn.GRU / nn.LSTM (H = {H}), batch {H} x {H} steps, Adam; + 0.1 flossing_loss_of("
          "rnn, x[:4], k=8); ms per step")
    print("| module | threads | plain min / median | + fast flossing | + reference flossing | fast / plain | "
          "reference / plain | CPU time: fast / plain, reference / plain |")
    print("|---|---|---|---|---|---|---|---|")
    for (kind, n_threads), r in rows.items():
        m = {k: med(v) for k, v in r.items()}
        c = {k: med(v, 1) for k, v in r.items()}
        print(f"| nn.{kind} | {n_threads} | " + " | ".join(f"{1e3 * min(w for w, _ in r[k]):.1f} / {1e3 * m[k]:.1f}"
                                                         for k in (None, "fast", "reference"))
              + f" | {m['fast'] / m[None]:.2f}x | {m['reference'] / m[None]:.1f}x | {c['fast'] / c[None]:.2f}x, "
                f"{c['reference'] / c[None]:.1f}x |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="spectrum,qr,training",
                    help="spectrum, qr, training, or several (comma separated)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="threads (default: torch's default, all cores); every method also runs on one thread")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 2 repeats (a smoke test)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    print(f"{args.threads} thread(s), torch {torch.__version__}")
    parts = args.part.split(",")
    if "spectrum" in parts:
        size = QUICK_SPECTRUM if args.quick else SPECTRUM
        runs, info = bench_spectrum(repeats, size, args.threads)
        print_spectrum(runs, info, size, args.threads)
    if "qr" in parts:
        size = QUICK_SPECTRUM if args.quick else SPECTRUM
        print_qr(bench_qr(repeats, size, args.threads), size)
    if "training" in parts:
        print_training(bench_training(repeats, args.threads, args.quick), args.quick)


if __name__ == "__main__":
    main()
