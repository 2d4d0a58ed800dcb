"""Backpropagation through time for LSTM and GRU ensembles with a hand-written backward (a fast ``task_loss``).

``gated_task_loss`` returns what ``training.task_loss`` returns (masked BCE-with-logits per network over its mask
count, and the fraction of correct signs), with the same gradients up to roundoff, from one autograd node whose
forward and backward are written out by hand (the cells' equations: ``floss_core.cells.gated``; the per-step
kernels: ``training.gated_steps``).

**Forward.** Per step one batched matmul ``[h_{t-1}, s_t, 1] [W; U; b]^T`` (E, B, H + I + 1) x (E, H + I + 1, G*H)
gives every gate's pre-activation, one sigmoid covers all gates (tanh as ``2 sigmoid(2x) - 1``, the factor 2 folded
into the weights' rows: exact), and a few elementwise operations the state. The step writes into preallocated
buffers (E, T, B, ...), kept between calls (``runtime.take_buffer``): the states next to the inputs, and the gates'
local derivatives that the backward multiplies with (formed while the gates are in cache). The readout of all steps is
then one batched matmul, the masked BCE one elementwise operation.

**Backward.** With ``G_t = dL/dz_t = mask (sigmoid(z_t) - y_t)`` (times the upstream gradient), each step is one
batched matmul (the adjoint of the pre-activations times the stacked recurrent weights, plus ``G_t V``) and a few
elementwise products with what the forward stored, which it only reads (a graph may be back-propagated twice). The
adjoints of the pre-activations, A, go to a ring of ~512 / B steps that stays in cache, and every weight gradient is
one batched matmul per ring, ``A^T [h, s, 1]`` over its steps and trajectories.

``checkpoint=n`` keeps only the state before every n-th step and recomputes each stretch in the backward (the
sums above then run per stretch). On CPU the networks run in sub-batches on worker threads
(``floss_core.spectrum.runtime.run_jobs``), one intra-op thread each; fixed sub-batches give the same bits on any
number of workers. Float32 and float64, CPU and CUDA. Not bit-identical to autograd: tanh via the sigmoid, the
folded weights and the summation orders differ at roundoff (~1e-15 relative in float64).
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..cells.gated import GRU, LSTM
from ..checks import check_int
from ..spectrum.runtime import give_buffer, run_jobs, take_buffer
from .gated_steps import GRUSteps, LSTMSteps
from .tanh_bptt import _stretches, check_batch, check_checkpoint

__all__ = ["supports_gated_bptt", "gated_task_loss"]

# CPU: networks per sub-batch so that their weights and per-step data are about this (measured at H = 80, B = 16,
# float32 on a 2-core CPU, one thread: sub-batches of 16 networks 5-8% faster per network than of 8 or of 32)
_GROUP_BYTES = 2 ** 22
_NO_GRAD_STRETCH = 64  # without gradients the states run in stretches of this many steps (small buffers)
_MIN_INTRAOP_FLOPS = 2e7  # CPU, one sub-batch at a time: from this many flops per step on, intra-op threads pay
_OWN = ("_forward", "step", "step_tangent", "readout")  # what a subclass must not override
_STEPS = {LSTM: LSTMSteps, GRU: GRUSteps}


def _base(model):
    for base in (LSTM, GRU):
        if isinstance(model, base):
            return base
    return None


def supports_gated_bptt(model) -> bool:
    """Whether ``gated_task_loss`` computes ``task_loss`` for ``model``: an LSTM or GRU (or a subclass that overrides
    none of ``_forward``, ``step``, ``step_tangent``, ``readout``)."""
    base = _base(model)
    return base is not None and all(getattr(type(model), n) is getattr(base, n) for n in _OWN)


def _params(model):
    """(W, U, b, b_h or None, V, c) of the model."""
    return model.W, model.U, model.b, model.b_h if isinstance(model, GRU) else None, model.V, model.c


def _loss_of(V, c, Hh, y, m):
    """Logits z (E, L, B, O) from the states Hh (E, L, B, H) (a view), the masked BCE sum (E,) and the number of
    correct signs (E,); y, m: targets and mask (E, L, B, O)."""
    E, L, B, H = Hh.shape
    z = torch.baddbmm(c[:, None], Hh.reshape(E, L * B, H), V.mT).view(E, L, B, -1)  # (E, L, B, O)
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    correct = ((z > 0) == (y > 0.5)).to(z.dtype)
    return z, (bce * m).flatten(1).sum(1), (correct * m).flatten(1).sum(1)


def _fill_inputs(Hs, X, t0, t1):
    """Hs[:, l] = [., s_{t0+l}, 1] for the stretch's steps; X (E, B, T, I)."""
    I, L = X.shape[-1], t1 - t0
    Hs[:, :L, :, -I - 1:-1] = X[:, :, t0:t1].transpose(1, 2)
    Hs[:, :L, :, -1] = 1


