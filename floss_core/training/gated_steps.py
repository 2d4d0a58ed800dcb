"""The per-step kernels of the hand-written LSTM and GRU BPTT (``training.gated_bptt``): folded weights, the forward
of a stretch of steps (which also stores each step's local derivatives), the backward of a stretch, and the weight
gradients from the stored buffers. Shapes: E networks (of one sub-batch), L steps of the stretch, B trajectories,
H units, I inputs, O outputs, K = H + I + 1.

Both cells keep a buffer ``Hs`` (E, L + 1, B, K) whose row l is ``[h_{t0+l-1}, s_{t0+l}, 1]``: the state entering
step t0 + l next to that step's inputs, so that every step's pre-activations are one batched matmul with the
stacked weights ``[W; U; b]`` and every weight gradient is one matmul over all steps, ``A^T Hs`` (A: the adjoints of
the pre-activations). Row L holds the last state. tanh is computed as ``2 sigmoid(2x) - 1`` with the factor 2 folded
into the weights (exact: powers of two), and the buffer of gate values is overwritten in place, first by the local
derivatives the backward multiplies with, then by the adjoints, so that the backward of a step is one matmul and a
few elementwise products.
"""
from __future__ import annotations

import torch

__all__ = ["LSTMSteps", "GRUSteps"]


def _const(value, like):
    """A 0-dim tensor on like's device and dtype (``torch.add(c, x, alpha=a)`` is one pass for c + a x)."""
    return torch.full((), value, dtype=like.dtype, device=like.device)


def _stacked(W, U, b):
    """[W, U, b] (E, R, K) -> its transpose (E, K, R): the weight of ``[h, s, 1] @ .``."""
    return torch.cat([W, U, b[..., None]], -1).mT.contiguous()


