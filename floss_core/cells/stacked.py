"""The step and the tangent step of a stack of L recurrent layers (torch.nn.RNN / LSTM / GRU with num_layers = L) as
one map of the joint state, written layer by layer on plain weight tensors.

Joint state, layer by layer (H units per layer, B trajectories):

    LSTM:       [h_1, c_1, h_2, c_2, ..., h_L, c_L]     S = 2 H L      (L = 1: [h, c], the single-layer layout)
    RNN, GRU:   [h_1, h_2, ..., h_L]                    S = H L

Layer l (1-based) reads, at step t, the new h of layer l - 1 at the same step (layer 1 reads the input x_t), exactly
as torch.nn's multi-layer modules do (dropout between layers aside: it is applied by torch only in training mode,
and the adapters refuse a module whose map it makes random).

Step Jacobian: block lower-triangular. With P_l the pre-activations of layer l (the gate pre-activations of an LSTM /
GRU, ``a = W_ih,l h'_{l-1} + W_hh,l h_l + b``), the tangent of P_l along tangent vectors Q is

    dP_l = W_hh,l Q_{h_l} + W_ih,l dh'_{l-1}          (no second term for l = 1: x_t is not perturbed)

where dh'_{l-1} is the tangent of layer l - 1's new h, just computed. The gate derivatives then follow the
single-layer formulas of ``floss_core.cells.gated`` (LSTM: dc' from di, df, dg and f Q_c, dh' from do and dc';
GRU: the input part u and the recurrent part m have separate tangents du = W_ih dh'_{l-1}, dm = W_hh Q_h, because
the n gate scales m_n by r), and for the tanh / relu RNN ``dh' = act'(P_l) dP_l``. So ``step_tangent`` costs two
(G H x H) matrix products per layer and step on K tangent vectors and never forms the (S x S) Jacobian; it is
differentiable with respect to the weights (plain torch ops, no in-place writes).

Functions here take one trajectory batch: h (B, S), x (B, I), Q (B, S, K), and ``layers``, one tuple
``(weight_ih, weight_hh, bias_ih or None, bias_hh or None)`` per layer in torch.nn's layout (gates stacked along
the rows in torch's order: i, f, g, o for the LSTM; r, z, n for the GRU).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .gated import gru_gates, lstm_gates

__all__ = ["KINDS", "state_factor", "stacked_step", "stacked_step_tangent"]

KINDS = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")


def state_factor(kind: str) -> int:
    """State entries per unit and layer: 2 for an LSTM (h and c), 1 otherwise."""
    return 2 if kind == "LSTM" else 1


def _layer(kind: str, weights, inp: torch.Tensor, s: torch.Tensor):
    """One layer's step: input inp (B, I_l), layer state s (B, H) or (B, 2H) [h, c] -> (new state, new h, cache)."""
    w_ih, w_hh, b_ih, b_hh = weights
    H = w_hh.shape[1]
    gx = F.linear(inp, w_ih, b_ih)  # (B, G*H)
    if kind == "LSTM":
        c = s[:, H:]  # (B, H)
        h_new, c_new, gates = lstm_gates(gx + F.linear(s[:, :H], w_hh, b_hh), c)  # (B, H) each
        return torch.cat([h_new, c_new], dim=-1), h_new, (c, gates)
    gh = F.linear(s, w_hh, b_hh)  # (B, G*H)
    if kind == "GRU":
        h_new, gates = gru_gates(gx, gh, s)
        return h_new, h_new, gates
    a = gx + gh  # (B, H)
    h_new = torch.tanh(a) if kind == "RNN_TANH" else torch.relu(a)
    return h_new, h_new, None


_CELL_OPS = {"RNN_TANH": torch.rnn_tanh_cell, "RNN_RELU": torch.rnn_relu_cell}


