"""Backpropagation through time for TanhRNN ensembles with a hand-written backward (a fast ``task_loss``).

``tanh_task_loss`` returns what ``training.task_loss`` returns (masked BCE-with-logits per network over its mask
count, and the fraction of correct signs), with the same gradients up to roundoff, from one autograd node whose
forward and backward are written out by hand. Network e (voltage form, as ``TanhRNN``), for t = 0..T-1:

    x_t = W r_{t-1} + b + U s_t,   r_t = tanh(x_t),   x_{-1} = h0,   z_t = V x_t + c,   L = sum mask * bce(z_t, y_t)

**Forward.** tanh is computed as ``2 sigmoid(2x) - 1`` (torch's CPU tanh costs ~3 ns per entry, 5x its sigmoid)
and the affine parts are folded into the weights, powers of two apart (exact): with the scaled state ``u_t = 2 x_t``
and ``q_t = sigmoid(u_t)``,

    u_t = 4W q_{t-1} + D^T [s_t, 1],   D = [2U^T; 2(b - W 1)],   z_t = 2VW q_{t-1} + (V / 2) D^T [s_t, 1] + c.

Per step: one batched matmul (E, B, N) x (E, N, N), one with the I + 1 columns [s_t, 1] for the drive, and one
sigmoid into a preallocated buffer Q (E, T, B, N) of the q_{t-1}; the states themselves are not kept. The readout of
all steps is then one batched matmul from Q, the masked BCE one elementwise operation.

**Backward.** With ``G_t = dL/dz_t = mask (sigmoid(z_t) - y_t)`` (times the upstream gradient), the state adjoint
``a_t = dL/dx_t`` runs backwards with one batched matmul per step, using ``1 - r^2 = 4 q (1 - q)``:

    a_{T-1} = G_{T-1} V,   a_{t-1} = G_{t-1} V + q_{t-1} (1 - q_{t-1}) * (a_t 4W),
    h0_bar = a_{-1} = q_{-1} (1 - q_{-1}) * (a_0 4W)

and every weight gradient is one batched matmul (or one reduction) over all steps and trajectories:

    W_bar = sum_t a_t^T r_{t-1} = 2 sum_t a_t^T q_{t-1} - b_bar 1^T,   [U_bar, b_bar] = sum_t a_t^T [s_t, 1],
    V_bar = sum_t G_t^T x_t = (sum_t G_t^T q_{t-1}) 2W^T + (sum_t G_t^T [s_t, 1]) D / 2,   c_bar = sum_t G_t,

and for the inputs s_bar_t = a_t U. The adjoints fill a buffer A (E, T, B, N), so that each sum is one matmul.

``checkpoint=n`` keeps only the state before every n-th step and recomputes each stretch in the backward (the sums
above then run per stretch). On CPU the networks run in sub-batches on worker threads
(``floss_core.spectrum.runtime.run_jobs``), one intra-op thread each; fixed sub-batches give the same bits on any
number of workers. Float32 and float64, CPU and CUDA. Not bit-identical to autograd: tanh via the sigmoid, the
folded weights and the summation orders differ at roundoff (~1e-15 relative in float64, ~1e-6 in float32, where
autograd's own error is ~2e-7).
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..cells.tanh import TanhRNN
from ..checks import check_int
from ..spectrum.runtime import give_buffer, run_jobs, take_buffer

__all__ = ["supports_tanh_bptt", "tanh_task_loss"]

# CPU: networks per sub-batch so that their per-step data (W, states) are about this (measured at N = 80, B = 16,
# E = 32 on 2 cores: 2 sub-batches of 16 networks 4-10% faster than 4 of 8, in float32 and float64)
_GROUP_BYTES = 2 ** 21
_MIN_INTRAOP_FLOPS = 2e7  # CPU, one sub-batch at a time: from this many flops per step on, intra-op threads pay


def check_batch(model, batch, h0=None) -> None:
    """ValueError unless the batch fits the model: inputs (E, B, T, I), targets and mask (E, B, T, O) with the
    model's E, I and O, one floating dtype for all three, and (if given) h0 (E, B, S) of that dtype."""
    x, y, m = batch.inputs, batch.targets, batch.mask
    if x.shape[-1:] != (model.input_size,) or y.shape[-1:] != (model.output_size,):
        raise ValueError(f"the task has {x.shape[-1]} input and {y.shape[-1]} target channels but the model has "
                         f"{model.input_size} inputs and {model.output_size} outputs")
    E = model.n_networks
    if x.dim() != 4 or x.shape[0] != E:
        raise ValueError(f"batch.inputs must be (E, B, T, I) with E = {E} networks, got shape {tuple(x.shape)}")
    for name, t in (("targets", y), ("mask", m)):
        if t.shape != x.shape[:3] + (model.output_size,):
            raise ValueError(f"batch.{name} must be (E, B, T, O) = {tuple(x.shape[:3]) + (model.output_size,)} like "
                             f"batch.inputs, got shape {tuple(t.shape)}")
        if t.dtype != x.dtype:
            raise ValueError(f"batch.{name} must have the dtype of batch.inputs ({x.dtype}), got {t.dtype}")
    if not x.is_floating_point():
        raise ValueError(f"batch.inputs must be floating point, got {x.dtype}")
    if h0 is not None:
        want = (E, x.shape[1], model.state_size)
        if tuple(h0.shape) != want:
            raise ValueError(f"h0 must be (E, B, S) = {want}, got shape {tuple(h0.shape)}")
        if h0.dtype != x.dtype:
            raise ValueError(f"h0 must have the dtype of batch.inputs ({x.dtype}), got {h0.dtype}")