class LSTMSteps:
    """The LSTM of ``floss_core.cells.gated`` with the cell state kept doubled, ``c2 = 2c``, and the g rows of W, U, b
    doubled (``a'``: the folded pre-activations, gates q = sigmoid(a') = [i, f, q_g, o], g = 2 q_g - 1):

        c2_t = f c2_{t-1} + i (4 q_g - 2),   k_t = tanh(c_t) = 2 sigmoid(c2_t) - 1,   h_t = o k_t.

    Per step the forward stores in P (E, L, B, 4H) the local derivatives R = q (1 - q) [2g, c2_{t-1}, 4i, k] and in
    QF (E, L, B, 2H) the pair [o (1 - k^2), f]; the backward, with dc2 the adjoint of c2,

        dh_t = a'_{t+1} W' + G_t V,   dc2_t = dc2_{t+1} f_{t+1} + dh_t o (1 - k^2) / 2,
        a'_t = [dc2_t R_i, dc2_t R_f, dc2_t R_g, dh_t R_o]   (written over R in P).
    """

    n_gates = 4
    state_parts = 2  # (h, c)

    def __init__(self, W, U, b, V, c):
        E, GH, H = W.shape
        self.H, self.I = H, U.shape[-1]
        scale = W.new_ones(4, H)
        scale[2] = 2  # the g gate: tanh(a) = 2 sigmoid(2a) - 1
        self.scale = scale.view(4 * H)
        Wf, Uf, bf = W * self.scale[:, None], U * self.scale[:, None], b * self.scale
        self.Wx = _stacked(Wf, Uf, bf)  # (E, K, 4H)
        self.Wb, self.Uf, self.V, self.c = Wf, Uf, V, c  # (E, 4H, H), (E, 4H, I)

    @staticmethod
    def widths(H):
        """Widths of the per-step buffers at H units: the gates/adjoints P, and QF (the backward's extra factors)."""
        return 4 * H, 2 * H

    def pack_state(self, h0):
        """(E, B, 2H) [h, c] -> (h, c2)."""
        H = self.H
        return h0[..., :H], 2 * h0[..., H:]

    def state_grad(self, carry):
        """The gradient on h0 [h, c] (E, B, 2H) from the carry out of the first step."""
        dh, dc2 = carry
        return torch.cat([dh, 2 * dc2], -1)

    def forward(self, state, Hs, P, QF, grad: bool):
        """Steps from ``state`` over the inputs in Hs[:, :L, :, H:]; fills Hs's h part and P (gate values, or with
        ``grad`` the local derivatives, and QF). Returns the state after the last step."""
        h, c2 = state
        E, L1, B, K = Hs.shape
        H, L = self.H, L1 - 1
        Hs[:, 0, :, :H] = h
        M = Hs.new_empty(2, E, B, 4, H)  # [2g, c2_{t-1}, 4i, k] of the step, and the next step's c2_{t-1}
        M[0, :, :, 1] = c2
        Ms = [M[j].unbind(2) for j in range(2)]
        Mf = [M[j].view(E, B, 4 * H) for j in range(2)]
        tmp = Hs.new_empty(E, B, H)
        a = Hs.new_empty(E, B, 4 * H)
        gates = P.view(E, L, B, 4, H).unbind(3)  # i, f, q_g, o: (E, L, B, H) each
        gi, gf, gg, go = (g.unbind(1) for g in gates)
        Pv, Hv = P.unbind(1), Hs[..., :H].unbind(1)
        Hx = Hs.unbind(1)
        if grad:
            Qv, Fv = QF[..., :H].unbind(1), QF[..., H:].unbind(1)
        m2, m1, one = _const(-2.0, h), _const(-1.0, h), _const(1.0, h)
        bmm, sigmoid, add, mul = torch.bmm, torch.sigmoid, torch.add, torch.mul
        for t in range(L):
            cur, nxt = Ms[t % 2], Ms[(t + 1) % 2]
            sigmoid(bmm(Hx[t], self.Wx, out=a), out=Pv[t])  # q = sigmoid(a'), a' = [h, s, 1] Wx
            add(m2, gg[t], alpha=4, out=cur[0])  # 2g
            mul(gf[t], cur[1], out=nxt[1]).addcmul_(gi[t], cur[0])  # c2_t = f c2_{t-1} + i 2g
            add(m1, sigmoid(nxt[1], out=cur[3]), alpha=2, out=cur[3])  # k = tanh(c_t)
            mul(go[t], cur[3], out=Hv[t + 1])  # h_t = o k
            if grad:
                mul(gi[t], 4, out=cur[2])
                mul(go[t], torch.addcmul(one, cur[3], cur[3], value=-1, out=tmp), out=Qv[t])  # o (1 - k^2)
                Fv[t].copy_(gf[t])
                Pv[t].addcmul_(Pv[t], Pv[t], value=-1).mul_(Mf[t % 2])  # R = q (1 - q) [2g, c2_{t-1}, 4i, k]
        return Hs[:, L, :, :H], Ms[L % 2][1]

    def backward(self, P, QF, G, carry):
        """Adjoints of a stretch, written over P; G (E, L, B, O) the gradient on its logits, carry = (the gradient on
        its last state from later steps' pre-activations (E, B, H) or None, dc2 (E, B, H)). Returns the carry out of
        its first step."""
        dh_in, dc2 = carry
        E, L, B, _ = P.shape
        H = self.H
        Pv = P.unbind(1)
        ifg = P.view(E, L, B, 4, H)[:, :, :, :3].unbind(1)  # (E, B, 3, H) per step
        go = P[..., 3 * H:].unbind(1)
        Qv, Fv, Gv = QF[..., :H].unbind(1), QF[..., H:].unbind(1), G.unbind(1)
        Vo = [self.V[:, None, o] for o in range(G.shape[-1])]  # (E, 1, H) per output
        dh = P.new_empty(E, B, H)
        dc2 = dc2.clone()
        dc2_ = dc2[:, :, None]
        for t in range(L - 1, -1, -1):
            if t < L - 1:
                torch.bmm(Pv[t + 1], self.Wb, out=dh)
            elif dh_in is None:
                dh.zero_()
            else:
                dh.copy_(dh_in)
            for o, v in enumerate(Vo):  # + G_t V
                dh.addcmul_(Gv[t][..., o:o + 1], v)
            dc2.addcmul_(dh, Qv[t], value=0.5)
            ifg[t].mul_(dc2_)
            go[t].mul_(dh)
            dc2.mul_(Fv[t])
        return torch.bmm(Pv[0], self.Wb), dc2

    def accumulate(self, grads, Hs, P, need_x):
        """Adds a stretch's weight gradients into grads["Wx"] (E, 4H, K); returns its inputs' gradient (E, L, B, I)
        when ``need_x``."""
        E, L, B, GH = P.shape
        A = P.view(E, L * B, GH)
        grads["Wx"].baddbmm_(A.mT, Hs[:, :L].reshape(E, L * B, -1))
        return torch.bmm(A, self.Uf).view(E, L, B, -1) if need_x else None

    def new_grads(self, like, E):
        return {"Wx": like.new_zeros(E, 4 * self.H, self.H + self.I + 1)}

    def finish(self, grads):
        """(W_bar, U_bar, b_bar, b_h_bar) from the accumulated sums (b_h_bar None: the LSTM has none)."""
        g = grads["Wx"] * self.scale[:, None]
        H, I = self.H, self.I
        return g[..., :H], g[..., H:H + I], g[..., H + I], None


