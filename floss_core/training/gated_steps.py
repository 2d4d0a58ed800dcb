"""The per-step kernels of the hand-written LSTM and GRU BPTT (``training.gated_bptt``): folded weights, the forward
of a stretch of steps, and its backward with the weight gradients. Shapes: E networks (of one sub-batch), L steps of
the stretch, B trajectories, H units, I inputs, O outputs, K = H + I + 1.

Both cells keep a buffer ``Hs`` (E, L + 1, B, K) whose row l is ``[h_{t0+l-1}, s_{t0+l}, 1]``: the state entering
step t0 + l next to that step's inputs, so that every step's pre-activations are one batched matmul with the
stacked weights ``[W; U; b]`` and every weight gradient is a matmul over many steps, ``A^T Hs`` (A: the adjoints of
the pre-activations). Row L holds the last state. tanh is computed as ``2 sigmoid(2x) - 1`` with the factor 2 folded
into the weights (exact: powers of two). The backward of a step is one matmul and a few elementwise products with
what the forward stored (read only: a graph may be back-propagated twice); it writes the adjoints into a ring of C
steps (``_chunks``: C B ~ 512 rows), which stays in cache, and the weight gradients are one matmul per ring.

Elementwise operations on these per-step slices cost a few microseconds each (measured on a 2-core CPU at E = 16,
B = 16, H = 80), about a third of a step beside its matmul, so the loops hold few of them; the work is best done per
step on data still in cache: forming the local derivatives for chunks of steps instead (fewer calls, but the chunks'
data come from beyond L2) was 17% slower for the LSTM.
"""
from __future__ import annotations

import torch

__all__ = ["LSTMSteps", "GRUSteps"]


def _const(value, like):
    """A 0-dim tensor on like's device and dtype (``torch.add(c, x, alpha=a)`` is one pass for c + a x)."""
    return torch.full((), value, dtype=like.dtype, device=like.device)


_CHUNK_ROWS = 512  # rows (steps x trajectories) of the weight gradients' matmul per ring of adjoints


