"""``spectrum_estimate``: Lyapunov exponents with standard errors, finite-time exponents and, on request, a run that
goes on until the errors reach a target.

The engines report the stretching ``log|R_ii|`` of every QR window (``spectrum.window_report``); summed into cells
of ``width`` steps they are the finite-time exponents, and their batch means give the standard error
(``spectrum.batch_means``: the estimator and its assumptions). Nothing is computed twice: the cost is that of
``lyapunov_spectrum`` for the same steps (measured: see ``tests/test_estimate.py``), and a single run returns its
exponents bit for bit.

With ``target_stderr`` the trajectories go on in chunks (each chunk a ``lyapunov_spectrum`` call that starts at the
last state and basis, with no transient) until every network's largest standard error is at most the target or the
trajectories reach ``max_steps``. A network that reaches the target stops contributing: its estimate is the one at
that chunk (``n_steps``), while the others go on. The next chunk's length is what the closest of the others needs if
its error falls like 1 / sqrt(steps), with a margin, and at least a quarter of the steps averaged so far: each network
stops within about a quarter of the steps it needs.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import torch

from ..checks import check_int, check_number
from .api import DEFAULT_METHOD, DEFAULT_T_ONS, lyapunov_spectrum
from .batch_means import MIN_BLOCKS, batch_means, cell_blocks, window_lengths

__all__ = ["SpectrumEstimate", "spectrum_estimate", "DEFAULT_WIDTH", "MAX_STEPS_FACTOR"]

DEFAULT_WIDTH = 16  # steps per cell (finite-time window) unless a QR window is longer
MAX_STEPS_FACTOR = 16  # with target_stderr and inputs None or a callable: max_steps defaults to this times n_steps
_MARGIN = 1.2  # a chunk aims at this many times the steps the 1 / sqrt(steps) law asks for


@dataclass
class SpectrumEstimate:
    """The result of ``spectrum_estimate``. "Steps" count from the start of the trajectories, transient included.

    exponents (E, k): the mean over the B trajectories (bit for bit ``lyapunov_spectrum``'s for a single run, and as
        differentiable); with ``target_stderr``, the steps-weighted mean over the chunks each network used (detached).
    stderr (E, k): the batch-means standard error of each exponent (``spectrum.batch_means``), detached.
    history (n, E, k), history_steps (n,): the running estimate after every cell (at the cell's end, up to one QR
        window), from the cells' sums.
    n_steps (E,): the steps each network's estimate used.
    converged (E,): with ``target_stderr``, whether every stderr of the network is at most the target; without, whether
        its stderr is finite.
    n_transient: the steps not averaged at the start.
    cell_sums (E, B, n, k), cell_steps (E, n): the stretching of every cell of ``width`` steps after the transient, per
        trajectory, and the steps it covers (each QR window belongs to the cell of its last step; 0 beyond a network's
        n_steps).
    blocks (E, k): the number of blocks the standard error of each exponent came from.
    """
    exponents: torch.Tensor
    stderr: torch.Tensor
    history: torch.Tensor
    history_steps: torch.Tensor
    n_steps: torch.Tensor
    converged: torch.Tensor
    n_transient: int
    width: int
    cell_sums: torch.Tensor
    cell_steps: torch.Tensor
    blocks: torch.Tensor
    min_blocks: int = MIN_BLOCKS

    @property
    def finite_time(self) -> torch.Tensor:
        """Finite-time exponents (E, B, n, k): each cell's stretching over its steps (NaN for an empty cell)."""
        steps = self.cell_steps[:, None, :, None]
        return torch.where(steps > 0, self.cell_sums / steps.clamp(min=1), torch.full_like(self.cell_sums, math.nan))

    def linear_stderr(self, weights: torch.Tensor) -> torch.Tensor:
        """The standard error (E,) of ``sum_i weights[e, i] lambda_i`` for weights (E, k) (or (k,)), by the same batch
        means (with the covariances of the exponents): the delta method's error of a smooth function of the
        exponents, given its gradient as the weights."""
        w = torch.as_tensor(weights, dtype=self.cell_sums.dtype, device=self.cell_sums.device)
        w = w.expand(self.cell_sums.shape[0], self.cell_sums.shape[-1])
        proj = (self.cell_sums * w[:, None, None, :]).sum(-1, keepdim=True)  # (E, B, n, 1)
        return batch_means(proj, self.cell_steps, min_blocks=self.min_blocks)[1][:, 0]


