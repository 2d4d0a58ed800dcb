"""Pushing tangent vectors through one step: the model's own ``step_tangent``, or Jacobian-vector products of its
``step`` from ``torch.func`` (any cell)."""
from __future__ import annotations

import torch

__all__ = ["tangent_step", "jvp_tangent_step"]


def tangent_step(model, h: torch.Tensor, x: torch.Tensor, Q: torch.Tensor):
    """One step of the state and its tangent vectors: ``(h_next, J_t Q)``.

    Uses the model's ``step_tangent`` when it has one; otherwise Jacobian-vector products of ``model.step`` from
    ``torch.func`` (one jvp per tangent vector, vectorized with vmap), which stay differentiable with respect to the
    model's parameters. h (E, B, S), x (E, B, I), Q (E, B, S, K) -> (E, B, S), (E, B, S, K).
    """
    if hasattr(model, "step_tangent"):
        return model.step_tangent(h, x, Q)
    return jvp_tangent_step(model, h, x, Q)


def jvp_tangent_step(model, h: torch.Tensor, x: torch.Tensor, Q: torch.Tensor):
    """``tangent_step`` through ``torch.func.jvp`` on ``model.step`` alone (any cell)."""

    def push(q):  # q (E, B, S)
        return torch.func.jvp(lambda hh: model.step(hh, x), (h,), (q,))

    h_next, JQ = torch.func.vmap(push, in_dims=-1, out_dims=(None, -1))(Q)  # (E, B, S), (E, B, S, K)
    return h_next, JQ