def _cell(kind: str, weights, inp: torch.Tensor, s: torch.Tensor):
    """One layer's step without its gates: (new state, new h). The LSTM and the tanh / relu RNN take torch's own cell
    op (``torch.lstm_cell`` etc., one call a step instead of about ten; on the CPU the same bits as ``_layer``, tested);
    the GRU takes ``_layer`` (``torch.gru_cell`` rounds its update differently in float32)."""
    if kind == "LSTM":
        H = weights[1].shape[1]
        h_new, c_new = torch.lstm_cell(inp, (s[:, :H], s[:, H:]), *weights)
        return torch.cat([h_new, c_new], dim=-1), h_new
    if kind in _CELL_OPS:
        h_new = _CELL_OPS[kind](inp, s, *weights)
        return h_new, h_new
    return _layer(kind, weights, inp, s)[:2]


def stacked_step(kind: str, layers, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One step of the stack: joint state h (B, S), input x (B, I) -> (B, S)."""
    width = state_factor(kind) * layers[0][1].shape[1]  # entries per layer: H or 2H
    inp, out = x, []
    for l, weights in enumerate(layers):
        s_new, inp = _cell(kind, weights, inp, h[:, l * width:(l + 1) * width])
        out.append(s_new)
    return out[0] if len(out) == 1 else torch.cat(out, dim=-1)


def _matmul(w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """w (R, C) applied to every column of q (B, C, K) -> (B, R, K), as one (B K, C) x (C, R) product."""
    return F.linear(q.transpose(1, 2), w).transpose(1, 2)


def stacked_step_tangent(kind: str, layers, h: torch.Tensor, x: torch.Tensor, Q: torch.Tensor):
    """The step and ``J Q`` layer by layer, without the (S x S) Jacobian (see the module docstring).

    h (B, S), x (B, I), Q (B, S, K) -> h_next (B, S), JQ (B, S, K)."""
    H = layers[0][1].shape[1]
    width = state_factor(kind) * H
    col = lambda v: v.unsqueeze(-1)  # noqa: E731  (B, H) -> (B, H, 1)
    inp, dinp = x, None  # the layer's input and its tangent (B, H, K); the input x is not perturbed
    states, tangents = [], []
    for l, weights in enumerate(layers):
        w_ih, w_hh = weights[0], weights[1]
        s, q = h[:, l * width:(l + 1) * width], Q[:, l * width:(l + 1) * width]  # (B, width), (B, width, K)
        s_new, h_new, cache = _layer(kind, weights, inp, s)
        qh = q[:, :H]  # (B, H, K)
        dm = _matmul(w_hh, qh)  # (B, G*H, K): recurrent part of the pre-activations' tangent
        du = None if dinp is None else _matmul(w_ih, dinp)  # input part
        if kind == "LSTM":
            c, (i, f, g, o, tc) = cache
            da = dm if du is None else dm + du
            di, df, dg, do = da.chunk(4, dim=1)
            dc = col(g * i * (1 - i)) * di + col(c * f * (1 - f)) * df + col(i * (1 - g * g)) * dg \
                + col(f) * q[:, H:]  # (B, H, K)
            dh = col(tc * o * (1 - o)) * do + col(o * (1 - tc * tc)) * dc  # (B, H, K)
            tangents += [dh, dc]
        elif kind == "GRU":
            r, z, n, mn = cache
            dmr, dmz, dmn = dm.chunk(3, dim=1)
            if du is None:
                dr_pre, dz_pre, dun = dmr, dmz, 0.0
            else:
                dur, duz, dun = du.chunk(3, dim=1)
                dr_pre, dz_pre = dur + dmr, duz + dmz
            dn = col(1 - n * n) * (dun + col(mn * r * (1 - r)) * dr_pre + col(r) * dmn)  # (B, H, K)
            dh = col(1 - z) * dn + col((s - n) * z * (1 - z)) * dz_pre + col(z) * qh  # (B, H, K)
            tangents.append(dh)
        else:
            da = dm if du is None else dm + du
            slope = 1 - h_new * h_new if kind == "RNN_TANH" else (h_new > 0).to(h_new.dtype)  # act'(a) (B, H)
            dh = col(slope) * da
            tangents.append(dh)
        states.append(s_new)
        inp, dinp = h_new, dh
    if len(states) == 1:
        return states[0], tangents[0] if len(tangents) == 1 else torch.cat(tangents, dim=1)
    return torch.cat(states, dim=-1), torch.cat(tangents, dim=1)
