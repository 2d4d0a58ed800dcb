"""The tangent maps of the fast gated engine, two ways: the Jacobians' W part stored ("dense", many exponents) or as
scalings of ``W Q`` ("factored", few exponents); and the adjoints of their coefficients over chunks of steps.

Both cells' Jacobians have the form (``gated_cells``; rows r of the state, G gate blocks W_x (H x H) of W acting on
the h part, the first H coordinates, and a diagonal part acting on H coordinates from ``off``):

    (J q)[r] = sum_x K_x[r] (W_x q_h)[r mod H] + d[r] q[off + r mod H]        K (T, M, G, S), d (T, M, S)

(GRU: S = H, K = (c_r, c_z, c_n), d = z, off = 0; LSTM: S = 2H, K = the J_hh and J_ch scalings, d = [beta f, f],
off = H.) What the backward needs of a chunk of steps, with ``J_bar_t = Y_bar_t Q_t^T``:

    rho_x[r] = sum_j J_bar[r, j] W_x[r mod H, j]  (C, E, B, G, S) -> the coefficients' adjoints, with
    d_bar[r] = sum_k Y_bar[r, k] Q[off + r mod H, k]                (the diagonal's), and
    W_x_bar += sum over steps and row blocks of diag(K_x) J_bar     (the explicit W's gradient).

"dense": J's columns on the h part, ``J_h`` (T, M, S, H), built by the cell (``build_columns``: a few elementwise
operations per chunk of steps; the GRU's diagonal folded in, the LSTM's applied elementwise on c), then a tangent
step is one matmul (2 k S H flops) and, for the LSTM, one multiply-add; the adjoint forms J_bar per step by one
batched matmul per chunk and contracts it elementwise with W and K. Reading J_h costs S H numbers per step and
trajectory, so with few vectors (k = 8: measured 2.3-2.6x slower than with it in cache) it is memory-bound.

"factored": per step ``P^T = Q_h^T W^T`` (one matmul with the shared W, 2 k G H^2 flops, stored for the adjoint),
then ``Y = sum_x K_x P_x + d q_off`` (a few elementwise operations on (M, k, G, H) arrays); backward
``P_bar = sum_blocks K Y_bar``, ``Q_bar_h = P_bar W`` plus the diagonal's part; the adjoint takes
``rho_x = sum_k Y_bar P_x`` and ``W_bar += P_bar Q_h^T`` (one matmul per chunk). Nothing of size S x H per step.

Every per-step and per-slot view is made once: at these sizes a view costs about what a small operation does.
"""
from __future__ import annotations

import torch

from .gated_cells import per_network_gram
from .runtime import take_buffer

__all__ = ["tangent_map", "DenseTangent", "FactoredTangent"]

_CHUNK_BYTES = 2 ** 22  # per chunk of steps, the arrays of all its trajectories: ~4 MiB


def tangent_map(kernel, coefs, T: int, k: int, QTs: torch.Tensor):
    """The tangent map of one sub-batch: "dense" from ``kernel.dense_min_k`` exponents on, else "factored"."""
    cls = DenseTangent if k >= kernel.dense_min_k else FactoredTangent
    return cls(kernel, coefs, T, k, QTs)


