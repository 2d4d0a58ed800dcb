"""The Jacobians of the LSTM and the GRU for the fast gated engine, as a few diagonal scalings of W, and their adjoints.

Shapes: E networks, B trajectories each (M = E B rows of the tangent batch), T steps, H units, S state entries,
k tangent vectors, G gates; the gates are stacked along the rows of W (E, G H, H) in torch's order. Coefficient
tensors are (T, E, B, H), one value per unit and step. Tangent vectors are rows (``spectrum.qr``): ``QT (M, k, S)``.

GRU (S = H; ``floss_core.cells.gated``):

    J = diag(z) + diag(c_r) W_r + diag(c_z) W_z + diag(c_n) W_n,
    c_z = (h - n) z (1 - z),   c_n = (1 - z)(1 - n^2) r,   c_r = c_n m_n (1 - r)

    stored as ``JT = J^T`` (T, M, H, H), so a tangent step is one matmul: ``Y^T = Q^T JT``.

LSTM (S = 2H, state [h, c]):

    J = [[J_hh, diag(beta f)], [J_ch, diag(f)]],   J_ch = diag(a_i) W_i + diag(a_f) W_f + diag(a_g) W_g,
    J_hh = diag(a_o) W_o + diag(beta) J_ch,        a_i = g i (1 - i),  a_f = c f (1 - f),  a_g = i (1 - g^2),
    a_o = tanh(c') o (1 - o),  beta = o (1 - tanh(c')^2)

    stored as the left block column ``JhT = [J_hh; J_ch]^T`` (T, M, H, 2H) and the diagonal ``D = [beta f, f]``
    (T, M, 2, H): ``Y^T = Q_h^T JhT + [Q_c^T D_top, Q_c^T D_bot]`` (one matmul with half the flops of the dense J).

Every coefficient is a function of the step's gate pre-activations and its entering state (``coefs``), so their
adjoints go back to the pre-activations by ``torch.func.vjp`` over all steps at once; the pre-activations are linear
in W, U, the biases, the entering h and the input (``param_grads``).
"""
from __future__ import annotations

import torch

__all__ = ["KERNELS", "LSTMKernel", "GRUKernel"]


class _Kernel:
    """What the engine needs of a cell, for one sub-batch of networks: W (E, G H, H), U (E, G H, I), b (E, G H),
    b_h (E, G H) or None (LSTM)."""

    n_gates = 0  # G
    state_factor = 1  # S = state_factor H
    n_coefs = 0  # coefficient tensors (T, E, B, H) per step

    def __init__(self, W, U, b, b_h, B: int):
        self.W, self.U, self.b, self.b_h, self.B = W, U, b, b_h, B
        self.E, self.H = W.shape[0], W.shape[-1]
        G, H = self.n_gates, self.H
        self.WT = W.reshape(self.E, G, H, H).mT.contiguous()  # (E, G, H_in, H_out): WT[:, x] = W_x^T

    @property
    def S(self) -> int:
        return self.state_factor * self.H

    def _rec(self, h_prev):
        """W h for every step: h_prev (T, E, B, H) -> (T, E, B, G H)."""
        return torch.einsum("tebh,egh->tebg", h_prev, self.W)

    def _inp(self, X):
        """U x for every step: X (E, B, T, I) -> (T, E, B, G H)."""
        return torch.einsum("ebti,egi->tebg", X, self.U)

    def _grads_of(self, rec_bar, inp_bar, h_prev, X, need, b_h_bar=None):
        """Gradients of (W, U, b, b_h, X) from the adjoints of the recurrent (W h) and input (U x + b) parts of the
        pre-activations, (T, E, B, G H) each: W's is only the part through the pre-activations."""
        W_bar = torch.einsum("tebg,tebh->egh", rec_bar, h_prev) if need[0] else None
        U_bar = torch.einsum("tebg,ebti->egi", inp_bar, X) if need[1] else None
        b_bar = inp_bar.sum((0, 2)) if need[2] else None
        X_bar = torch.einsum("tebg,egi->ebti", inp_bar, self.U) if need[5] else None
        return W_bar, U_bar, b_bar, b_h_bar, X_bar

    def state_of_rec(self, rec_bar):
        """The adjoint of the entering h from that of W h: (T, E, B, G H) -> (T, E, B, H)."""
        return torch.einsum("tebg,egh->tebh", rec_bar, self.W)