def check_checkpoint(value, name: str) -> None:
    check_int(name, value, 0, note=" (a segment length in steps; 0: off)")


def supports_tanh_bptt(model) -> bool:
    """Whether ``tanh_task_loss`` computes ``task_loss`` for ``model``: a TanhRNN with TanhRNN's own dynamics."""
    if not isinstance(model, TanhRNN):
        return False
    cls = type(model)
    return all(getattr(cls, name) is getattr(TanhRNN, name) for name in ("step", "step_tangent", "readout"))


def _folded(W, U, b, V):
    """The scaled recursion's matrices: 4W (E, N, N); the drive D = [2U^T; 2(b - W 1)] (E, I + 1, N) of [s_t, 1];
    the readout z_t = Vq q_{t-1} + Vs [s_t, 1] + c with Vq = 2VW (E, O, N) and Vs = V D^T / 2 (E, O, I + 1)."""
    W4 = 4 * W
    D = torch.cat([2 * U.mT, (2 * (b - W.sum(-1)))[:, None]], 1)
    return W4, D, 0.5 * V @ W4, 0.5 * V @ D.mT


def _run_stretch(W4, D, u0, S, Q):
    """Steps from the scaled state u0 (E, B, N) with [s_t, 1] in S (E, L, B, I + 1): Q (E, L, B, N) receives the
    sigmoid q_{t-1} entering each step. Returns the last scaled state (E, B, N); the others are not kept."""
    # (E, N, N): a transposed view as the bmm's second operand costs ~40% more per step at B = 16; copied from 16 rows
    # on, where both give the same bits at the figures' sizes; with fewer rows MKL may sum in another order (float64,
    # N = 12, B = 3: 7e-16), and the committed figures were computed with the view
    W4t = W4.mT.contiguous() if u0.shape[1] >= 16 else W4.mT
    u = torch.empty_like(u0, memory_format=torch.contiguous_format)  # (E, B, N)
    Qv, Sv = Q.unbind(1), S.unbind(1)  # the per-step views, made once
    bmm, sigmoid = torch.bmm, torch.sigmoid
    sigmoid(u0, out=Qv[0])
    for t in range(len(Qv) - 1):
        bmm(Qv[t], W4t, out=u).baddbmm_(Sv[t], D)  # u_t = 4W q_{t-1} + D^T [s_t, 1]
        sigmoid(u, out=Qv[t + 1])
    return bmm(Qv[-1], W4t, out=u).baddbmm_(Sv[-1], D)


def _loss_of(Vq, Vs, c, Q, S, y, m):
    """Logits z (E, L, B, O) of a stretch from its sigmoids Q and inputs S, its masked BCE sum (E,) and number of
    correct signs (E,); y, m: its targets and mask (E, L, B, O)."""
    E, L, B, N = Q.shape
    z = torch.baddbmm(c[:, None], Q.view(E, L * B, N), Vq.mT)  # (E, L B, O)
    z = z.baddbmm_(S.reshape(E, L * B, -1), Vs.mT).view(E, L, B, -1)
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")  # (E, L, B, O)
    correct = ((z > 0) == (y > 0.5)).to(z.dtype)
    return z, (bce * m).flatten(1).sum(1), (correct * m).flatten(1).sum(1)