def _chunks(L, B):
    """Ring length C and the chunks [(t0, t1)] of a stretch of L steps, last first."""
    C = max(1, min(L, -(-_CHUNK_ROWS // B)))
    return C, [(t0, min(t0 + C, L)) for t0 in range(0, L, C)][::-1]


def _stacked(W, U, b):
    """[W, U, b] (E, R, K) -> its transpose (E, K, R): the weight of ``[h, s, 1] @ .``."""
    return torch.cat([W, U, b[..., None]], -1).mT.contiguous()


class LSTMSteps:
    """The LSTM of ``floss_core.cells.gated`` with the cell state kept doubled, ``c2 = 2c``, and the g rows of W, U, b
    doubled (``a'``: the folded pre-activations, gates q = sigmoid(a') = [i, f, q_g, o], g = 2 q_g - 1):

        c2_t = f c2_{t-1} + i (4 q_g - 2),   k_t = tanh(c_t) = 2 sigmoid(c2_t) - 1,   h_t = o k_t.

    With gradients the forward turns each step's gates, while in cache, into the local derivatives
    R = q (1 - q) [2g, c2_{t-1}, 4i, k] (stored in P (L, E, B, 4H)) and stores [o (1 - k^2), f] in QF (L + 1, E, B,
    2H; the last row unused); without, P keeps the gates. The backward, with dc2 the adjoint of c2,

        dh_t = a'_{t+1} W' + G_t V,   dc2_t = dc2_{t+1} f_{t+1} + dh_t o (1 - k^2) / 2,
        a'_t = [dc2_t R_i, dc2_t R_f, dc2_t R_g, dh_t R_o].
    """

    n_gates = 4

    def __init__(self, W, U, b, V, c):
        E, GH, H = W.shape
        self.H, self.I = H, U.shape[-1]
        scale = W.new_ones(4, H)
        scale[2] = 2  # the g gate: tanh(a) = 2 sigmoid(2a) - 1
        self.scale = scale.view(4 * H)
        Wf, Uf, bf = W * self.scale[:, None], U * self.scale[:, None], b * self.scale
        self.Wx = _stacked(Wf, Uf, bf)  # (E, K, 4H)
        self.Wb, self.Uf, self.V = Wf, Uf, V  # (E, 4H, H), (E, 4H, I)
        self.Vr, self.cr = V, c  # logits z = Vr h + cr

    @staticmethod
    def widths(H):
        """Widths of the per-step buffers at H units: P (the local derivatives) and QF (rows of L + 1)."""
        return 4 * H, 2 * H

    def pack_state(self, h0):
        """(E, B, 2H) [h, c] -> (h, c2)."""
        H = self.H
        return h0[..., :H], 2 * h0[..., H:]

    def state_grad(self, carry):
        """The gradient on h0 [h, c] (E, B, 2H) from the carry out of the first step."""
        dh, dc2 = carry
        return torch.cat([dh, 2 * dc2], -1)

    def initial_carry(self, like, E, B):
        """The carry into the last step: nothing from later steps."""
        return None, like.new_zeros(E, B, self.H)

    def readout_grads(self, gV, gc):
        """(V_bar, c_bar) from sum G^T h (E, O, H) and sum G (E, O)."""
        return gV, gc

    def forward(self, state, Hs, P, QF, grad: bool = True):
        """Steps from ``state`` over the inputs in Hs[:, :L, :, H:]: fills Hs's h part and P (with ``grad`` the local
        derivatives, and QF; else the gates). Returns the state after the last step."""
        h, c2 = state
        E, L1, B, K = Hs.shape
        H, L = self.H, L1 - 1
        Hs[:, 0, :, :H] = h
        M = Hs.new_empty(2, E, B, 4, H)  # [2g, c2_{t-1}, 4i, k] of the step, and the next step's c2_{t-1}
        M[0, :, :, 1] = c2
        Ms = [M[j].unbind(2) for j in range(2)]
        Mf = [M[j].view(E, B, 4 * H) for j in range(2)]
        a = Hs.new_empty(E, B, 4 * H)
        gi, gf, gg, go = (g.unbind(0) for g in P.view(L, E, B, 4, H).unbind(3))
        Pv, Hv, Hx = P.unbind(0), Hs[..., :H].unbind(1), Hs.unbind(1)
        if grad:
            Qv, Fv = QF[..., :H].unbind(0), QF[..., H:].unbind(0)
        minus2, minus1, four = _const(-2.0, h), _const(-1.0, h), _const(4.0, h)
        bmm, sigmoid, add, mul, addcmul = torch.bmm, torch.sigmoid, torch.add, torch.mul, torch.addcmul
        for t in range(L):
            cur, nxt = Ms[t % 2], Ms[(t + 1) % 2]
            sigmoid(bmm(Hx[t], self.Wx, out=a), out=Pv[t])  # q = sigmoid(a'), a' = [h, s, 1] Wx
            add(minus2, gg[t], alpha=4, out=cur[0])  # 2g
            mul(gf[t], cur[1], out=nxt[1]).addcmul_(gi[t], cur[0])  # c2_t = f c2_{t-1} + i 2g
            add(minus1, sigmoid(nxt[1], out=cur[3]), alpha=2, out=cur[3])  # k = tanh(c_t)
            mul(go[t], cur[3], out=Hv[t + 1])  # h_t = o k
            if grad:
                mul(gi[t], four, out=cur[2])
                addcmul(go[t], Hv[t + 1], cur[3], value=-1, out=Qv[t])  # o (1 - k^2) = o - h k
                Fv[t].copy_(gf[t])
                Pv[t].addcmul_(Pv[t], Pv[t], value=-1).mul_(Mf[t % 2])  # R = q (1 - q) [2g, c2_{t-1}, 4i, k]
        return Hs[:, L, :, :H], Ms[L % 2][1]

    def backward(self, Hs, P, QF, G, carry, grads, need_x):
        """The backward of a stretch: G (E, L, B, O) the gradient on its logits, carry = (the gradient on its last
        state from later steps' pre-activations (E, B, H) or None, dc2 (E, B, H)). Adds the weight gradients into
        grads["Wx"] (E, 4H, K) (None: not needed). Returns the carry out of its first step and, with ``need_x``, the
        inputs' gradient (E, L, B, I)."""
        dh_in, dc2 = carry
        L, E, B, _ = P.shape
        H, K = self.H, Hs.shape[-1]
        C, chunks = _chunks(L, B)
        ring = P.new_empty(E, C, B, 4 * H)  # the adjoints a' of up to C steps
        Av, ifg, ao = ring.unbind(1), ring.view(E, C, B, 4, H)[:, :, :, :3].unbind(1), ring[..., 3 * H:].unbind(1)
        Rifg, Ro = P.view(L, E, B, 4, H)[:, :, :, :3].unbind(0), P[..., 3 * H:].unbind(0)
        Qv, Fv = QF[..., :H].unbind(0), QF[..., H:].unbind(0)
        GV = P.new_empty(E, C, B, H)  # G_t V of the chunk's steps
        GVv = GV.unbind(1)
        dh = P.new_empty(E, B, H)
        dc2 = dc2.clone()
        dc2_ = dc2[:, :, None]
        mul = torch.mul
        x_bars, last = [], None  # last: the row holding a'_{t+1}
        for c0, c1 in chunks:
            n = c1 - c0
            torch.bmm(G[:, c0:c1].reshape(E, n * B, -1), self.V, out=GV[:, :n].view(E, n * B, H))
            for t in range(c1 - 1, c0 - 1, -1):
                r = t - c0
                if last is not None:
                    torch.baddbmm(GVv[r], last, self.Wb, out=dh)  # G_t V + a'_{t+1} W'
                elif dh_in is None:
                    dh.copy_(GVv[r])
                else:
                    torch.add(dh_in, GVv[r], out=dh)
                dc2.addcmul_(dh, Qv[t], value=0.5)
                mul(Rifg[t], dc2_, out=ifg[r])
                mul(Ro[t], dh, out=ao[r])
                dc2.mul_(Fv[t])
                last = Av[r]
            A = ring[:, :c1 - c0].reshape(E, (c1 - c0) * B, 4 * H)
            if grads is not None:
                grads["Wx"].baddbmm_(A.mT, Hs[:, c0:c1].reshape(E, (c1 - c0) * B, K))
            if need_x:
                x_bars.append(torch.bmm(A, self.Uf).view(E, c1 - c0, B, -1))
        x_bar = torch.cat(x_bars[::-1], 1) if need_x else None
        return (torch.bmm(last, self.Wb), dc2), x_bar

    def new_grads(self, like, E):
        return {"Wx": like.new_zeros(E, 4 * self.H, self.H + self.I + 1)}

    def finish(self, grads):
        """(W_bar, U_bar, b_bar, b_h_bar) from the accumulated sums (b_h_bar None: the LSTM has none)."""
        g = grads["Wx"] * self.scale[:, None]
        H, I = self.H, self.I
        return g[..., :H], g[..., H:H + I], g[..., H + I], None


class GRUSteps:
    """The GRU of ``floss_core.cells.gated`` with the n rows of W, U, b, b_h doubled (n = 2 sigmoid(pre') - 1 with
    pre' = u'_n + r m'_n = 2 (u_n + r m_n)). Per step one matmul ``[h, s, 1] Wx`` gives [a_r, a_z, m'_n] (a: input
    and recurrent parts with both biases; m'_n the recurrent n part with its bias), u'_n comes from one matmul per
    stretch (buffer Un), and R (L, E, B, 5H) receives [R_r, r, z, R_z, R_n] with the local derivatives

        R_r = m'_n r (1 - r),   R_z = (h - n) z (1 - z),   R_n = sn (1 - sn) (1 - z)   (sn = sigmoid(pre')).

    The backward forms [rho, q, a_z, p] = [p R_r, p r, dh R_z, dh R_n]: the adjoints of a_r, m'_n, a_z, pre' up to
    exact factors (2, 2, 1, 2), so that the previous state's gradient is ``[rho, q, a_z] [2W_r; 4W_n; W_z] + dh z``.
    """

    n_gates = 3

    def __init__(self, W, U, b, b_h, V, c):
        E, GH, H = W.shape
        self.H, self.I = H, U.shape[-1]
        Wr, Wz, Wn = W.split(H, 1)
        Ur, Uz, Un = U.split(H, 1)
        br, bz, bn = b.split(H, 1)
        hr, hz, hn = b_h.split(H, 1)
        zeros = U.new_zeros(E, H, self.I)
        self.Wx = _stacked(torch.cat([Wr, Wz, 2 * Wn], 1), torch.cat([Ur, Uz, zeros], 1),
                           torch.cat([br + hr, bz + hz, 2 * hn], 1))  # (E, K, 3H): [a_r, a_z, m'_n]
        self.Dn = torch.cat([2 * Un.mT, 2 * bn[:, None]], 1)  # (E, I + 1, H): u'_n = [s, 1] Dn
        self.Wb = torch.cat([2 * Wr, 4 * Wn, Wz], 1)  # (E, 3H, H)
        self.Ux = torch.cat([2 * Ur, zeros, Uz, 4 * Un], 1)  # (E, 4H, I): inputs' gradient from [rho, q, a_z, p]
        self.V, self.Vr, self.cr = V, V, c  # logits z = Vr h + cr

    @staticmethod
    def widths(H):
        """Widths of the per-step buffers at H units: R, and none besides."""
        return 5 * H, 0

    def pack_state(self, h0):
        return (h0,)

    def state_grad(self, carry):
        return carry[0]

    def initial_carry(self, like, E, B):
        return (None,)

    def readout_grads(self, gV, gc):
        return gV, gc

    def forward(self, state, Hs, R, M, grad: bool):
        """Steps from ``state`` over the inputs in Hs[:, :L, :, H:]; fills Hs's h part and R (r, z, the rest only with
        ``grad``). Returns the state after the last step."""
        (h,) = state
        E, L1, B, K = Hs.shape
        H, L = self.H, L1 - 1
        Hs[:, 0, :, :H] = h
        Un = torch.bmm(Hs[:, :L, :, H:].reshape(E, L * B, K - H), self.Dn).view(E, L, B, H)  # u'_n of every step
        a = Hs.new_empty(E, B, 3 * H)
        arz, mn = a[..., :2 * H], a[..., 2 * H:]  # [a_r, a_z], m'_n
        n, hmn, D = Hs.new_empty(E, B, H), Hs.new_empty(E, B, H), Hs.new_empty(E, B, 2 * H)
        Dr, Dz = D[..., :H], D[..., H:]
        rz = R[..., H:3 * H].unbind(0)
        Rr, r, z, Rz, sn = (s.unbind(0) for s in R.view(L, E, B, 5, H).unbind(3))  # sn: then R_n
        Hv, Hx, Uv = Hs[..., :H].unbind(1), Hs.unbind(1), Un.unbind(1)
        m1 = _const(-1.0, h)
        sigmoid, addcmul, mul = torch.sigmoid, torch.addcmul, torch.mul
        for t in range(L):
            torch.bmm(Hx[t], self.Wx, out=a)
            sigmoid(arz, out=rz[t])  # [r, z]
            sigmoid(addcmul(Uv[t], r[t], mn, out=sn[t]), out=sn[t])  # sn = sigmoid(u'_n + r m'_n)
            torch.add(m1, sn[t], alpha=2, out=n)
            torch.sub(Hv[t], n, out=hmn)
            addcmul(n, z[t], hmn, out=Hv[t + 1])  # h_t = n + z (h_{t-1} - n)
            if grad:
                sn[t].addcmul_(sn[t], sn[t], value=-1).addcmul_(z[t], sn[t], value=-1)  # R_n = sn (1 - sn) (1 - z)
                addcmul(rz[t], rz[t], rz[t], value=-1, out=D)  # [r (1 - r), z (1 - z)]
                mul(Dr, mn, out=Rr[t])
                mul(Dz, hmn, out=Rz[t])
        return (Hs[:, L, :, :H],)

    def backward(self, Hs, R, M, G, carry, grads, need_x):
        """The backward of a stretch: carry = (the gradient on its last state from later steps (E, B, H) or None,).
        Adds the weight gradients into grads (None: not needed). Returns the carry out of its first step and, with
        ``need_x``, the inputs' gradient (E, L, B, I)."""
        (dh_in,) = carry
        L, E, B, _ = R.shape
        H, K = self.H, Hs.shape[-1]
        C, chunks = _chunks(L, B)
        ring = R.new_empty(E, C, B, 4 * H)  # [rho, q, a_z, p] of up to C steps
        rv = ring.view(E, C, B, 4, H)
        zp, rq = rv[:, :, :, 2:4].unbind(1), rv[:, :, :, 0:2].unbind(1)  # (E, B, 2, H) per row
        p, A3 = ring[..., None, 3 * H:].unbind(1), ring[..., :3 * H].unbind(1)  # (E, B, 1, H), (E, B, 3H)
        Rv = R.view(L, E, B, 5, H)
        RzRn, Rrr, z = Rv[:, :, :, 3:5].unbind(0), Rv[:, :, :, 0:2].unbind(0), Rv[:, :, :, 2].unbind(0)
        GV = R.new_empty(E, C, B, H)  # G_t V of the chunk's steps
        GVv = GV.unbind(1)
        dh, nxt, Y = R.new_empty(E, B, H), R.new_empty(E, B, H), R.new_empty(E, B, H)
        mul = torch.mul
        x_bars = []
        for c0, c1 in chunks:
            n = c1 - c0
            torch.bmm(G[:, c0:c1].reshape(E, n * B, -1), self.V, out=GV[:, :n].view(E, n * B, H))
            for t in range(c1 - 1, c0 - 1, -1):
                r = t - c0
                if t == c1 - 1:  # the chunk's last step: the carry from later steps, and G_t V
                    if dh_in is None:
                        dh.copy_(GVv[r])
                    else:
                        torch.add(dh_in, GVv[r], out=dh)
                mul(RzRn[t], dh[:, :, None], out=zp[r])  # [a_z, p] = dh [R_z, R_n]
                mul(Rrr[t], p[r], out=rq[r])  # [rho, q] = p [R_r, r]
                if t > c0:  # dh_{t-1} = [rho, q, a_z] Wb + dh z + G_{t-1} V
                    torch.baddbmm(torch.addcmul(GVv[r - 1], dh, z[t], out=Y), A3[r], self.Wb, out=nxt)
                else:  # onto the state before the chunk (its G V is added by the next chunk)
                    dh_in = torch.baddbmm(torch.mul(dh, z[t], out=Y), A3[r], self.Wb)
                dh, nxt = nxt, dh
            A, H2 = ring[:, :n].reshape(E, n * B, 4 * H), Hs[:, c0:c1].reshape(E, n * B, K)
            if grads is not None:
                grads["Wx"].baddbmm_(A[..., :3 * H].mT, H2)  # [rho, q, a_z]^T [h, s, 1]
                grads["Un"].baddbmm_(H2[..., H:].mT, A[..., 3 * H:])  # [s, 1]^T p
            if need_x:
                x_bars.append(torch.bmm(A, self.Ux).view(E, n, B, -1))
        x_bar = torch.cat(x_bars[::-1], 1) if need_x else None
        return (dh_in,), x_bar

    def new_grads(self, like, E):
        H, I = self.H, self.I
        return {"Wx": like.new_zeros(E, 3 * H, H + I + 1), "Un": like.new_zeros(E, I + 1, H)}

    def finish(self, grads):
        H, I = self.H, self.I
        gr, gq, gz = grads["Wx"].split(H, 1)  # rows rho, q, a_z: (E, H, K) each
        gn = 4 * grads["Un"]  # (E, I + 1, H)
        W_bar = torch.cat([2 * gr[..., :H], gz[..., :H], 4 * gq[..., :H]], 1)
        U_bar = torch.cat([2 * gr[..., H:H + I], gz[..., H:H + I], gn[:, :I].mT], 1)
        b_r, b_z = 2 * gr[..., -1], gz[..., -1]
        b_bar = torch.cat([b_r, b_z, gn[:, I]], 1)
        b_h_bar = torch.cat([b_r, b_z, 4 * gq[..., -1]], 1)
        return W_bar, U_bar, b_bar, b_h_bar
