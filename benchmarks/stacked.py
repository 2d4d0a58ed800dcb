"""Cost of the spectrum and flossing loss of stacked torch.nn.LSTM / GRU modules, L = 1, 2, 3, as ratios to L = 1.

    python benchmarks/stacked.py [--threads 1] [--repeats 5] [--dtype float32] [--quick]

For nn.LSTM and nn.GRU (batch_first=True, input size 8) at (H, B, T, k) = (64, 4, 64, 8) and (128, 8, 128, 32),
times in one process, each the fastest of ``--repeats`` runs after one warm-up (the least disturbed run: the machine
may be shared):
  * ``spectrum`` forward: ``floss_core.adapters.spectrum(module, x, k)``,
  * ``spectrum`` forward + backward of ``lambda.sum()`` to the module's parameters,
  * ``flossing_loss_of`` forward + backward,
in ms and as ratios to the same module with L = 1 on the default path (the first row of each case). The state grows
with L (S = H L, or 2 H L for an LSTM), so the tangent vectors' work per step grows about linearly in L. The engine
that ran is printed per row: "fast" where ``lyapunov_spectrum`` reported its number of QRs (``info["n_qr"]``), else
"reference" with the tangent step it used: the module's layer-by-layer ``step_tangent`` (num_layers > 1) or
torch.func Jacobian-vector products of its step (single layers). Two extra rows per case time a single layer on the
reference engine, with the jvp path and with the layer-by-layer tangent step, so that the stacked rows can also be
compared with a single layer on the same engine. Prints a markdown table.
"""
import argparse
import torch
from _timing import timed
from torch import nn

from floss_core.adapters import TorchCell, flossing_loss_of, spectrum

CASES = ((64, 4, 64, 8), (128, 8, 128, 32))  # (H, B, T, k)
QUICK_CASES = ((16, 2, 16, 4),)
I = 8


class _LayeredTangent(TorchCell):
    """A TorchCell whose tangent step is the layer-by-layer one at any L (for the single-layer comparison row)."""

    @property
    def step_tangent(self):
        return self.analytic_step_tangent


def _module(cls, H, L, dtype, seed):
    m = cls(I, H, num_layers=L, batch_first=True).to(dtype)
    g, bound = torch.Generator().manual_seed(seed), H ** -0.5
    with torch.no_grad():
        for p in m.parameters():
            p.copy_((2 * torch.rand(p.shape, generator=g, dtype=dtype) - 1) * bound)
    return m


def _measure(target, params, x, k, repeats, kw):
    """Fastest ms of: spectrum forward, spectrum forward + backward, flossing_loss_of forward + backward."""

    def fwd():
        with torch.no_grad():
            spectrum(target, x, k, generator=torch.Generator().manual_seed(1), **kw)

    def fwd_bwd():
        lam = spectrum(target, x, k, generator=torch.Generator().manual_seed(1), **kw)
        torch.autograd.grad(lam.sum(), params)

    def floss():
        loss = flossing_loss_of(target, x, k, generator=torch.Generator().manual_seed(1), **kw)
        torch.autograd.grad(loss, params)

    out = []
    for fn in (fwd, fwd_bwd, floss):
        fn()  # warm-up
        out.append(1e3 * min(timed(fn, "cpu")[0] for _ in range(repeats)))
    return out


def _engine(target, x, k, kw) -> str:
    info = {}
    with torch.no_grad():
        spectrum(target, x, k, generator=torch.Generator().manual_seed(1), info=info, **kw)
    if "n_qr" in info:
        return "fast"
    cell = target if isinstance(target, TorchCell) else TorchCell(target)
    return f"reference, {'layer-by-layer step_tangent' if hasattr(cell, 'step_tangent') else 'torch.func jvp'}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--quick", action="store_true", help="one tiny case, 1 repeat (a smoke test)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    repeats = 1 if args.quick else args.repeats
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.dtype}, fastest of {repeats}")
    print()
    print("| module | (H, B, T, k) | L | S | engine | spectrum fwd ms (ratio) | spectrum fwd+bwd ms (ratio) "
          "| flossing_loss_of fwd+bwd ms (ratio) |")
    print("|---|---|---|---|---|---|---|---|")
    for cls in (nn.LSTM, nn.GRU):
        for H, B, T, k in QUICK_CASES if args.quick else CASES:
            x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(0), dtype=dtype)
            base = None
            rows = [(L, lambda m: m, {}) for L in (1, 2, 3)]
            rows += [(1, lambda m: m, {"method": "reference"}), (1, _LayeredTangent, {"method": "reference"})]
            for L, wrap, kw in rows:
                m = _module(cls, H, L, dtype, seed=L)
                target = wrap(m)
                ms = _measure(target, list(m.parameters()), x, k, repeats, kw)
                base = ms if base is None else base
                cells = " | ".join(f"{t:.1f} ({t / b:.2f}x)" for t, b in zip(ms, base))
                S = TorchCell(m).state_size
                print(f"| {cls.__name__} | ({H}, {B}, {T}, {k}) | {L} | {S} | {_engine(target, x, k, kw)} | "
                      f"{cells} |", flush=True)


if __name__ == "__main__":
    main()