class GRUSteps:
    """The GRU of ``floss_core.cells.gated`` with the n rows of W, U, b, b_h doubled (n = 2 sigmoid(pre') - 1 with
    pre' = u'_n + r m'_n = 2 (u_n + r m_n)). Per step one matmul ``[h, s, 1] Wx`` gives [a_r, m'_n, a_z] (a: input
    and recurrent parts with both biases; m'_n the recurrent n part with its bias), u'_n comes from one matmul per
    stretch (buffer Un), and R (E, L, B, 5H) receives [R_r, r, R_z, R_n, z] with the local derivatives

        R_r = m'_n r (1 - r),   R_z = (h - n) z (1 - z),   R_n = sn (1 - sn) (1 - z)   (sn = sigmoid(pre')).

    The backward writes, in place, [rho, q, a_z, p] = [p R_r, p r, dh R_z, dh R_n] over the first four: the adjoints
    of a_r, m'_n, a_z, pre' up to exact factors (2, 2, 1, 2), so that the previous state's gradient is
    ``[rho, q, a_z] [2W_r; 4W_n; W_z] + dh z``.
    """

    n_gates = 3
    state_parts = 1

    def __init__(self, W, U, b, b_h, V, c):
        E, GH, H = W.shape
        self.H, self.I = H, U.shape[-1]
        Wr, Wz, Wn = W.split(H, 1)
        Ur, Uz, Un = U.split(H, 1)
        br, bz, bn = b.split(H, 1)
        hr, hz, hn = b_h.split(H, 1)
        zeros = U.new_zeros(E, H, self.I)
        self.Wx = _stacked(torch.cat([Wr, 2 * Wn, Wz], 1), torch.cat([Ur, zeros, Uz], 1),
                           torch.cat([br + hr, 2 * hn, bz + hz], 1))  # (E, K, 3H): [a_r, m'_n, a_z]
        self.Dn = torch.cat([2 * Un.mT, 2 * bn[:, None]], 1)  # (E, I + 1, H): u'_n = [s, 1] Dn
        self.Wb = torch.cat([2 * Wr, 4 * Wn, Wz], 1)  # (E, 3H, H)
        self.Ux = torch.cat([2 * Ur, zeros, Uz, 4 * Un], 1)  # (E, 4H, I): inputs' gradient from [rho, q, a_z, p]
        self.V, self.c = V, c

    @staticmethod
    def widths(H):
        return 5 * H, 0

    def pack_state(self, h0):
        return (h0,)

    def state_grad(self, carry):
        return carry[0]

    def forward(self, state, Hs, R, QF, grad: bool):
        """Steps from ``state`` over the inputs in Hs[:, :L, :, H:]; fills Hs's h part and R (z, r, the rest only with
        ``grad``). Returns the state after the last step."""
        (h,) = state
        E, L1, B, K = Hs.shape
        H, L = self.H, L1 - 1
        Hs[:, 0, :, :H] = h
        Un = torch.bmm(Hs[:, :L, :, H:].reshape(E, L * B, K - H), self.Dn).view(E, L, B, H)  # u'_n of every step
        a = Hs.new_empty(E, B, 3 * H)
        ar, mn, az = a.view(E, B, 3, H).unbind(2)
        n, hmn = Hs.new_empty(E, B, H), Hs.new_empty(E, B, H)
        slots = [s.unbind(1) for s in R.view(E, L, B, 5, H).unbind(3)]  # R_r, r, R_z, R_n, z
        Hv, Hx, Uv = Hs[..., :H].unbind(1), Hs.unbind(1), Un.unbind(1)
        m1 = _const(-1.0, h)
        sigmoid, addcmul = torch.sigmoid, torch.addcmul
        for t in range(L):
            Rr, r, Rz, sn, z = (s[t] for s in slots)
            torch.bmm(Hx[t], self.Wx, out=a)
            sigmoid(ar, out=r)
            sigmoid(az, out=z)
            sigmoid(addcmul(Uv[t], r, mn, out=sn), out=sn)  # sn = sigmoid(u'_n + r m'_n)
            torch.add(m1, sn, alpha=2, out=n)
            torch.sub(Hv[t], n, out=hmn)
            addcmul(n, z, hmn, out=Hv[t + 1])  # h_t = n + z (h_{t-1} - n)
            if grad:
                sn.addcmul_(sn, sn, value=-1)
                sn.addcmul_(z, sn, value=-1)  # R_n = sn (1 - sn) (1 - z)
                addcmul(r, r, r, value=-1, out=Rr).mul_(mn)
                addcmul(z, z, z, value=-1, out=Rz).mul_(hmn)
        return (Hs[:, L, :, :H],)

    def backward(self, R, QF, G, carry):
        """Adjoints of a stretch, written over R; carry = (the gradient on its last state from later steps (E, B, H) or
        None,). Returns the carry out of its first step."""
        (dh_in,) = carry
        E, L, B, _ = R.shape
        H = self.H
        pairs = R.view(E, L, B, 5, H)
        zq = pairs[:, :, :, 2:4].unbind(1)  # [R_z, R_n] -> [a_z, p]
        rr = pairs[:, :, :, 0:2].unbind(1)  # [R_r, r] -> [rho, q]
        p = R[..., 3 * H:4 * H].unbind(1)
        z = R[..., 4 * H:].unbind(1)
        A = R[..., :3 * H].unbind(1)
        Gv = G.unbind(1)
        Vo = [self.V[:, None, o] for o in range(G.shape[-1])]
        dh, nxt = R.new_empty(E, B, H), R.new_empty(E, B, H)
        if dh_in is None:
            dh.zero_()
        else:
            dh.copy_(dh_in)
        for t in range(L - 1, -1, -1):
            for o, v in enumerate(Vo):  # + G_t V
                dh.addcmul_(Gv[t][..., o:o + 1], v)
            zq[t].mul_(dh[:, :, None])
            rr[t].mul_(p[t][:, :, None])
            torch.bmm(A[t], self.Wb, out=nxt).addcmul_(dh, z[t])  # onto h_{t-1}
            dh, nxt = nxt, dh
        return (dh,)

    def accumulate(self, grads, Hs, R, need_x):
        E, L, B, _ = R.shape
        H = self.H
        R2 = R.view(E, L * B, -1)
        H2 = Hs[:, :L].reshape(E, L * B, -1)
        grads["Wx"].baddbmm_(R2[..., :3 * H].mT, H2)  # [rho, q, a_z]^T [h, s, 1]
        grads["Un"].baddbmm_(H2[..., H:].mT, R2[..., 3 * H:4 * H])  # [s, 1]^T p
        return torch.bmm(R2[..., :4 * H], self.Ux).view(E, L, B, -1) if need_x else None

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