def spectrum_estimate(model, inputs, k: int, *, n_steps: int | None = None, batch: int = 1,
                      n_transient: int | None = None, h0: torch.Tensor | None = None, Q0: torch.Tensor | None = None,
                      generator=None, target_stderr: float | None = None, max_steps: int | None = None,
                      width: int | None = None, min_blocks: int = MIN_BLOCKS, t_ons: int | str = DEFAULT_T_ONS,
                      gradient: str = "full", check: bool = True, method: str = DEFAULT_METHOD, orth: str = "cholesky",
                      tol: float | None = None, max_window: int = 64, group: int | None = None,
                      workers: int | None = None) -> SpectrumEstimate:
    """The first k Lyapunov exponents of every network with standard errors (``SpectrumEstimate``).

    Arguments as ``lyapunov_spectrum`` (the exponents are averaged over the B trajectories; either engine, any cell),
    with these differences and additions:
        inputs: None (zero input, ``n_steps`` steps), a tensor (E, B, T, I) or (B, T, I) whose first ``n_steps``
            steps (default: all T) drive the first run and the following ones the continuation, or a callable
            ``inputs(n)`` returning the next n steps, (E, B, n, I) or (B, n, I) (called for the first run too).
        target_stderr: go on in chunks until every network's largest stderr is at most this (> 0), or until
            ``max_steps``; then ``converged`` is False for the networks that did not reach it, with a warning.
            The chunks run without gradient (a continuation's graph would hold every chunk's stored bases).
        max_steps: the longest trajectory with ``target_stderr``, at least ``n_steps`` (default: the inputs' T, or
            16 x n_steps for zero or callable inputs).
        width: the steps of a cell (a finite-time window and the shortest block), default 16; raised to the longest
            QR window of the first run, so that no cell is empty.
        min_blocks: the fewest blocks a blocking level may keep (``spectrum.batch_means``), at least 2.
    Raises ValueError naming the argument, its bound and its value.
    """
    check_number("target_stderr", target_stderr, 0, low_open=True, none=True)
    check_int("width", width, 1, none=True)
    check_int("min_blocks", min_blocks, 2)
    source, n_steps, limit = _input_source(model, inputs, n_steps, batch)
    if target_stderr is not None:
        default = limit if limit is not None else MAX_STEPS_FACTOR * n_steps
        max_steps = check_int("max_steps", default if max_steps is None else max_steps, n_steps, limit,
                              note=" (n_steps, the first run, up to the inputs' T)" if limit else " (n_steps)")
    else:
        check_int("max_steps", max_steps, n_steps, limit, none=True)
    n_tr = n_steps // 4 if n_transient is None else n_transient
    options = dict(batch=batch, t_ons=t_ons, gradient=gradient, check=check, method=method, orth=orth, tol=tol,
                   max_window=max_window, group=group, workers=workers, reduce="none")

    def run(start: int, length: int, **first):
        info = {}
        x = source(start, length)
        lam = lyapunov_spectrum(model, x, k, n_steps=length if x is None else None, info=info, **first, **options)
        return lam, info  # (E, B, k)

    grad = torch.no_grad() if target_stderr is not None else contextlib.nullcontext()
    with grad:
        lam, info = run(0, n_steps, n_transient=n_transient, h0=h0, Q0=Q0, generator=generator)
    lengths = window_lengths(info["window_ends"], info["window_mask"], n_tr)
    width = max(width or DEFAULT_WIDTH, int(lengths.max()) if lengths.numel() else 1)
    sums, steps = cell_blocks(info["log_r"], info["window_ends"], info["window_mask"], first=n_tr, width=width,
                              origin=-n_tr)
    E = sums.shape[0]
    chunks = [(lam, n_steps - n_tr, torch.ones(E, dtype=torch.bool))]  # (E, B, k), steps averaged, networks using it
    done = n_steps
    used = torch.full((E,), n_steps, dtype=torch.int64)
    mean, stderr, blocks = batch_means(sums, steps, min_blocks=min_blocks)
    active = torch.ones(E, dtype=torch.bool)
    while target_stderr is not None and done < max_steps:
        worst = stderr.amax(-1).cpu()  # (E,)
        active &= torch.isfinite(worst) & (worst > target_stderr)
        if not bool(active.any()):
            break
        # the steps the closest network needs (1 / sqrt(steps)), at least a quarter more than so far: every
        # network stops within about that of the steps it needs (n_steps resolves them), in few chunks
        need = int(math.ceil(float(((worst[active] / target_stderr) ** 2).amin()) * (done - n_tr) * _MARGIN))
        length = min(max(need - (done - n_tr), (done - n_tr) // 4, 4 * width), max_steps - done)
        with grad:
            lam, info = run(done, length, n_transient=0, h0=info["final_state"], Q0=info["final_basis"])
        n_cells = -(-(done + length - n_tr) // width)
        more, more_steps = cell_blocks(info["log_r"], info["window_ends"], info["window_mask"], first=0, width=width,
                                       origin=done - n_tr, n_cells=n_cells)
        keep = active.to(sums.device)
        sums = _pad(sums, n_cells, 2) + more * keep[:, None, None, None]
        steps = _pad(steps, n_cells, 1) + more_steps * keep[:, None]
        chunks.append((lam, length, active.clone()))
        done += length
        used[active] = done
        mean, stderr, blocks = batch_means(sums, steps, min_blocks=min_blocks)
    finite = torch.isfinite(stderr).all(-1).cpu()
    if target_stderr is not None:
        converged = finite & (stderr.amax(-1).cpu() <= target_stderr)
        if not bool(converged.all()):
            worst = stderr.amax(-1).cpu()[~converged & finite]
            largest = f"largest stderr {float(worst.max()):.3g}" if worst.numel() else "none finite"
            warnings.warn(f"spectrum_estimate: {int((~converged).sum())} of {E} networks did not reach "
                          f"target_stderr={target_stderr:g} within max_steps={max_steps} ({largest}; "
                          f"{int((~finite).sum())} not finite); raise max_steps", stacklevel=2)
    else:
        converged = finite
    return SpectrumEstimate(exponents=_combine(chunks), stderr=stderr, history=_history(sums, steps),
                            history_steps=_history_steps(steps.shape[1], width, n_tr, done), n_steps=used,
                            converged=converged, n_transient=n_tr, width=width, cell_sums=sums, cell_steps=steps,
                            blocks=blocks, min_blocks=min_blocks)


def _input_source(model, inputs, n_steps, batch):
    """``(source(start, length) -> inputs or None, n_steps, limit)`` for the three kinds of ``inputs``; ``limit``
    is the longest trajectory the inputs allow (None: unlimited)."""
    check_int("n_steps", n_steps, 1, none=True)
    check_int("batch", batch, 1)
    if inputs is None:
        if n_steps is None:
            raise ValueError("give either inputs or n_steps for zero input")
        return (lambda start, length: None), n_steps, None
    if callable(inputs) and not isinstance(inputs, torch.Tensor):
        if n_steps is None:
            raise ValueError("with callable inputs give n_steps, the length of the first run")
        return (lambda start, length: inputs(length)), n_steps, None
    if not isinstance(inputs, torch.Tensor) or inputs.dim() not in (3, 4):
        raise ValueError(f"inputs must be None, a tensor (E, B, T, I) or (B, T, I), or a callable, got "
                         f"{type(inputs).__name__}{tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else ''}")
    T = inputs.shape[-2]
    n_steps = check_int("n_steps", T if n_steps is None else n_steps, 1, T, note=" (the inputs' T)")
    return (lambda start, length: inputs[..., start:start + length, :]), n_steps, T


def _pad(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """x with zeros appended along ``dim`` up to length n."""
    extra = n - x.shape[dim]
    if extra <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim)


def _combine(chunks: list) -> torch.Tensor:
    """The exponents (E, k) from the chunks' (lam (E, B, k), steps averaged, networks using it (E,))."""
    if len(chunks) == 1:
        return chunks[0][0].mean(1)  # lyapunov_spectrum's reduce="mean", bit for bit
    lam0 = chunks[0][0]
    total = torch.zeros(lam0.shape[0], 1, dtype=lam0.dtype, device=lam0.device)
    acc = torch.zeros(lam0.shape[0], lam0.shape[-1], dtype=lam0.dtype, device=lam0.device)
    for lam, length, using in chunks:
        w = using.to(lam.device, lam.dtype)[:, None] * length  # (E, 1)
        acc = acc + w * lam.mean(1)
        total = total + w
    return acc / total


def _history(sums: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """(n, E, k): the running estimate after every cell."""
    B = sums.shape[1]
    run = sums.sum(1).cumsum(1)  # (E, n, k)
    covered = (steps.cumsum(1) * B)[:, :, None]  # (E, n, 1)
    return (run / covered).permute(1, 0, 2)


def _history_steps(n: int, width: int, n_tr: int, done: int) -> torch.Tensor:
    """(n,): the step at the end of every cell."""
    return (n_tr + width * torch.arange(1, n + 1)).clamp(max=done)