def _back_stretch(W4, U, V, Q, S, G, h_bar, A, grads, need):
    """The backward of one stretch: G (E, L, B, O) the gradient on its logits, h_bar (E, B, N) the gradient on its
    last state from later steps (None after the last step), A (E, L, B, N) a work buffer for the adjoints. Adds
    into ``grads`` [2 sum a^T q, [U_bar, b_bar]^T, sum G^T q, sum G^T [s, 1], c_bar, inputs' gradients]; returns
    the gradient on the state before the stretch. Each step's G_t V and q (1 - q) are made when the step needs them
    (in cache), not for the whole stretch in passes over memory (~8% of a training step at E = 27, one thread)."""
    E, L, B, N = Q.shape
    Av, Qv, Gv = A.unbind(1), Q.unbind(1), G.unbind(1)  # the per-step views, made once
    Vo = [V[:, None, o] for o in range(G.shape[-1])]  # (E, 1, N) per output

    def drive(t):  # a_t = G_t V (+ the rest, added later), elementwise (O is small)
        torch.mul(Gv[t][..., :1], Vo[0], out=Av[t])
        for o in range(1, len(Vo)):
            Av[t].addcmul_(Gv[t][..., o:o + 1], Vo[o])

    drive(L - 1)
    if h_bar is not None:
        Av[-1].add_(h_bar)
    C = torch.empty_like(Av[0], memory_format=torch.contiguous_format)  # (E, B, N)
    P = torch.empty_like(C)  # q (1 - q) = (1 - r^2) / 4 of the current step
    bmm, addcmul = torch.bmm, torch.addcmul
    for t in range(L - 1, 0, -1):
        drive(t - 1)
        addcmul(Qv[t], Qv[t], Qv[t], value=-1, out=P)
        Av[t - 1].addcmul_(P, bmm(Av[t], W4, out=C))  # a_{t-1} += q (1 - q) (a_t 4W)
    addcmul(Qv[0], Qv[0], Qv[0], value=-1, out=P)
    h_bar = torch.bmm(Av[0], W4).mul_(P)  # onto the state before the stretch
    A2, Q2, S2, G2 = A.view(E, L * B, N), Q.view(E, L * B, N), S.reshape(E, L * B, -1), G.reshape(E, L * B, -1)
    if need[0]:
        grads[0].baddbmm_(A2.mT, Q2, alpha=2)
    if need[0] or need[1] or need[2]:  # [U_bar, b_bar]^T = [s, 1]^T a, as (E, I + 1, N): MKL's fast orientation
        grads[1].baddbmm_(S2.mT, A2)
    if need[3]:
        grads[2].baddbmm_(G2.mT, Q2)
        grads[3].baddbmm_(G2.mT, S2)
    if need[4]:
        grads[4] += G2.sum(1)
    if need[6]:
        grads[5].append(torch.bmm(A2, U).view(E, L, B, -1))
    return h_bar


def _stretches(T, checkpoint):
    n = checkpoint if 0 < checkpoint < T else T
    return [(t0, min(T, t0 + n)) for t0 in range(0, T, n)]


def _forward_group(W, U, b, V, c, h0, X, Y, M, checkpoint, Q):
    """Loss (E,), accuracy (E,) and what the backward needs, for one sub-batch of networks.
    X: inputs (E, B, T, I); Y, M: targets and mask (E, T, B, O); Q (E, T, B, N), or None: checkpointed."""
    E, B, T, _ = X.shape
    S = torch.cat([X.transpose(1, 2), X.new_ones(E, T, B, 1)], -1)  # [s_t, 1] (E, T, B, I + 1)
    W4, D, Vq, Vs = _folded(W, U, b, V)
    u = 2 * h0  # (E, B, N)
    stretches = _stretches(T, checkpoint)
    if Q is None:  # checkpointed: one stretch's buffer, reused, and the state before every stretch
        Q, kept = W.new_empty(E, stretches[0][1], B, W.shape[-1]), W.new_empty(len(stretches), E, B, W.shape[-1])
    bce = correct = 0
    for k, (t0, t1) in enumerate(stretches):
        if len(stretches) > 1:
            kept[k] = u
        u = _run_stretch(W4, D, u, S[:, t0:t1], Q[:, :t1 - t0])
        z, b_, c_ = _loss_of(Vq, Vs, c, Q[:, :t1 - t0], S[:, t0:t1], Y[:, t0:t1], M[:, t0:t1])
        bce, correct = bce + b_, correct + c_
    n = M.sum((1, 2, 3))  # (E,) defined targets
    return bce / n, correct / n, ([S, Q, z] if len(stretches) == 1 else [S, kept])


