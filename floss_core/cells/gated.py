"""Ensembles of LSTMs and GRUs that follow the cell protocol of ``floss_core.cells.protocol``.

Both hold E independent networks in parameters with a leading network dimension E, exactly like ``TanhRNN``, so
``lyapunov_spectrum``, ``floss`` (whose default ``FlossConfig.params = ("W", "U", "b")`` names parameters that exist
here too), ``train`` and the diagnostics work on them unchanged. Gates are stacked along the rows of W, U and b in
PyTorch's order, so ``W[e]`` is ``weight_hh`` of a ``torch.nn.LSTMCell`` / ``GRUCell`` and ``U[e]`` its ``weight_ih``.

LSTM (gate order i, f, g, o as torch.nn.LSTMCell; state S = 2H, the flat vector [h, c]):

    a = W h + U s + b                   a = [a_i, a_f, a_g, a_o], each H long; b plays b_ih + b_hh
    i = sigma(a_i)   f = sigma(a_f)   g = tanh(a_g)   o = sigma(a_o)
    c' = f c + i g                      h' = o tanh(c')

    Jacobian of (h', c') with respect to (h, c), with W_x the rows of W of gate x and T = tanh(c'):
        dc'/dh = diag(c f(1-f)) W_f + diag(g i(1-i)) W_i + diag(i (1-g^2)) W_g          dc'/dc = diag(f)
        dh'/dh = diag(T o(1-o)) W_o + diag(o (1-T^2)) dc'/dh                             dh'/dc = diag(o (1-T^2) f)

GRU (gate order r, z, n as torch.nn.GRUCell; state S = H):

    u = U s + b                         (input part,     [u_r, u_z, u_n]; b plays b_ih)
    m = W h + b_h                       (recurrent part, [m_r, m_z, m_n]; b_h plays b_hh)
    r = sigma(u_r + m_r)   z = sigma(u_z + m_z)   n = tanh(u_n + r m_n)
    h' = (1 - z) n + z h

    The n gate multiplies the recurrent pre-activation, bias included, by r, so the recurrent bias cannot be folded
    into b: the GRU carries a second bias ``b_h`` (E, 3H). (Only its n part is not redundant; b_h's r and z parts add
    to b's, kept so that a torch.nn.GRUCell maps onto it one to one.) Jacobian:
        dh'/dh = diag(z) + diag(h - n) diag(z(1-z)) W_z
                 + diag((1-z)(1-n^2)) [diag(m_n) diag(r(1-r)) W_r + diag(r) W_n]

``step_tangent`` applies these Jacobians to K tangent vectors with one (4H x H or 3H x H) matrix product per step and
elementwise scalings, never forming the dense Jacobian; ``jacobian`` returns the dense one (for tests and
diagnostics). The readout ``V h + c`` reads the h part of the state only.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..checks import check_number
from ..rng import sample
from .base import EnsembleRNN, Sizes

__all__ = ["LSTM", "GRU", "lstm_gates", "gru_gates", "lstm_step", "gru_step"]


def lstm_gates(a: torch.Tensor, c: torch.Tensor):
    """The LSTM's gates from its pre-activations a = W h + U s + b (..., 4H) and cell state c (..., H):
    ``(h', c', (i, f, g, o, tanh(c')))``. Shared by ``LSTM`` and the torch.nn adapter (one set of equations)."""
    ai, af, ag, ao = a.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(ai), torch.sigmoid(af), torch.tanh(ag), torch.sigmoid(ao)
    c_next = f * c + i * g  # (..., H)
    tc = torch.tanh(c_next)
    return o * tc, c_next, (i, f, g, o, tc)


def gru_gates(u: torch.Tensor, m: torch.Tensor, h: torch.Tensor):
    """The GRU's update from its input part u = U s + b (..., 3H), recurrent part m = W h + b_h (..., 3H) and state
    h (..., H): ``(h', (r, z, n, m_n))``. Shared by ``GRU`` and the torch.nn adapter."""
    ur, uz, un = u.chunk(3, dim=-1)
    mr, mz, mn = m.chunk(3, dim=-1)
    r, z = torch.sigmoid(ur + mr), torch.sigmoid(uz + mz)
    n = torch.tanh(un + r * mn)
    return n + z * (h - n), (r, z, n, mn)  # (1 - z) n + z h


def lstm_step(W: torch.Tensor, U: torch.Tensor, b: torch.Tensor, h: torch.Tensor, x: torch.Tensor):
    """``LSTM``'s step on plain tensors: W (E, 4H, H), U (E, 4H, I), b (E, 4H), state h (E, B, 2H), x (E, B, I) ->
    ``(h_next (E, B, 2H), (c, i, f, g, o, tanh(c')))``. The one place it is written: ``LSTM`` and the fast spectrum
    engine both call it (same bits)."""
    H = W.shape[-1]
    hh, cc = h[..., :H], h[..., H:]  # (E, B, H) each
    a = torch.baddbmm(b.unsqueeze(1), x, U.transpose(1, 2))  # (E, B, 4H)
    a = torch.baddbmm(a, hh, W.transpose(1, 2))
    h_new, c_next, (i, f, g, o, tc) = lstm_gates(a, cc)  # (E, B, H) each
    return torch.cat([h_new, c_next], dim=-1), (cc, i, f, g, o, tc)  # (E, B, 2H)


def gru_step(W: torch.Tensor, U: torch.Tensor, b: torch.Tensor, b_h: torch.Tensor, h: torch.Tensor,
             x: torch.Tensor):
    """``GRU``'s step on plain tensors: W (E, 3H, H), U (E, 3H, I), b and b_h (E, 3H), state h (E, B, H),
    x (E, B, I) -> ``(h_next (E, B, H), (r, z, n, m_n))``. The one place it is written: ``GRU`` and the fast spectrum
    engine both call it (same bits)."""
    u = torch.baddbmm(b.unsqueeze(1), x, U.transpose(1, 2))  # (E, B, 3H)
    m = torch.baddbmm(b_h.unsqueeze(1), h, W.transpose(1, 2))  # (E, B, 3H)
    return gru_gates(u, m, h)  # (E, B, H), gates


class _GatedEnsemble(EnsembleRNN):
    """Shared layout of LSTM and GRU: W (E, G*H, H), U (E, G*H, I), b (E, G*H), V (E, O, H), c (E, O), h0 (E, S)."""

    n_gates: int = 0  # G
    state_factor: int = 1  # S = state_factor * H

    def __init__(self, n_in: int, n_hidden: int, n_out: int, *, gain: float = 1.0, n_networks: int = 1,
                 memory_bias: float = 0.0, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        z = Sizes.check(n_in, n_hidden, n_out, n_networks, gain, dtype, generator)
        memory_bias = check_number("memory_bias", memory_bias)
        E, H, I, O, G = z.n_networks, z.n_hidden, z.n_in, z.n_out, self.n_gates
        kw = dict(dtype=z.dtype, device=device)
        bound = 1.0 / math.sqrt(H)

        def uniform(*shape):  # U(-1/sqrt(H), 1/sqrt(H)), PyTorch's init of recurrent layers and of nn.Linear
            return (2 * sample(torch.rand, *shape, **kw, generator=generator) - 1) * bound

        self.W = nn.Parameter(gain * uniform(E, G * H, H))  # (E, G*H, H)
        self.U = nn.Parameter(uniform(E, G * H, I))  # (E, G*H, I)
        b = self._init_bias(uniform, E, G * H)  # (E, G*H)
        if memory_bias:
            b[:, H:2 * H] += memory_bias  # gate 1 keeps the state: the LSTM's forget gate f, the GRU's update gate z
        self.b = nn.Parameter(b)
        self._init_extra(uniform, E, G * H)
        self.V = nn.Parameter(uniform(E, O, H))  # (E, O, H)
        self.c = nn.Parameter(uniform(E, O))  # (E, O)
        self.h0 = nn.Parameter(torch.zeros(E, self.state_factor * H, **kw))  # (E, S)
        self.gain, self.memory_bias = gain, memory_bias

    def _init_bias(self, uniform, E, GH):
        return uniform(E, GH)

    def _init_extra(self, uniform, E, GH):
        pass

    # -- shared protocol -----------------------------------------------------------------------------------------
    def step(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One step: state h (E, B, S), inputs x (E, B, I) -> (E, B, S)."""
        return self._forward(h, x)[0]

    def jacobian(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The dense step Jacobian ``dh_t / dh_{t-1}`` at states h (E, B, S) and inputs x (E, B, I): (E, B, S, S)."""
        E, B, S = h.shape
        eye = torch.eye(S, dtype=h.dtype, device=h.device).expand(E, B, S, S)
        return self.step_tangent(h, x, eye)[1]

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``V h + c`` from the h part of the state: (E, B, S) -> (E, B, O)."""
        hh = h[..., :self.hidden_size]
        return torch.baddbmm(self.c.unsqueeze(1), hh, self.V.transpose(1, 2))  # (E, B, O)

    def extra_repr(self) -> str:
        return (f"n_networks={self.n_networks}, n_in={self.input_size}, n_hidden={self.hidden_size}, "
                f"n_out={self.output_size}, gain={self.gain}")


class LSTM(_GatedEnsemble):
    """An ensemble of E independent LSTMs (torch.nn.LSTMCell's equations, see the module docstring).

    Main arguments:
        n_in: input channels I.
        n_hidden: units H; the state is [h, c], of size S = 2H.
        n_out: readout channels O (the readout reads h only).

    Other arguments (keyword-only):
        gain: W is multiplied by gain after its PyTorch-like draw (1: PyTorch's init; smaller: more stable).
        memory_bias: added to the bias of the forget gate f (e.g. 1, the usual remedy for LSTMs that forget too
            fast; 0: PyTorch's init).
        n_networks: E, the number of independent networks in the ensemble.
        generator: a torch.Generator for the initial parameters (same generator state, same networks).
        dtype, device: of the parameters.

    Parameters (public; network e is exactly the single network built from their slices [e]):
        W (E, 4H, H) recurrent weights (rows: gates i, f, g, o), U (E, 4H, I) input weights, b (E, 4H) bias,
        V (E, O, H) readout weights, c (E, O) readout bias, h0 (E, 2H) trainable initial state [h, c] (zeros).
    Initialization: W, U, V, c ~ U(-1/sqrt(H), 1/sqrt(H)) as in PyTorch (W then times gain); b is the sum of two
    such draws, like PyTorch's b_ih + b_hh.
    """

    n_gates = 4
    state_factor = 2

    def _init_bias(self, uniform, E, GH):
        return uniform(E, GH) + uniform(E, GH)  # b_ih + b_hh

    def _forward(self, h: torch.Tensor, x: torch.Tensor):
        return lstm_step(self.W, self.U, self.b, h, x)  # (E, B, 2H), (c, i, f, g, o, tanh(c'))

    def gate_values(self, h: torch.Tensor, x: torch.Tensor) -> dict:
        """The gates of one step, each (E, B, H): input i, forget f, cell candidate g, output o, and the new cell
        state c (for diagnostics: flossing can reach lambda = 0 by saturating f at 1 and letting |c| grow)."""
        h_next, (_, i, f, g, o, _) = self._forward(h, x)
        return {"input": i, "forget": f, "candidate": g, "output": o, "cell": h_next[..., self.hidden_size:]}

    def step_tangent(self, h: torch.Tensor, x: torch.Tensor, Q: torch.Tensor):
        """The step and ``J Q`` (see the module docstring), without the dense Jacobian.

        h (E, B, 2H), x (E, B, I), Q (E, B, 2H, K) -> h_next (E, B, 2H), JQ (E, B, 2H, K)."""
        H = self.hidden_size
        h_next, (cc, i, f, g, o, tc) = self._forward(h, x)
        WQ = self.W.unsqueeze(1) @ Q[..., :H, :]  # (E, B, 4H, K)
        wi, wf, wg, wo = WQ.chunk(4, dim=-2)
        col = lambda v: v.unsqueeze(-1)  # noqa: E731  (E, B, H) -> (E, B, H, 1)
        dc = col(g * i * (1 - i)) * wi + col(cc * f * (1 - f)) * wf + col(i * (1 - g * g)) * wg \
            + col(f) * Q[..., H:, :]  # (E, B, H, K)
        dh = col(tc * o * (1 - o)) * wo + col(o * (1 - tc * tc)) * dc  # (E, B, H, K)
        return h_next, torch.cat([dh, dc], dim=-2)


class GRU(_GatedEnsemble):
    """An ensemble of E independent GRUs (torch.nn.GRUCell's equations, see the module docstring).

    Main arguments:
        n_in: input channels I.
        n_hidden: units H; the state is h, of size S = H.
        n_out: readout channels O.

    Other arguments (keyword-only): gain, n_networks, generator, dtype, device, as for ``LSTM``; memory_bias is
    added to the bias of the update gate z (positive: the state is kept longer).

    Parameters (public; network e is exactly the single network built from their slices [e]):
        W (E, 3H, H) recurrent weights (rows: gates r, z, n), U (E, 3H, I) input weights, b (E, 3H) input bias
        (PyTorch's b_ih), b_h (E, 3H) recurrent bias (PyTorch's b_hh; needed because the n gate scales
        ``W_n h + b_h,n`` by r), V (E, O, H), c (E, O), h0 (E, H) trainable initial state (zeros).
    Initialization: every array ~ U(-1/sqrt(H), 1/sqrt(H)) as in PyTorch (W then times gain); h0 zero.
    Flossing's default ``params = ("W", "U", "b")`` leaves b_h alone; add "b_h" to flossing's params to floss it.
    """

    n_gates = 3
    state_factor = 1

    def _init_extra(self, uniform, E, GH):
        self.b_h = nn.Parameter(uniform(E, GH))  # (E, 3H)

    def _forward(self, h: torch.Tensor, x: torch.Tensor):
        return gru_step(self.W, self.U, self.b, self.b_h, h, x)  # (E, B, H), (r, z, n, m_n)

    def gate_values(self, h: torch.Tensor, x: torch.Tensor) -> dict:
        """The gates of one step, each (E, B, H): reset r, update z (z -> 1 freezes the state), candidate n."""
        _, (r, z, n, _) = self._forward(h, x)
        return {"reset": r, "update": z, "candidate": n}

    def step_tangent(self, h: torch.Tensor, x: torch.Tensor, Q: torch.Tensor):
        """The step and ``J Q`` (see the module docstring), without the dense Jacobian.

        h (E, B, H), x (E, B, I), Q (E, B, H, K) -> h_next (E, B, H), JQ (E, B, H, K)."""
        h_next, (r, z, n, mn) = self._forward(h, x)
        WQ = self.W.unsqueeze(1) @ Q  # (E, B, 3H, K)
        wr, wz, wn = WQ.chunk(3, dim=-2)
        col = lambda v: v.unsqueeze(-1)  # noqa: E731  (E, B, H) -> (E, B, H, 1)
        dn = col(1 - n * n) * (col(mn * r * (1 - r)) * wr + col(r) * wn)  # (E, B, H, K)
        JQ = col(1 - z) * dn + col((h - n) * z * (1 - z)) * wz + col(z) * Q
        return h_next, JQ
