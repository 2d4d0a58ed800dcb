"""The Jacobians of the LSTM and the GRU for the fast gated engine, as a few diagonal scalings of W, and the maps
between their coefficients and the cells' pre-activations.

Shapes: E networks, B trajectories each (M = E B rows of the tangent batch), T steps, H units, S state entries,
k tangent vectors, G gates; the gates are stacked along the rows of W (E, G H, H) in torch's order. Coefficient
tensors are (T, E, B, H), one value per unit and step. Tangent vectors are rows (``spectrum.qr``): ``QT (M, k, S)``.

GRU (S = H; ``floss_core.cells.gated``):

    J = diag(z) + diag(c_r) W_r + diag(c_z) W_z + diag(c_n) W_n,
    c_z = (h - n) z (1 - z),   c_n = (1 - z)(1 - n^2) r,   c_r = c_n m_n (1 - r)

LSTM (S = 2H, state [h, c]):

    J = [[J_hh, diag(beta f)], [J_ch, diag(f)]],   J_ch = diag(a_i) W_i + diag(a_f) W_f + diag(a_g) W_g,
    J_hh = diag(a_o) W_o + diag(beta) J_ch,        a_i = g i (1 - i),  a_f = c f (1 - f),  a_g = i (1 - g^2),
    a_o = tanh(c') o (1 - o),  beta = o (1 - tanh(c')^2)

Both have the form ``(J q)[r] = sum_x K_x[r] (W_x q_h)[r mod H] + d[r] q[off + r mod H]`` (``row_coefs``,
``diag_coefs``, ``diag_offset``), which ``gated_tangent`` applies, stored whole or as scalings of ``W Q``.

Every coefficient is a function of the step's gate pre-activations and its entering state (``coefs``), so their
adjoints go back to the pre-activations by ``torch.func.vjp`` over all steps at once; the pre-activations are linear
in W, U, the biases, the entering h and the input (``param_grads``).
"""
from __future__ import annotations

import torch

__all__ = ["KERNELS", "LSTMKernel", "GRUKernel", "per_network_mm", "per_network_gram"]


def per_network_mm(A: torch.Tensor, Bm: torch.Tensor) -> torch.Tensor:
    """``A[:, e] @ Bm[e]`` for every network e: A (C, E, R, p), Bm (E, p, q) -> (C, E, R, q)."""
    C, E, R, p = A.shape
    if E == 1:  # one matmul on views, no copy
        return (A.reshape(C * R, p) @ Bm[0]).view(C, 1, R, Bm.shape[-1])
    return torch.einsum("cerp,epq->cerq", A, Bm)


def per_network_gram(A: torch.Tensor, Bm: torch.Tensor) -> torch.Tensor:
    """``sum_{c, r} A[c, e, r]^T Bm[c, e, r]`` for every network e: A (C, E, R, p), Bm (C, E, R, q) -> (E, p, q)."""
    C, E, R, p = A.shape
    if E == 1:
        return (A.reshape(C * R, p).mT @ Bm.reshape(C * R, Bm.shape[-1])).unsqueeze(0)
    return torch.einsum("cerp,cerq->epq", A, Bm)


class _Kernel:
    """What the engine needs of a cell, for one sub-batch of networks: W (E, G H, H), U (E, G H, I), b (E, G H),
    b_h (E, G H) or None (LSTM)."""

    n_gates = 0  # G
    state_factor = 1  # S = state_factor H
    n_coefs = 0  # coefficient tensors (T, E, B, H) per step

    def __init__(self, W, U, b, b_h, B: int):
        self.W, self.U, self.b, self.b_h, self.B = W, U, b, b_h, B
        self.E, self.H = W.shape[0], W.shape[-1]
        self.Wg = W.view(self.E, self.n_gates, self.H, self.H)  # (E, G, H, H): Wg[:, x] = W_x

    @property
    def S(self) -> int:
        return self.state_factor * self.H

    @property
    def diag_offset(self) -> int:
        """The first of the H state coordinates J's diagonal part acts on (GRU: h, 0; LSTM: c, H)."""
        return (self.state_factor - 1) * self.H

    def _rec(self, h_prev):
        """W h for every step: h_prev (T, E, B, H) -> (T, E, B, G H)."""
        T, E, B, H = h_prev.shape
        return per_network_mm(h_prev.reshape(T, E, B, H), self.W.mT).view(T, E, B, -1)

    def _inp(self, X):
        """U x for every step: X (E, B, T, I) -> (T, E, B, G H)."""
        return torch.einsum("ebti,egi->tebg", X, self.U)

    def _grads_of(self, rec_bar, inp_bar, h_prev, X, need, b_h_bar=None):
        """Gradients of (W, U, b, b_h, X) from the adjoints of the recurrent (W h) and input (U x + b) parts of the
        pre-activations, (T, E, B, G H) each: W's is only the part through the pre-activations."""
        T, E, B, GH = rec_bar.shape
        W_bar = per_network_gram(rec_bar, h_prev) if need[0] else None
        U_bar = torch.einsum("tebg,ebti->egi", inp_bar, X) if need[1] else None
        b_bar = inp_bar.sum((0, 2)) if need[2] else None
        X_bar = torch.einsum("tebg,egi->ebti", inp_bar, self.U) if need[5] else None
        return W_bar, U_bar, b_bar, b_h_bar, X_bar

    def state_of_rec(self, rec_bar):
        """The adjoint of the entering h from that of W h: (T, E, B, G H) -> (T, E, B, H)."""
        return per_network_mm(rec_bar, self.W)