def _backward_group(W, U, b, V, c, Y, M, saved, g, checkpoint, need, work):
    """Gradients of (W, U, b, V, c, h0, inputs) for one sub-batch, None where not needed; g (E,) the loss's
    gradient, saved: what its forward kept, work (E, T, B, N) for the adjoints or None (checkpointed: buffers made
    here)."""
    S, *saved = saved
    E, T, B, I1 = S.shape
    g = (g / M.sum((1, 2, 3)))[:, None, None, None]  # on the masked BCE sum
    N, O = W.shape[-1], V.shape[1]
    W4, D, Vq, Vs = _folded(W, U, b, V)
    kw = {"dtype": W.dtype, "device": W.device}
    grads = [torch.zeros(E, N, N, **kw), torch.zeros(E, I1, N, **kw), torch.zeros(E, O, N, **kw),
             torch.zeros(E, O, I1, **kw), torch.zeros(E, O, **kw), []]
    stretches = _stretches(T, checkpoint)
    if len(stretches) > 1:  # checkpointed: one stretch's buffers, reused
        work = W.new_empty(2, E, stretches[0][1], B, N)
    h_bar = None
    for k in range(len(stretches) - 1, -1, -1):
        t0, t1 = stretches[k]
        if len(stretches) == 1:
            (Q, z), A = saved, work
        else:  # recompute the stretch from the state kept before it
            Q, A = work[:, :, :t1 - t0]
            _run_stretch(W4, D, saved[0][k], S[:, t0:t1], Q)
            z = _loss_of(Vq, Vs, c, Q, S[:, t0:t1], Y[:, t0:t1], M[:, t0:t1])[0]
        G = (torch.sigmoid(z) - Y[:, t0:t1]) * M[:, t0:t1] * g  # dL/dz, (E, L, B, O)
        h_bar = _back_stretch(W4, U, V, Q, S[:, t0:t1], G, h_bar, A, grads, need)
    U_bar, b_bar = grads[1][:, :-1].mT, grads[1][:, -1]
    W_bar = grads[0].sub_(b_bar[..., None])  # 2 sum a^T q - b_bar 1^T = sum a^T r
    V_bar = 0.5 * (grads[2] @ W4.mT + grads[3] @ D)  # sum G^T x, x_t = (4W q_{t-1} + D^T [s_t, 1]) / 2
    X_bar = torch.cat(grads[5][::-1], 1).transpose(1, 2) if need[6] else None
    out = [W_bar, U_bar, b_bar, V_bar, grads[4], h_bar, X_bar]
    return [o if nd else None for o, nd in zip(out, need)]