class GRUKernel(_Kernel):
    """The GRU: coefficients (c_r, c_z, c_n, z); pre-activations (u, m) = (U x + b, W h + b_h)."""

    n_gates, state_factor, n_coefs = 3, 1, 4

    def pre(self, S_prev, X):
        """(u, m), (T, E, B, 3H) each, for entering states S_prev (T, E, B, H) and inputs X (E, B, T, I)."""
        u = self._inp(X) + self.b[:, None]
        m = self._rec(S_prev) + self.b_h[:, None]
        return u, m

    @staticmethod
    def coefs(u, m, h):
        """(c_r, c_z, c_n, z), (T, E, B, H) each (see the module docstring)."""
        ur, uz, un = u.chunk(3, dim=-1)
        mr, mz, mn = m.chunk(3, dim=-1)
        r, z = torch.sigmoid(ur + mr), torch.sigmoid(uz + mz)
        n = torch.tanh(un + r * mn)
        cn = (1 - z) * (1 - n * n) * r
        return cn * mn * (1 - r), (h - n) * z * (1 - z), cn, z

    @staticmethod
    def next_state(u, m, h):
        """The step's new state from its pre-activations and entering state: (T, E, B, H)."""
        ur, uz, un = u.chunk(3, dim=-1)
        mr, mz, mn = m.chunk(3, dim=-1)
        r, z = torch.sigmoid(ur + mr), torch.sigmoid(uz + mz)
        n = torch.tanh(un + r * mn)
        return n + z * (h - n)

    def jacobians(self, coefs, t0: int, t1: int, J, D):
        """Write JT of steps [t0, t1) into J (T, M, H, H) (D unused: the GRU's diagonal is inside JT)."""
        cr, cz, cn, z = (c[t0:t1].unsqueeze(-2) for c in coefs)  # (C, E, B, 1, H)
        E, B, H = self.E, self.B, self.H
        out = J[t0:t1].view(t1 - t0, E, B, H, H)
        WT = self.WT.unsqueeze(1)  # (E, 1, G, H, H)
        torch.mul(WT[:, :, 0], cr, out=out)
        out.addcmul_(WT[:, :, 1], cz)
        out.addcmul_(WT[:, :, 2], cn)
        out.diagonal(dim1=-2, dim2=-1).add_(z.squeeze(-2))

    @staticmethod
    def push(QT, JT, D, out=None):
        """Y^T = Q^T JT: QT (M, k, H) -> (M, k, H)."""
        return torch.bmm(QT, JT, out=out)

    @staticmethod
    def tangent_back(YbT, JT, D, out=None):
        """Q_bar^T = Y_bar^T JT^T: (M, k, H) -> (M, k, H)."""
        return torch.bmm(YbT, JT.mT, out=out)

    @staticmethod
    def state_back(s_bar, JT, D, g, out):
        """The state adjoint one step back: ``J^T s_bar + g``, s_bar and g (M, H, 1) -> out (M, H, 1)."""
        torch.baddbmm(g, JT, s_bar, out=out)

    def jacobian_adjoint(self, QT, YbT, JT, D, coefs, t0: int, t1: int, coef_bar, W_bar):
        """From the rows of the bases QT and adjoints YbT (C, M, k, H) of steps [t0, t1): the coefficients' adjoints
        into coef_bar (4, T, E, B, H) and the explicit W's into W_bar (E, 3H, H) (added)."""
        C, M, k, H = YbT.shape
        E, B = self.E, self.B
        JT_bar = torch.bmm(QT.reshape(C * M, k, H).mT, YbT.reshape(C * M, k, H)).view(C, E, B, H, H)
        rho = torch.einsum("cebji,exji->xcebi", JT_bar, self.WT)  # (3, C, E, B, H): sum_j J_bar[i, j] W_x[i, j]
        coef_bar[:3, t0:t1] = rho
        coef_bar[3, t0:t1] = JT_bar.diagonal(dim1=-2, dim2=-1)
        K = torch.stack([c[t0:t1] for c in coefs[:3]], -2)  # (C, E, B, 3, H)
        W_bar += torch.einsum("cebji,cebxi->exij", JT_bar, K).reshape(E, 3 * H, H)

    def param_grads(self, pre_bar, S_prev, X, need):
        """Gradients of (W via the pre-activations, U, b, b_h, X) from (u_bar, m_bar) (T, E, B, 3H) each."""
        u_bar, m_bar = pre_bar
        b_h_bar = m_bar.sum((0, 2)) if need[3] else None
        return self._grads_of(m_bar, u_bar, S_prev, X, need, b_h_bar)

    def state_of_pre(self, pre_bar):
        """The adjoint of the entering state through the pre-activations: (T, E, B, H)."""
        return self.state_of_rec(pre_bar[1])


