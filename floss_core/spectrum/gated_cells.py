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
``diag_coefs``, ``diag_offset``), which ``gated_tangent`` applies, its columns on h stored (``build_columns``) or as
scalings of ``W Q``.

Every coefficient is a function of the step's gates (``gates``: from the pre-activations and the entering state, all
steps at once), so their adjoints go back to the pre-activations elementwise over all steps at once: ``coef_partials``
(each gate's adjoint with the others held fixed), ``state_partials`` (the same for the step's new state) and ``chain``
(through the gates' own equations to the pre-activations), checked against autograd in the tests. The pre-activations
are linear in W, U, the biases, the entering h and the input (``param_grads``).
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
    """The GRU: gates (r, z, n, m_n, h); coefficients (c_r, c_z, c_n, z); pre-activations (u, m) =
    (U x + b, W h + b_h)."""

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
    def gates(pre, S_prev):
        """(r, z, n, m_n, h), (T, E, B, H) each, from the pre-activations (u, m) and the entering states."""
        u, m = pre
        ur, uz, un = u.chunk(3, dim=-1)
        mr, mz, mn = m.chunk(3, dim=-1)
        r, z = torch.sigmoid(ur + mr), torch.sigmoid(uz + mz)
        return r, z, torch.tanh(un + r * mn), mn, S_prev

    @staticmethod
    def coefs(gates):
        """(c_r, c_z, c_n, z), (T, E, B, H) each (see the module docstring)."""
        r, z, n, mn, h = gates
        cn = (1 - z) * (1 - n * n) * r
        return cn * mn * (1 - r), (h - n) * z * (1 - z), cn, z

    @staticmethod
    def coef_partials(gates, coef_bar):
        """The coefficients' adjoints (g_r, g_z, g_n, g_d) -> the partial adjoints (r, z, n, m_n) held fixed the
        others, and the entering state's direct adjoint (h in c_z)."""
        r, z, n, mn, h = gates
        gr, gz, gn, gd = coef_bar
        dz, dr, q, omz = z * (1 - z), r * (1 - r), 1 - n * n, 1 - z
        grm = gr * mn
        both = gn * r + grm * dr  # the common factor of c_n and c_r, (1 - z) q, times their adjoints
        z_bar = (gz * (h - n) * (1 - 2 * z)).sub_(q * both).add_(gd)
        n_bar = (-gz * dz).sub_(2 * n * omz * both)
        r_bar = omz * q * (gn + grm * (1 - 2 * r))
        return (r_bar, z_bar, n_bar, gr * omz * q * dr), gz * dz

    @staticmethod
    def state_partials(gates, s_bar):
        """The next state's adjoint (T, E, B, H) -> the partial adjoints (r, z, n, m_n) of h' = n + z (h - n)."""
        r, z, n, mn, h = gates
        return None, s_bar * (h - n), s_bar * (1 - z), None

    @staticmethod
    def chain(gates, partials):
        """Partial adjoints (r, z, n, m_n) -> the pre-activations' adjoints [u_bar, m_bar] (T, E, B, 3H) each, and
        the entering state's (None: h enters the gates only through m)."""
        r, z, n, mn, h = gates
        r_bar, z_bar, n_bar, mn_bar = partials
        pn = n_bar * (1 - n * n)  # through n = tanh(u_n + r m_n)
        r_tot = pn * mn if r_bar is None else r_bar + pn * mn
        mn_tot = pn * r if mn_bar is None else mn_bar + pn * r
        pr, pz = r_tot * r * (1 - r), z_bar * z * (1 - z)
        return [torch.cat([pr, pz, pn], dim=-1), torch.cat([pr, pz, mn_tot], dim=-1)], None

    @staticmethod
    def diag_coefs(coefs):
        """d (T, E, B, H): J's diagonal part, z on h."""
        return coefs[3]

    def build_columns(self, coefs, t0: int, t1: int, out):
        """J of steps [t0, t1) (its columns are all on h) into out (C, E, B, H, H): the three scaled gate blocks and
        the diagonal z."""
        cr, cz, cn, z = (c[t0:t1].unsqueeze(-1) for c in coefs)  # (C, E, B, H, 1)
        Wg = self.Wg.unsqueeze(1)  # (E, 1, G, H, H)
        torch.mul(Wg[:, :, 0], cr, out=out)
        out.addcmul_(Wg[:, :, 1], cz)
        out.addcmul_(Wg[:, :, 2], cn)
        out.diagonal(dim1=-2, dim2=-1).add_(z.squeeze(-1))

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
    """The LSTM: gates (i, f, g, o, c, tanh(c')); coefficients (a_i, a_f, a_g, a_o, beta, f); pre-activation
    a = W h + U x + b."""

    n_gates, state_factor, n_coefs = 4, 2, 6
    # the factored map has twice the dense one's matmul flops (4 H^2 against 2 H^2 per vector: the dense map stores
    # J's h columns only) but no (2H x H) array per step (measured, forward + backward, B = 4, T = 64: factored 1.2x
    # faster at H = 64, k = 16, as fast at k = 24; dense 1.1x faster at H = 40, k = 24, 1.35x at k = 32)
    dense_min_k = 24

    def pre(self, S_prev, X):
        """(a,), (T, E, B, 4H), for entering states S_prev (T, E, B, 2H) and inputs X (E, B, T, I)."""
        return (self._rec(S_prev[..., :self.H]) + self._inp(X) + self.b[:, None],)

    @staticmethod
    def gates(pre, S_prev):
        """(i, f, g, o, c, tanh(c')), (T, E, B, H) each, from the pre-activation a and the entering states."""
        ai, af, ag, ao = pre[0].chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(ai), torch.sigmoid(af), torch.tanh(ag), torch.sigmoid(ao)
        c = S_prev[..., S_prev.shape[-1] // 2:]
        return i, f, g, o, c, torch.tanh(f * c + i * g)

    @staticmethod
    def coefs(gates):
        """(a_i, a_f, a_g, a_o, beta, f), (T, E, B, H) each (see the module docstring)."""
        i, f, g, o, c, tc = gates
        return g * i * (1 - i), c * f * (1 - f), i * (1 - g * g), tc * o * (1 - o), o * (1 - tc * tc), f

    @staticmethod
    def coef_partials(gates, coef_bar):
        """The coefficients' adjoints -> the partial adjoints (i, f, g, o, tanh(c'), c') held fixed the others, and
        the entering state's direct adjoint (c in a_f), (T, E, B, 2H)."""
        i, f, g, o, c, tc = gates
        gi, gf, gg, go, gb, gF = coef_bar
        i_bar = (gi * g * (1 - 2 * i)).addcmul_(gg, 1 - g * g)
        g_bar = (gi * i * (1 - i)).sub_(2 * gg * i * g)
        f_bar = (gf * c * (1 - 2 * f)).add_(gF)
        o_bar = (go * tc * (1 - 2 * o)).addcmul_(gb, 1 - tc * tc)
        tc_bar = (go * o * (1 - o)).sub_(2 * gb * o * tc)
        c_bar = gf * f * (1 - f)
        return (i_bar, f_bar, g_bar, o_bar, tc_bar, None), torch.cat([torch.zeros_like(c_bar), c_bar], dim=-1)

    @staticmethod
    def state_partials(gates, s_bar):
        """The next state's adjoint [h'_bar, c'_bar] (T, E, B, 2H) -> the partial adjoints (i, f, g, o, tanh(c'),
        c') of h' = o tanh(c'), c' = f c + i g."""
        i, f, g, o, c, tc = gates
        H = s_bar.shape[-1] // 2
        hb = s_bar[..., :H]
        return None, None, None, hb * tc, hb * o, s_bar[..., H:]

    @staticmethod
    def chain(gates, partials):
        """Partial adjoints (i, f, g, o, tanh(c'), c') -> the pre-activation's adjoint [a_bar] (T, E, B, 4H) and the
        entering state's (T, E, B, 2H), through c' = f c + i g."""
        i, f, g, o, c, tc = gates
        i_bar, f_bar, g_bar, o_bar, tc_bar, cn_bar = partials
        cn = tc_bar * (1 - tc * tc)
        if cn_bar is not None:
            cn = cn + cn_bar
        i_bar = cn * g if i_bar is None else i_bar.addcmul_(cn, g)
        f_bar = cn * c if f_bar is None else f_bar.addcmul_(cn, c)
        g_bar = cn * i if g_bar is None else g_bar.addcmul_(cn, i)
        a_bar = torch.cat([i_bar * i * (1 - i), f_bar * f * (1 - f), g_bar * (1 - g * g), o_bar * o * (1 - o)], -1)
        return [a_bar], torch.cat([torch.zeros_like(cn), cn * f], dim=-1)

    @staticmethod
    def diag_coefs(coefs):
        """d (T, E, B, 2H): J's diagonal part on c, [beta f (the h rows), f (the c rows)]."""
        beta, f = coefs[4], coefs[5]
        return torch.cat([beta * f, f], dim=-1)

    def build_columns(self, coefs, t0: int, t1: int, out):
        """J's columns on h of steps [t0, t1) into out (C, E, B, 2H, H): J_hh over J_ch (their c columns are the
        diagonal d). J_ch from three scaled gate blocks, then J_hh = diag(a_o) W_o + diag(beta) J_ch."""
        ai, af, ag, ao, beta, _ = (c[t0:t1].unsqueeze(-1) for c in coefs)  # (C, E, B, H, 1)
        H = self.H
        Jhh, Jch = out[..., :H, :], out[..., H:, :]
        Wg = self.Wg.unsqueeze(1)  # (E, 1, G, H, H)
        torch.mul(Wg[:, :, 0], ai, out=Jch)
        Jch.addcmul_(Wg[:, :, 1], af)
        Jch.addcmul_(Wg[:, :, 2], ag)
        torch.mul(Wg[:, :, 3], ao, out=Jhh)
        Jhh.addcmul_(Jch, beta)

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

    def dense_adjoint(self, JT_bar, d_bar, coefs, t0: int, t1: int, J, W_bar):
        """The coefficients' adjoints of steps [t0, t1) from J's adjoint on the h columns, JT_bar (C, E, B, H_j, 2,
        H_i) (the J_hh rows, then the J_ch rows), and the diagonal's d_bar (C, E, B, 2H); adds the explicit W's
        gradient to W_bar (E, 4H, H). With J_hh = diag(a_o) W_o + diag(beta) J_ch (J the stored columns
        (C, E, B, 2H, H)), J_ch's total adjoint is its own plus beta times J_hh's: 9 passes over the (H x H) arrays
        fewer than contracting every gate with both row blocks."""
        H = self.H
        ai, af, ag, ao, beta, f = (c[t0:t1] for c in coefs)  # (C, E, B, H)
        A, Bm = JT_bar[..., 0, :], JT_bar[..., 1, :]  # (C, E, B, H_j, H_i): J_hh's and J_ch's adjoints
        Bt = torch.addcmul(Bm, A, beta.unsqueeze(-2))  # J_ch's total adjoint
        tmp = torch.empty_like(Bt)
        WT = self.Wg.mT.unsqueeze(1)  # (E, 1, G, H_j, H_i)
        WbT = torch.empty(self.E, H, H, dtype=Bt.dtype, device=Bt.device)
        out = []
        for x, (adj, coef) in enumerate(((Bt, ai), (Bt, af), (Bt, ag), (A, ao))):
            out.append(torch.sum(torch.mul(adj, WT[:, :, x], out=tmp), -2))  # sum_j adj[j, i] W_x[i, j]
            torch.sum(torch.mul(adj, coef.unsqueeze(-2), out=tmp), (0, 2), out=WbT)
            W_bar[:, x * H:(x + 1) * H] += WbT.mT
        d_top, d_bot = d_bar[..., :H], d_bar[..., H:]
        beta_bar = torch.sum(torch.mul(A, J[..., H:, :].mT, out=tmp), -2).addcmul_(d_top, f)  # J_hh_bar . J_ch
        return (*out, beta_bar, torch.addcmul(d_bot, d_top, beta))

    def param_grads(self, pre_bar, S_prev, X, need):
        """Gradients of (W via the pre-activation, U, b, None, X) from a_bar (T, E, B, 4H)."""
        (a_bar,) = pre_bar
        return self._grads_of(a_bar, a_bar, S_prev[..., :self.H], X, need)

    def state_of_pre(self, pre_bar):
        """The adjoint of the entering state through the pre-activation: (T, E, B, 2H) (h part; c's is zero)."""
        h_bar = self.state_of_rec(pre_bar[0])
        return torch.cat([h_bar, torch.zeros_like(h_bar)], dim=-1)


KERNELS = {"LSTM": LSTMKernel, "GRU": GRUKernel}