def _buffer_shapes(cls, E, L, B, H, I):
    """Shapes of the buffers over L steps: Hs (E, L + 1, B, K), and time-major (each step's slice contiguous across
    networks: 2-4% faster training steps than network-major) P (L, E, B, .) and (LSTM) QF (L + 1, E, B, .)."""
    wp, wm = cls.widths(H)
    return [(E, L + 1, B, H + I + 1), (L, E, B, wp)] + ([(L + 1, E, B, wm)] if wm else [])


def _stretch_buffers(steps, E, L, B, like, grad):
    """Buffers for one stretch of L steps: [Hs, P, QF] (``_buffer_shapes``; QF None without ``grad`` or for the
    GRU)."""
    bufs = [like.new_empty(s) for s in _buffer_shapes(type(steps), E, L, B, steps.H, steps.I)]
    return bufs[:2] + [bufs[2] if grad and len(bufs) == 3 else None]


def _forward_group(cls, params, h0, X, Y, M, checkpoint, bufs, grad):
    """Loss (E,), accuracy (E,) and what the backward needs, for one sub-batch of networks. params: (W, U, b, [b_h,]
    V, c) sliced to it; X: inputs (E, B, T, I); Y, M: targets and mask (E, T, B, O); bufs: [Hs, P, QF or None] over
    all T, or None (checkpointed, or without gradient: stretch buffers made here)."""
    steps = cls(*params)
    E, B, T, _ = X.shape
    stretches = _stretches(T, checkpoint if grad else checkpoint or _NO_GRAD_STRETCH)
    if bufs is None:
        bufs = _stretch_buffers(steps, E, stretches[0][1], B, X, grad and len(stretches) == 1)
    Hs, P, QF = bufs
    state = steps.pack_state(h0)
    kept = []
    bce = correct = 0
    for t0, t1 in stretches:
        L = t1 - t0
        if len(stretches) > 1 and grad:
            kept.append(torch.cat(state, -1))  # (E, B, S'): the state before the stretch (its own memory)
        _fill_inputs(Hs, X, t0, t1)
        state = steps.forward(state, Hs[:, :L + 1], P[:L], None if QF is None else QF[:L + 1],
                              grad and len(stretches) == 1)
        z, b_, c_ = _loss_of(steps.Vr, steps.cr, Hs[:, 1:L + 1, :, :steps.H], Y[:, t0:t1], M[:, t0:t1])
        bce, correct = bce + b_, correct + c_
    n = M.sum((1, 2, 3))  # (E,) defined targets
    if not grad:
        return bce / n, correct / n, []
    return bce / n, correct / n, ([Hs, P, z] + ([QF] if QF is not None else []) if len(stretches) == 1
                                  else [torch.stack(kept)])