class _Tangent:
    """Shared set-up: the coefficients K (T, M, G, S) and d (T, M, S) of every step, the views of the bases QTs
    (T + 1, M, k, S) and of the buffers of rows the backward uses."""

    def __init__(self, kernel, coefs, T: int, k: int, QTs: torch.Tensor):
        self.kernel, self.coefs, self.k, self.T = kernel, coefs, k, T
        E, B, H, G, S = kernel.E, kernel.B, kernel.H, kernel.n_gates, kernel.S
        M = E * B
        self.E, self.B, self.H, self.G, self.S, self.M = E, B, H, G, S, M
        blocks, off = S // H, kernel.diag_offset
        self.blocks, self.off = blocks, off
        self.kw = dict(dtype=QTs.dtype, device=QTs.device)
        self.elem = QTs.element_size()
        self.K = kernel.row_coefs(coefs, 0, T).reshape(T, M, G, S)  # (T, M, G, S)
        self.d = kernel.diag_coefs(coefs).reshape(T, M, S)  # (T, M, S)
        self.dv = self.d.view(T, M, 1, blocks, H).unbind(0)  # per step (M, 1, blocks, H)
        self.ds = [self.d.view(T, M, 1, blocks, H)[..., s, :].unbind(0) for s in range(blocks)]  # (M, 1, H)
        self.QTv = QTs.unbind(0)
        self.Qh = QTs[..., :H].unbind(0)  # (M, k, H): the rows' h part
        self.Qoff = QTs[..., off:off + H].unsqueeze(3).unbind(0)  # (M, k, 1, H): what d scales
        self.Y4 = QTs.view(T + 1, M, k, blocks, H).unbind(0)

    def chunk_steps(self, per_step_bytes: int) -> int:
        """Steps per chunk: as many as fit ``_CHUNK_BYTES`` (at least 1, at most T)."""
        return max(1, min(self.T, _CHUNK_BYTES // max(1, per_step_bytes)))

    views = (0, 1, 2, 3, 4, 5)  # which of ``slot_views``' entries the map uses (the others are None)

    def slot_views(self, buf) -> list:
        """Per slot of a buffer (C, M, n, S) of rows: (0 the rows, 1 their row blocks as (M, n, 1, H) and 2 as
        (M, n, H), 3 the h part's output per network (E, B n, H) and 4 per trajectory (M, n, H), 5 the diagonal part's
        (M, n, H)); only the entries in ``views`` are made (thousands of views per call otherwise)."""
        C, M, n, S = buf.shape
        E, B, H, blocks, off = self.E, self.B, self.H, self.blocks, self.off
        blk = [buf[..., s * H:(s + 1) * H] for s in range(blocks)]
        make = {0: lambda: buf.unbind(0),
                1: lambda: list(zip(*[b.unsqueeze(-2).unbind(0) for b in blk])),
                2: lambda: list(zip(*[b.unbind(0) for b in blk])),
                3: lambda: buf.view(C, E, B * n, S)[..., :H].unbind(0),
                4: lambda: buf[..., :H].unbind(0),
                5: lambda: buf[..., off:off + H].unbind(0)}
        cols = [make[i]() if i in self.views else [None] * C for i in range(6)]
        return list(zip(*cols))

    def diag_back(self, t: int, Yd, od, g=None):
        """The diagonal part of ``J_t^T`` on the coordinates from ``off`` >= H: ``od = sum_blocks d Y_bar (+ g)``."""
        ds = self.ds
        if g is None:
            torch.mul(Yd[0], ds[0][t], out=od)
        else:
            torch.addcmul(g, Yd[0], ds[0][t], out=od)
        for s in range(1, self.blocks):
            od.addcmul_(Yd[s], ds[s][t])

    def diag_adjoint(self, QT, YbT):
        """d_bar (C, E, B, S) from the chunk's rows QT and YbT (C, M, k, S)."""
        C, M, k, S = YbT.shape
        off, H = self.off, self.H
        d_bar = torch.linalg.vecdot(YbT.view(C, M, k, self.blocks, H), QT[..., off:off + H].unsqueeze(-2), dim=2)
        return d_bar.reshape(C, self.E, self.B, S)


class DenseTangent(_Tangent):
    """J's columns on the h part, J_h (T, M, S, H), of every step, stored (see the module docstring)."""

    views = (0, 2, 4, 5)

    def __init__(self, kernel, coefs, T: int, k: int, QTs: torch.Tensor):
        super().__init__(kernel, coefs, T, k, QTs)
        M, S, H = self.M, self.S, self.H
        self.J = take_buffer((T, M, S, H), QTs.dtype, QTs.device)
        chunk = self.chunk_steps(M * S * H * self.elem)
        for t0 in range(0, T, chunk):
            t1 = min(T, t0 + chunk)
            kernel.build_columns(coefs, t0, t1, self.J[t0:t1].view(t1 - t0, self.E, self.B, S, H))
        self.Jv, self.JTv = self.J.unbind(0), self.J.mT.unbind(0)

    def buffers(self) -> list:
        return [self.J]

    def push(self, t: int, out=None):
        """``Y^T = Q^T J_t^T`` for the rows QTs[t] -> (M, k, S), into QTs[t + 1] if ``out`` is given (it is
        QTs[t + 1])."""
        Y = torch.bmm(self.Qh[t], self.JTv[t], out=None if out is None else self.QTv[t + 1])
        if self.off:  # the diagonal on c
            Y.view(self.M, self.k, self.blocks, self.H).addcmul_(self.Qoff[t], self.dv[t])
        return Y

    def back(self, t: int, src, dst=None, slot: int = 0):
        """``Q_bar^T = Y_bar^T J_t`` from slot views of the rows (``slot_views``) into dst's (a new tensor if None)."""
        if dst is None:
            dst = self.slot_views(torch.empty_like(src[0]).unsqueeze(0))[0]
        torch.bmm(src[0], self.Jv[t], out=dst[4])
        if self.off:
            self.diag_back(t, src[2], dst[5])
        return dst[0]

    def state_back(self, t: int, src, g, dst):
        """``s_bar^T J_t + g^T`` on rows: slot views (``slot_views``) of (M, 1, S) -> dst."""
        torch.baddbmm(g[4], src[0], self.Jv[t], out=dst[4])
        if self.off:
            self.diag_back(t, src[2], dst[5], g[5])

    def backward_chunk(self) -> int:
        return self.chunk_steps(self.M * self.S * max(self.H, self.k) * self.elem)

    def adjoint(self, QT, YbT, t0: int, t1: int, W_bar):
        """The coefficients' adjoints (n_coefs tensors (C, E, B, H)) of steps [t0, t1) from the rows QT and YbT
        (C, M, k, S); adds the explicit W's gradient to W_bar (E, G H, H). The cell contracts J_bar itself where it
        has a cheaper way (``dense_adjoint``), else rho and d_bar (module docstring) are formed here."""
        C, M, k, S = YbT.shape
        E, B, H, G, blocks = self.E, self.B, self.H, self.G, self.blocks
        JT_bar = torch.bmm(QT[..., :H].reshape(C * M, k, H).mT, YbT.reshape(C * M, k, S))
        JT_bar = JT_bar.view(C, E, B, H, blocks, H)  # [j, s, i]: the adjoint of J[s H + i, j]
        d_bar = self.diag_adjoint(QT, YbT)
        if hasattr(self.kernel, "dense_adjoint"):
            J = self.J[t0:t1].view(C, E, B, S, H)
            return self.kernel.dense_adjoint(JT_bar, d_bar, self.coefs, t0, t1, J, W_bar)
        K = self.K[t0:t1].view(C, E, B, G, blocks, H)
        rho = torch.empty(C, E, B, G, blocks, H, **self.kw)
        tmp = torch.empty_like(JT_bar)
        WT = self.kernel.Wg.mT.unsqueeze(1).unsqueeze(-2)  # (E, 1, G, H_j, 1, H_i)
        WbT = torch.empty(E, H, blocks, H, **self.kw)
        for x in range(G):
            torch.sum(torch.mul(JT_bar, WT[:, :, x], out=tmp), -3, out=rho[..., x, :, :])
            torch.sum(torch.mul(JT_bar, K[..., x, :, :].unsqueeze(-3), out=tmp), (0, 2), out=WbT)
            W_bar[:, x * H:(x + 1) * H] += WbT.sum(2).mT
        return self.kernel.coef_bar_of(rho.view(C, E, B, G, S), d_bar, self.coefs, t0, t1)


class FactoredTangent(_Tangent):
    """``P^T = Q_h^T W^T`` of every step, stored; a matmul and two weighted sums per step (see the module
    docstring)."""

    views = (0, 1, 2, 3, 5)

    def __init__(self, kernel, coefs, T: int, k: int, QTs: torch.Tensor):
        super().__init__(kernel, coefs, T, k, QTs)
        E, B, M, G, H, blocks = self.E, self.B, self.M, self.G, self.H, self.blocks
        self.PTs = take_buffer((T, M, k, G * H), QTs.dtype, QTs.device)  # (W Q_h)^T of every step
        self.P3 = self.PTs.view(T, E, B * k, G * H).unbind(0)  # the matmul's output
        self.P5 = self.PTs.view(T, M, k, G, 1, H).unbind(0)  # for the weighted sum over the gates
        self.Kv = self.K.view(T, M, 1, G, blocks, H).unbind(0)  # per step (M, 1, G, blocks, H)
        # per row block s and step: K (M, 1, G, H), for the backward's weighted sums (a mul and an addcmul cost less
        # than one vecdot at these sizes)
        self.Ks = [self.K.view(T, M, 1, G, blocks, H)[..., s, :].unbind(0) for s in range(blocks)]
        self.Qh3 = QTs[..., :H].reshape(T + 1, E, B * k, H).unbind(0)  # rows of Q_h, per network
        self.WT, self.W = kernel.W.mT, kernel.W  # (E, H, G H), (E, G H, H)
        self.Pb = None  # (chunk, M, k, G H): P_bar of a chunk's steps, set by the backward
        self.Pb_views = None

    def buffers(self) -> list:
        return [self.PTs]

    def push(self, t: int, out=None):
        """``Y = sum_x K_x P_x + d q_off`` for the rows QTs[t] -> (M, k, S), into QTs[t + 1] if ``out`` is given (it
        is QTs[t + 1])."""
        torch.bmm(self.Qh3[t], self.WT, out=self.P3[t])
        Y = torch.linalg.vecdot(self.P5[t], self.Kv[t], dim=2, out=None if out is None else self.Y4[t + 1])
        Y.addcmul_(self.Qoff[t], self.dv[t])  # (M, k, blocks, H)
        return Y.view(self.M, self.k, self.S)

    def back(self, t: int, src, dst=None, slot: int = 0):
        """``Q_bar^T = Y_bar^T J_t`` from slot views of the rows (``slot_views``) into dst's (a new tensor if None);
        P_bar goes to the chunk slot ``slot``."""
        if dst is None:
            dst = self.slot_views(torch.empty_like(src[0]).unsqueeze(0))[0]
        Pb3, Pb4 = self.Pb_views[slot]
        self._back(t, src, dst, Pb3, Pb4)
        return dst[0]

    def _back(self, t: int, src, dst, Pb3, Pb4, g=None):
        """``J_t^T`` applied to rows (+ g): P_bar = sum over row blocks of K Y_bar, h part ``P_bar W`` (+ g's),
        diagonal part ``sum_blocks d Y_bar`` on the coordinates from ``off``."""
        Yk, Ks = src[1], self.Ks
        torch.mul(Yk[0], Ks[0][t], out=Pb4)  # (M, n, G, H)
        for s in range(1, self.blocks):
            Pb4.addcmul_(Yk[s], Ks[s][t])
        if g is None:
            torch.bmm(Pb3, self.W, out=dst[3])
        else:
            torch.baddbmm(g[3], Pb3, self.W, out=dst[3])
        if self.off:
            self.diag_back(t, src[2], dst[5], None if g is None else g[5])
        else:  # the diagonal acts on h itself: add to the W part
            dst[5].addcmul_(src[2][0], self.ds[0][t])

    def state_back(self, t: int, src, g, dst):
        """``s_bar^T J_t + g^T`` on rows: slot views (``slot_views``) of (M, 1, S) -> dst."""
        self._back(t, src, dst, self.Ps3, self.Ps4, g)

    def backward_chunk(self) -> int:
        # arrays of k rows per step, none of size S x H: chunks 4x the dense map's (T = 64 at the training loop's
        # sizes is one chunk; each costs ~20 operations)
        C = self.chunk_steps(self.M * self.k * (self.S + 2 * self.G * self.H) * self.elem // 4)
        M, k, G, H, E, B = self.M, self.k, self.G, self.H, self.E, self.B
        self.Pb = torch.empty(C, M, k, G * H, **self.kw)
        self.Pb_views = list(zip(self.Pb.view(C, E, B * k, G * H).unbind(0), self.Pb.view(C, M, k, G, H).unbind(0)))
        Ps = torch.empty(M, 1, G * H, **self.kw)  # the state row's P_bar
        self.Ps3, self.Ps4 = Ps.view(E, B, G * H), Ps.view(M, 1, G, H)
        return C

    def adjoint(self, QT, YbT, t0: int, t1: int, W_bar):
        """The coefficients' adjoints (n_coefs tensors (C, E, B, H)) of steps [t0, t1) from the rows QT and YbT
        (C, M, k, S) and the chunk's P_bar (``back``); adds the explicit W's gradient to W_bar (E, G H, H)."""
        C, M, k, S = YbT.shape
        E, B, H, G, blocks = self.E, self.B, self.H, self.G, self.blocks
        PT = self.PTs[t0:t1].view(C, M, k, G, H)
        Yb = YbT.view(C, M, k, blocks, H)
        rho = torch.empty(C, M, G, blocks, H, **self.kw)
        tmp = torch.empty(C, M, k, G, H, **self.kw)
        for s in range(blocks):  # rho_x[s H + i] = sum_k P_x Y_bar_s
            torch.sum(torch.mul(PT, Yb[:, :, :, s:s + 1], out=tmp), 2, out=rho[..., s, :])
        W_bar += per_network_gram(self.Pb[:C].view(C, E, B * k, G * H), QT[..., :H].reshape(C, E, B * k, H))
        return self.kernel.coef_bar_of(rho.view(C, E, B, G, S), self.diag_adjoint(QT, YbT), self.coefs, t0, t1)
