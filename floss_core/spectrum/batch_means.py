"""Standard errors of Lyapunov exponents from the finite-time stretchings: batch means over blocks of each trajectory,
pooled over the B trajectories, with the block length chosen by blocking (Flyvbjerg and Petersen 1989).

**The estimator.** Network e's exponent i is the ratio ``lambda = sum_{b, j} x_bj / (B sum_j L_j)`` of the stretching
``x_bj`` (the sum of log|R_ii| of the QR windows that end in block j of trajectory b) to the steps ``L_j`` those
windows cover (the same for every trajectory of a network: its QR steps are shared). Its variance over N non-empty
blocks is the ratio estimator's

    var(lambda) = N / (N - 1) * sum_{b, j} (x_bj - lambda L_j)^2 / (B sum_j L_j)^2,

which for blocks of equal length is the textbook batch-means variance (the variance of the block means over N).
Blocks start as cells of ``width`` steps (each QR window goes to the cell of its last step; ``width`` is at least the
longest window, so no cell is empty), and are merged in pairs, level after level (within each trajectory). A level
is valid while it keeps at least ``min_blocks`` blocks. Per exponent, the level used is the smallest whose block
length m (in cells) satisfies ``m^3 > 2 N_0 (s_m / s_0)^4`` (Lee et al. 2011, the criterion of ``pyblock``: the
bias of too-short blocks, which grows with the autocorrelation time measured by s_m / s_0, below the estimate's own
noise), else the largest valid level.

**Assumptions.** (1) The per-step stretchings of a trajectory are stationary after the transient and their
correlations decay within the chosen blocks (blocks much longer than the autocorrelation time of each log|R_ii|,
which for nearly degenerate exponents grows like 1 / (lambda_i - lambda_(i+1))); (2) the B trajectories are
independent (different starts, and inputs that do not synchronize them); (3) the transient removed the alignment of
the initial basis (its bias is not in the error bar); (4) N is large enough for a normal error (N >= ``min_blocks``,
32 by default: a t distribution with 31 degrees of freedom has a standard deviation 1.03). Networks with fewer
blocks get a standard error from the blocks they have, which is noisy (``blocks`` reports N).
"""
from __future__ import annotations

import torch

__all__ = ["MIN_BLOCKS", "window_lengths", "cell_blocks", "batch_means"]

MIN_BLOCKS = 32  # fewest blocks a blocking level may keep


def window_lengths(window_ends: torch.Tensor, window_mask: torch.Tensor, first: int) -> torch.Tensor:
    """(n, E) int64: the steps each network's QR window covers (0 where its sub-batch did no QR at that row), from
    ``lyapunov_spectrum``'s info (window_ends (n,), window_mask (n, E)) of a run whose first averaged step is
    ``first``."""
    ends, mask = window_ends.to(torch.int64), window_mask.cpu()
    E = mask.shape[1]
    marked = torch.where(mask, ends[:, None], torch.full(mask.shape, first - 1, dtype=torch.int64))  # (n, E)
    prev = torch.cat([torch.full((1, E), first - 1, dtype=torch.int64), marked.cummax(0).values[:-1]])  # (n, E)
    return torch.where(mask, ends[:, None] - prev, torch.zeros_like(prev))