def _backward_group(cls, params, X, Y, M, saved, g, checkpoint, need):
    """Gradients of (W, U, b, b_h, V, c, h0, inputs) for one sub-batch, None where not needed; g (E,) the loss's
    gradient, saved: what its forward kept."""
    steps = cls(*params)
    E, B, T, _ = X.shape
    V = params[-2]
    H = steps.H
    g = (g / M.sum((1, 2, 3)))[:, None, None, None]  # on the masked BCE sum
    stretches = _stretches(T, checkpoint)
    grads = steps.new_grads(V, E) if any(need[:4]) else None
    gV, gc = torch.zeros_like(V), torch.zeros_like(params[-1])  # sum G^T h (stored form), sum G
    x_bars = []
    carry = steps.initial_carry(X, E, B)
    if len(stretches) > 1:
        bufs = _stretch_buffers(steps, E, stretches[0][1], B, X, True)
    for k in range(len(stretches) - 1, -1, -1):
        t0, t1 = stretches[k]
        L = t1 - t0
        if len(stretches) == 1:
            Hs, P, z, *QF = saved
            QF = QF[0] if QF else None
        else:  # recompute the stretch from the state kept before it
            Hs, P, QF = bufs[0][:, :L + 1], bufs[1][:L], None if bufs[2] is None else bufs[2][:L + 1]
            _fill_inputs(Hs, X, t0, t1)
            steps.forward(saved[0][k].split(H, -1), Hs, P, QF, True)
            z = _loss_of(steps.Vr, steps.cr, Hs[:, 1:, :, :H], Y[:, t0:t1], M[:, t0:t1])[0]
        G = (torch.sigmoid(z) - Y[:, t0:t1]) * M[:, t0:t1] * g  # dL/dz (E, L, B, O)
        carry, x_bar = steps.backward(Hs, P, QF, G, carry, grads, need[7])
        x_bars.append(x_bar)
        if need[4]:
            gV.baddbmm_(G.reshape(E, L * B, -1).mT, Hs[:, 1:L + 1, :, :H].reshape(E, L * B, H))
        if need[4] or need[5]:
            gc += G.sum((1, 2))
    W_bar, U_bar, b_bar, b_h_bar = steps.finish(grads) if any(need[:4]) else (None,) * 4
    V_bar, c_bar = steps.readout_grads(gV, gc)
    X_bar = torch.cat(x_bars[::-1], 1).transpose(1, 2) if need[7] else None  # (E, B, T, I)
    out = [W_bar, U_bar, b_bar, b_h_bar, V_bar, c_bar, steps.state_grad(carry), X_bar]
    return [o if nd else None for o, nd in zip(out, need)]


class _GatedBPTT(torch.autograd.Function):
    """(W, U, b, b_h, V, c, h0, inputs, targets, mask) -> (loss (E,), accuracy (E,)) of an LSTM or GRU ensemble
    (``task_loss``; b_h None for the LSTM), with a hand-written backward. The networks run in sub-batches
    (``groups``, slices of E) on ``workers`` threads."""

    @staticmethod
    def forward(ctx, W, U, b, b_h, V, c, h0, X, Y, M, cls, groups, workers, one_thread, checkpoint, grad):
        E, B, T, I = X.shape
        H = W.shape[-1]
        single = grad and len(_stretches(T, checkpoint)) == 1
        bufs = None
        if single:  # the buffers over all T, back to the pool once the graph (or this call's result) is freed
            bufs = [take_buffer(s, W.dtype, W.device) for s in _buffer_shapes(cls, E, T, B, H, I)]
            for buf in bufs:
                weakref.finalize(ctx, give_buffer, buf)
        params = tuple(p for p in (W, U, b, b_h, V, c) if p is not None)
        args = (*params, h0, X, Y.transpose(1, 2), M.transpose(1, 2))
        n_p = len(params)

        def job(gs):
            a = [t[gs] for t in args]
            gb = None if bufs is None else [bufs[0][gs]] + [t[:, gs] for t in bufs[1:]] + [None] * (3 - len(bufs))
            return _forward_group(cls, a[:n_p], a[n_p], a[n_p + 1], a[n_p + 2], a[n_p + 3], checkpoint, gb, grad)

        out = run_jobs(workers, [lambda gs=gs: job(gs) for gs in groups], one_thread, W.device.type)
        loss, acc = torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])
        ctx.mark_non_differentiable(acc)
        ctx.n_saved = len(out[0][2])
        ctx.n_params = n_p
        ctx.save_for_backward(*params, X, Y, M, *(t for _, _, sv in out for t in sv))
        ctx.cls, ctx.groups, ctx.workers, ctx.one_thread, ctx.checkpoint = cls, groups, workers, one_thread, checkpoint
        return loss, acc

    @staticmethod
    @once_differentiable
    def backward(ctx, g_loss, g_acc):
        n_p, k = ctx.n_params, ctx.n_saved
        saved = ctx.saved_tensors
        params, (X, Y, M), rest = saved[:n_p], saved[n_p:n_p + 3], saved[n_p + 3:]
        args = (*params, X, Y.transpose(1, 2), M.transpose(1, 2))
        per_group = [rest[i * k:(i + 1) * k] for i in range(len(ctx.groups))]
        need = list(ctx.needs_input_grad[:8])  # W, U, b, b_h, V, c, h0, X

        def job(gs, sv):
            a = [t[gs] for t in args]
            return _backward_group(ctx.cls, a[:n_p], *a[n_p:], sv, g_loss[gs], ctx.checkpoint, need)

        jobs = [lambda gs=gs, sv=sv: job(gs, sv) for gs, sv in zip(ctx.groups, per_group)]
        out = run_jobs(ctx.workers, jobs, ctx.one_thread, X.device.type)
        grads = [None if out[0][i] is None else torch.cat([o[i] for o in out]) for i in range(8)]
        return (*grads, None, None, None, None, None, None, None, None)