class GRUKernel(_Kernel):
    """The GRU: coefficients (c_r, c_z, c_n, z); pre-activations (u, m) = (U x + b, W h + b_h)."""

    n_gates, state_factor, n_coefs = 3, 1, 4
    # the tangent map ("gated_tangent") is stored whole from this many exponents on: with one matmul of W's three
    # gate blocks per step, the factored map costs 3x the dense one's flops (measured, forward + backward, B = 4,
    # T = 64: factored faster at H = 64, k = 8, as fast at k = 16-24, 1.3x slower at H = 80, k = 75)
    dense_min_k = 16

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

    @staticmethod
    def diag_coefs(coefs):
        """d (T, E, B, H): J's diagonal part, z on h."""
        return coefs[3]

    @staticmethod
    def row_coefs(coefs, t0: int, t1: int):
        """K (C, E, B, 3, H): the row scalings of W_r, W_z, W_n in J for steps [t0, t1)."""
        return torch.stack([c[t0:t1] for c in coefs[:3]], -2)

    @staticmethod
    def coef_bar_of(rho, d_bar, coefs, t0: int, t1: int):
        """The coefficients' adjoints (c_r, c_z, c_n, z) of steps [t0, t1) from rho (C, E, B, 3, H),
        ``rho_x[i] = sum_j J_bar[i, j] W_x[i, j]``, and the diagonal's adjoint d_bar (C, E, B, H)."""
        return rho[..., 0, :], rho[..., 1, :], rho[..., 2, :], d_bar

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
    # the factored map has the dense one's matmul flops (4 H^2 = S^2 per vector) without its S x S array per step
    # (measured, forward + backward, B = 4, T = 64: factored 1.7x faster at H = 64, k = 8, 1.5x at k = 24, 1.1x at
    # k = 48; as fast at H = 40, k = 40; 1.15x slower at k = 75)
    dense_min_k = 40

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

    @staticmethod
    def diag_coefs(coefs):
        """d (T, E, B, 2H): J's diagonal part on c, [beta f (the h rows), f (the c rows)]."""
        beta, f = coefs[4], coefs[5]
        return torch.cat([beta * f, f], dim=-1)

    @staticmethod
    def row_coefs(coefs, t0: int, t1: int):
        """K (C, E, B, 4, 2H): the row scalings of W_i, W_f, W_g, W_o in [J_hh; J_ch] for steps [t0, t1)."""
        ai, af, ag, ao, beta, _ = (c[t0:t1] for c in coefs)
        top = torch.stack([beta * ai, beta * af, beta * ag, ao], -2)  # J_hh = diag(a_o) W_o + diag(beta) J_ch
        bot = torch.stack([ai, af, ag, torch.zeros_like(ao)], -2)
        return torch.cat([top, bot], -1)

    @staticmethod
    def coef_bar_of(rho, d_bar, coefs, t0: int, t1: int):
        """The coefficients' adjoints (a_i, a_f, a_g, a_o, beta, f) of steps [t0, t1) from rho (C, E, B, 4, 2H),
        ``rho_x[r] = sum_j [J_hh; J_ch]_bar[r, j] W_x[r mod H, j]``, and the diagonal's adjoint d_bar (C, E, B, 2H)."""
        H = rho.shape[-1] // 2
        ai, af, ag, _, beta, f = (c[t0:t1] for c in coefs)
        top, bot = rho[..., :H], rho[..., H:]  # (C, E, B, 4, H): the J_hh and J_ch rows
        d_top, d_bot = d_bar[..., :H], d_bar[..., H:]
        # J_ch's adjoint is its own plus beta times J_hh's; beta's is sum_j J_hh_bar J_ch (= sum_x a_x top_x) plus
        # that of the diagonal beta f
        a_bar = torch.addcmul(bot[..., :3, :], beta.unsqueeze(-2), top[..., :3, :])
        beta_bar = (torch.stack([ai, af, ag], -2) * top[..., :3, :]).sum(-2).addcmul_(d_top, f)
        return a_bar[..., 0, :], a_bar[..., 1, :], a_bar[..., 2, :], top[..., 3, :], beta_bar, \
            torch.addcmul(d_bot, d_top, beta)

    def param_grads(self, pre_bar, S_prev, X, need):
        """Gradients of (W via the pre-activation, U, b, None, X) from a_bar (T, E, B, 4H)."""
        (a_bar,) = pre_bar
        return self._grads_of(a_bar, a_bar, S_prev[..., :self.H], X, need)

    def state_of_pre(self, pre_bar):
        """The adjoint of the entering state through the pre-activation: (T, E, B, 2H) (h part; c's is zero)."""
        h_bar = self.state_of_rec(pre_bar[0])
        return torch.cat([h_bar, torch.zeros_like(h_bar)], dim=-1)


KERNELS = {"LSTM": LSTMKernel, "GRU": GRUKernel}