class LSTMKernel(_Kernel):
    """The LSTM: coefficients (a_i, a_f, a_g, a_o, beta, f); pre-activation a = W h + U x + b."""

    n_gates, state_factor, n_coefs = 4, 2, 6

    def pre(self, S_prev, X):
        """(a,), (T, E, B, 4H), for entering states S_prev (T, E, B, 2H) and inputs X (E, B, T, I)."""
        return (self._rec(S_prev[..., :self.H]) + self._inp(X) + self.b[:, None],)

    @staticmethod
    def _gates(a, S_prev):
        H = S_prev.shape[-1] // 2
        ai, af, ag, ao = a.chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(ai), torch.sigmoid(af), torch.tanh(ag), torch.sigmoid(ao)
        c = S_prev[..., H:]
        c_next = f * c + i * g
        return c, i, f, g, o, c_next, torch.tanh(c_next)

    @staticmethod
    def coefs(a, S_prev):
        """(a_i, a_f, a_g, a_o, beta, f), (T, E, B, H) each (see the module docstring)."""
        c, i, f, g, o, _, tc = LSTMKernel._gates(a, S_prev)
        return g * i * (1 - i), c * f * (1 - f), i * (1 - g * g), tc * o * (1 - o), o * (1 - tc * tc), f

    @staticmethod
    def next_state(a, S_prev):
        """The step's new state [h', c'] from its pre-activation and entering state: (T, E, B, 2H)."""
        _, _, _, _, o, c_next, tc = LSTMKernel._gates(a, S_prev)
        return torch.cat([o * tc, c_next], dim=-1)

    def jacobians(self, coefs, t0: int, t1: int, J, D):
        """Write JhT of steps [t0, t1) into J (T, M, H, 2H) and the diagonal [beta f, f] into D (T, M, 2, H)."""
        ai, af, ag, ao, beta, f = (c[t0:t1].unsqueeze(-2) for c in coefs)  # (C, E, B, 1, H)
        E, B, H, C = self.E, self.B, self.H, t1 - t0
        out = J[t0:t1].view(C, E, B, H, 2 * H)
        JhhT, JchT = out[..., :H], out[..., H:]
        WT = self.WT.unsqueeze(1)  # (E, 1, G, H, H)
        torch.mul(WT[:, :, 0], ai, out=JchT)
        JchT.addcmul_(WT[:, :, 1], af)
        JchT.addcmul_(WT[:, :, 2], ag)
        torch.mul(WT[:, :, 3], ao, out=JhhT)
        JhhT.addcmul_(JchT, beta)
        d = D[t0:t1].view(C, E, B, 2, H)
        torch.mul(beta.squeeze(-2), f.squeeze(-2), out=d[..., 0, :])
        d[..., 1, :] = f.squeeze(-2)

    def push(self, QT, JhT, D, out=None):
        """Y^T = Q_h^T JhT + Q_c^T diag(D): QT (M, k, 2H) -> (M, k, 2H)."""
        H = self.H
        Y = torch.bmm(QT[..., :H], JhT, out=out)
        Y.view(*Y.shape[:-1], 2, H).addcmul_(QT[..., H:].unsqueeze(-2), D.unsqueeze(-3))
        return Y

    def tangent_back(self, YbT, JhT, D, out=None):
        """Q_bar^T from Y_bar^T: [Y_bar^T JhT^T, Y_bar_h^T diag(beta f) + Y_bar_c^T diag(f)], (M, k, 2H)."""
        H = self.H
        if out is None:
            out = torch.empty_like(YbT)
        torch.bmm(YbT, JhT.mT, out=out[..., :H])
        qc = out[..., H:]
        torch.mul(YbT[..., :H], D[..., 0:1, :], out=qc)
        qc.addcmul_(YbT[..., H:], D[..., 1:2, :])
        return out

    def state_back(self, s_bar, JhT, D, g, out):
        """The state adjoint one step back: ``J^T s_bar + g``, s_bar and g (M, 2H, 1) -> out (M, 2H, 1)."""
        H = self.H
        torch.baddbmm(g[:, :H], JhT, s_bar, out=out[:, :H])
        oc = out[:, H:]
        torch.addcmul(g[:, H:], D[:, 0].unsqueeze(-1), s_bar[:, :H], out=oc)
        oc.addcmul_(D[:, 1].unsqueeze(-1), s_bar[:, H:])

    def jacobian_adjoint(self, QT, YbT, JT, D, coefs, t0: int, t1: int, coef_bar, W_bar):
        """From the rows of the bases QT and adjoints YbT (C, M, k, 2H) of steps [t0, t1): the coefficients'
        adjoints into coef_bar (6, T, E, B, H) and the explicit W's into W_bar (E, 4H, H) (added)."""
        C, M, k, S = YbT.shape
        E, B, H = self.E, self.B, self.H
        JhT_bar = torch.bmm(QT[..., :H].reshape(C * M, k, H).mT, YbT.reshape(C * M, k, S))
        JhT_bar = JhT_bar.view(C, E, B, H, 2, H)  # [..., 0, :]: J_hh's, [..., 1, :]: J_ch's
        D_bar = torch.linalg.vecdot(YbT.view(C, M, k, 2, H), QT[..., H:].unsqueeze(-2), dim=2)  # (C, M, 2, H)
        D_bar = D_bar.view(C, E, B, 2, H)
        # rho[s, x] = sum_j J_bar_s[i, j] W_x[i, j] for the top (J_hh) and bottom (J_ch) blocks s and gates x
        rho = torch.einsum("cebjsi,exji->sxcebi", JhT_bar, self.WT)  # (2, 4, C, E, B, H)
        ai, af, ag, ao, beta, f = (c[t0:t1] for c in coefs)
        top, bot = rho[0], rho[1]
        # J_hh = diag(a_o) W_o + diag(beta) J_ch: J_ch's adjoint is bot + beta top
        coef_bar[0, t0:t1] = torch.addcmul(bot[0], beta, top[0])
        coef_bar[1, t0:t1] = torch.addcmul(bot[1], beta, top[1])
        coef_bar[2, t0:t1] = torch.addcmul(bot[2], beta, top[2])
        coef_bar[3, t0:t1] = top[3]
        beta_bar = ai * top[0] + af * top[1] + ag * top[2]  # sum_j J_hh_bar[i, j] J_ch[i, j]
        coef_bar[4, t0:t1] = beta_bar.addcmul_(D_bar[..., 0, :], f)
        coef_bar[5, t0:t1] = torch.addcmul(D_bar[..., 1, :], D_bar[..., 0, :], beta)
        # W_x's adjoint: sum over steps of diag(top coefficient) J_hh_bar + diag(bottom coefficient) J_ch_bar
        zero = torch.zeros_like(ao)
        K = torch.stack([torch.stack([beta * ai, beta * af, beta * ag, ao], -2),
                         torch.stack([ai, af, ag, zero], -2)], -3)  # (C, E, B, 2, 4, H)
        W_bar += torch.einsum("cebjsi,cebsxi->exij", JhT_bar, K).reshape(E, 4 * H, H)

    def param_grads(self, pre_bar, S_prev, X, need):
        """Gradients of (W via the pre-activation, U, b, None, X) from a_bar (T, E, B, 4H)."""
        (a_bar,) = pre_bar
        return self._grads_of(a_bar, a_bar, S_prev[..., :self.H], X, need)

    def state_of_pre(self, pre_bar):
        """The adjoint of the entering state through the pre-activation: (T, E, B, 2H) (h part; c's is zero)."""
        h_bar = self.state_of_rec(pre_bar[0])
        return torch.cat([h_bar, torch.zeros_like(h_bar)], dim=-1)


KERNELS = {"LSTM": LSTMKernel, "GRU": GRUKernel}