def cell_blocks(log_r: torch.Tensor, window_ends: torch.Tensor, window_mask: torch.Tensor, *, first: int,
                width: int, origin: int, n_cells: int | None = None):
    """Sum one spectrum run's QR windows (``lyapunov_spectrum``'s info: log_r (n, E, B, k), window_ends (n,),
    window_mask (n, E)) into cells of ``width`` steps.

    ``first`` is the first averaged step of this run (its n_transient), ``origin`` the position of this run's step 0
    counted from the estimate's first averaged step (``-n_transient`` for a first run, the steps averaged so far for
    a continuation): cell c holds the windows whose last step lies in ``[c width, (c + 1) width)`` from there.
    Returns ``(sums (E, B, n_cells, k), steps (E, n_cells))``: the stretching of every cell and the steps its
    windows cover."""
    n, E, B, k = log_r.shape
    ends = window_ends.to(log_r.device, torch.int64)  # (n,)
    mask = window_mask.to(log_r.device)  # (n, E)
    lengths = window_lengths(window_ends, window_mask, first).to(log_r.device)  # (n, E)
    cell = (ends + origin) // width  # (n,): the estimate's cell of each window
    if n_cells is None:
        n_cells = int(cell.max()) + 1 if n else 0
    sums = torch.zeros(E, B, n_cells, k, dtype=log_r.dtype, device=log_r.device)
    idx = cell.view(1, 1, n, 1).expand(E, B, n, k)
    sums.scatter_add_(2, idx, (log_r * mask[:, :, None, None]).permute(1, 2, 0, 3))
    steps = torch.zeros(E, n_cells, dtype=log_r.dtype, device=log_r.device)
    steps.scatter_add_(1, cell.view(1, n).expand(E, n), lengths.mT.to(log_r.dtype))
    return sums, steps


def _level_stats(x: torch.Tensor, L: torch.Tensor, mean: torch.Tensor, total: torch.Tensor):
    """Standard error (E, d) and block count (E,) of one blocking level: x (E, B, n, d), L (E, n)."""
    B = x.shape[1]
    used = (L > 0).sum(-1) * B  # (E,)
    r = x - mean[:, None, None, :] * L[:, None, :, None]  # (E, B, n, d)
    var = (r * r).sum((1, 2)) / (B * total)[:, None] ** 2  # (E, d)
    var = var * (used / (used - 1).clamp(min=1))[:, None]
    return var.sqrt(), used


def _merge(x: torch.Tensor, L: torch.Tensor):
    """Pairs of neighbouring blocks merged (an odd last block with an empty one)."""
    if x.shape[2] % 2:
        x = torch.cat([x, torch.zeros_like(x[:, :, :1])], 2)
        L = torch.cat([L, torch.zeros_like(L[:, :1])], 1)
    E, B, n, d = x.shape
    return x.reshape(E, B, n // 2, 2, d).sum(3), L.reshape(E, n // 2, 2).sum(2)


def batch_means(sums: torch.Tensor, steps: torch.Tensor, *, min_blocks: int = MIN_BLOCKS):
    """The exponents and their standard errors from cells: sums (E, B, n, d), steps (E, n) (``cell_blocks``).

    Returns ``(mean (E, d), stderr (E, d), blocks (E, d))``: the ratio estimate, its batch-means standard error at
    the blocking level chosen per exponent (see the module docstring), and the number of blocks at that level. NaN
    where a network has no steps or non-finite stretchings."""
    x, L = sums.double(), steps.double()
    total = L.sum(-1)  # (E,)
    B = x.shape[1]
    mean = x.sum((1, 2)) / (B * total)[:, None]  # (E, d)
    se0, n0 = _level_stats(x, L, mean, total)
    chosen, blocks = se0.clone(), n0[:, None].expand_as(se0).clone()
    decided = torch.zeros_like(se0, dtype=torch.bool)
    m = 1
    while x.shape[2] > 1:
        x, L = _merge(x, L)
        m *= 2
        se, used = _level_stats(x, L, mean, total)
        valid = (used >= min_blocks)[:, None].expand_as(se)
        if not bool(valid.any()):
            break
        take = valid & ~decided  # the largest valid level so far, until the criterion decides
        chosen = torch.where(take, se, chosen)
        blocks = torch.where(take, used[:, None].expand_as(se), blocks)
        decided |= valid & (m ** 3 > 2 * n0[:, None] * (se / se0) ** 4)
    bad = ~torch.isfinite(mean) | (total <= 0)[:, None]
    nan = torch.full_like(chosen, float("nan"))
    out = sums.dtype
    return (torch.where(bad, nan, mean).to(out), torch.where(bad, nan, chosen).to(out), blocks)