def _plan(E, B, H, G, device, dtype, group, workers):
    """Sub-batches (slices of E), worker threads, and whether operations run on one intra-op thread."""
    cpu = torch.device(device).type == "cpu"
    if workers is None:
        workers = min(torch.get_num_threads(), E) if cpu else 1
    if group is None:
        per_network = torch.finfo(dtype).bits // 8 * (2 * G * H * H + (G + 4) * B * H)
        n = max(1, -(-E * per_network // _GROUP_BYTES)) if cpu else 1
        n = min(E, -(-max(n, workers) // workers) * workers)
        sizes = [E // n + (i < E % n) for i in range(n)]
    else:
        sizes = [min(group, E - e0) for e0 in range(0, E, group)]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    groups = [slice(s, s + n) for s, n in zip(starts, sizes)]
    step_flops = 2 * max(sizes) * B * H * G * H
    one_thread = cpu and ((workers > 1 and len(groups) > 1) or step_flops < _MIN_INTRAOP_FLOPS)
    return groups, workers, one_thread


def gated_task_loss(model, batch, h0: torch.Tensor, *, checkpoint: int = 0, group: int | None = None,
                    workers: int | None = None):
    """``task_loss(model, batch, h0, checkpoint=...)`` for an LSTM or GRU (``supports_gated_bptt``),
    hand-differentiated.

    Returns the masked BCE per network (E,) and the fraction of correct signs (E,) (detached), with the gradients
    of W, U, b, b_h (GRU), V, c, h0 (E, B, S) and the inputs (E, B, T, I) equal to autograd's up to roundoff (none
    for targets and mask).

    Other arguments (keyword-only):
        checkpoint: > 0 keeps only every checkpoint-th state for the backward and recomputes the stretches between.
        group: networks per sub-batch (default: on CPU sub-batches whose weights and per-step data stay near 4 MiB,
            16 networks at H = 80, B = 16 in float32, their number a multiple of ``workers``; on GPU all networks at
            once).
        workers: CPU threads running sub-batches at once, one intra-op thread each (default: torch's thread count;
            on GPU 1). For fixed sub-batches the result does not depend on it.
    """
    if not supports_gated_bptt(model):
        raise ValueError(f"gated_task_loss needs an LSTM or GRU with its own dynamics, got {type(model).__name__}")
    check_batch(model, batch, h0)
    check_checkpoint(checkpoint, "checkpoint")
    check_int("workers", workers, 1, none=True)
    check_int("group", group, 1, none=True)
    E, B = batch.inputs.shape[:2]
    W = model.W
    base = _base(model)
    groups, workers, one_thread = _plan(E, B, W.shape[-1], base.n_gates, W.device, W.dtype, group, workers)
    params = _params(model)
    tensors = (*params, h0, batch.inputs)
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    return _GatedBPTT.apply(*params, h0, batch.inputs, batch.targets, batch.mask, _STEPS[base], groups, workers,
                            one_thread, checkpoint, grad)