class _TanhBPTT(torch.autograd.Function):
    """(W, U, b, V, c, h0, inputs, targets, mask) -> (loss (E,), accuracy (E,)) of a TanhRNN ensemble (``task_loss``),
    with a hand-written backward. The networks run in sub-batches (``groups``, slices of E) on ``workers`` threads."""

    @staticmethod
    def forward(ctx, W, U, b, V, c, h0, X, Y, M, groups, workers, one_thread, checkpoint):
        E, B, T, _ = X.shape
        Q = take_buffer((E, T, B, W.shape[-1]), W.dtype, W.device) if len(_stretches(T, checkpoint)) == 1 else None
        args = (W, U, b, V, c, h0, X, Y.transpose(1, 2), M.transpose(1, 2))
        jobs = [lambda g=g: _forward_group(*(a[g] for a in args), checkpoint, None if Q is None else Q[g])
                for g in groups]
        out = run_jobs(workers, jobs, one_thread, W.device.type)
        if Q is not None:  # the buffer back to the pool once the graph (or this call's result) is freed
            weakref.finalize(ctx, give_buffer, Q)
        ctx.n_saved = len(out[0][2])
        ctx.save_for_backward(W, U, b, V, c, Y, M, *(t for _, _, sv in out for t in sv))
        ctx.groups, ctx.workers, ctx.one_thread, ctx.checkpoint = groups, workers, one_thread, checkpoint
        loss, acc = torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])
        ctx.mark_non_differentiable(acc)
        return loss, acc

    @staticmethod
    @once_differentiable
    def backward(ctx, g_loss, g_acc):
        W, U, b, V, c, Y, M, *rest = ctx.saved_tensors
        args = (W, U, b, V, c, Y.transpose(1, 2), M.transpose(1, 2))
        k = ctx.n_saved
        per_group = [rest[i * k:(i + 1) * k] for i in range(len(ctx.groups))]
        E, B, T, _ = Y.shape
        work = take_buffer((E, T, B, W.shape[-1]), W.dtype, W.device) if k == 3 else None  # the adjoints A
        need = ctx.needs_input_grad[:7]
        jobs = [lambda g=g, sv=sv: _backward_group(*(a[g] for a in args), sv, g_loss[g], ctx.checkpoint, need,
                                                   None if work is None else work[g])
                for g, sv in zip(ctx.groups, per_group)]
        out = run_jobs(ctx.workers, jobs, ctx.one_thread, W.device.type)
        if work is not None:
            give_buffer(work)
        grads = [None if out[0][i] is None else torch.cat([o[i] for o in out]) for i in range(7)]
        return (*grads, None, None, None, None, None, None, None)


def _plan(E, B, N, device, dtype, group, workers):
    """Sub-batches (slices of E), worker threads, and whether operations run on one intra-op thread."""
    cpu = torch.device(device).type == "cpu"
    if workers is None:
        workers = min(torch.get_num_threads(), E) if cpu else 1
    if group is None:
        per_network = torch.finfo(dtype).bits // 8 * (N * N + 4 * B * N)
        n = max(1, -(-E * per_network // _GROUP_BYTES)) if cpu else 1
        n = min(E, -(-max(n, workers) // workers) * workers)
        sizes = [E // n + (i < E % n) for i in range(n)]
    else:
        sizes = [min(group, E - e0) for e0 in range(0, E, group)]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    groups = [slice(s, s + n) for s, n in zip(starts, sizes)]
    step_flops = 2 * max(sizes) * B * N * N
    one_thread = cpu and ((workers > 1 and len(groups) > 1) or step_flops < _MIN_INTRAOP_FLOPS)
    return groups, workers, one_thread


def tanh_task_loss(model, batch, h0: torch.Tensor, *, checkpoint: int = 0, group: int | None = None,
                   workers: int | None = None):
    """``task_loss(model, batch, h0, checkpoint=...)`` for a TanhRNN (``supports_tanh_bptt``), hand-differentiated.

    Returns the masked BCE per network (E,) and the fraction of correct signs (E,) (detached), with the gradients
    of W, U, b, V, c, h0 (E, B, N) and the inputs equal to autograd's up to roundoff (none for targets and mask).

    Other arguments (keyword-only):
        checkpoint: > 0 keeps only every checkpoint-th state for the backward and recomputes the stretches between.
        group: networks per sub-batch (default: on CPU sub-batches whose per-step data stay near 2 MiB, their
            number a multiple of ``workers``; on GPU all networks at once).
        workers: CPU threads running sub-batches at once, one intra-op thread each (default: torch's thread count;
            on GPU 1). For fixed sub-batches the result does not depend on it.
    """
    if not supports_tanh_bptt(model):
        raise ValueError(f"tanh_task_loss needs a TanhRNN with its own dynamics, got {type(model).__name__}")
    check_batch(model, batch, h0)
    check_checkpoint(checkpoint, "checkpoint")
    check_int("workers", workers, 1, none=True)
    check_int("group", group, 1, none=True)
    E, B = batch.inputs.shape[:2]
    W = model.W
    groups, workers, one_thread = _plan(E, B, W.shape[-1], W.device, W.dtype, group, workers)
    checkpoint = checkpoint if torch.is_grad_enabled() else 0
    return _TanhBPTT.apply(W, model.U, model.b, model.V, model.c, h0, batch.inputs, batch.targets, batch.mask,
                           groups, workers, one_thread, checkpoint)
