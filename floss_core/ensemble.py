"""Helpers that keep the E networks of an ensemble independent inside one batched computation.

Parameters carry a leading network dimension E, and losses are summed over networks, so one torch.optim.Adam over
the ensemble's parameters is exactly E independent Adams (Adam is elementwise). What does not decompose by itself:

* randomness: see ``floss_core.rng`` (one generator per ensemble, or one per network);
* gradient-norm clipping, done per network and per parameter array (``clip_per_network_``);
* divergence: a network whose loss or gradient is not finite is frozen (``nonfinite_networks``, ``frozen_step``)
  and recorded as failed, while the others carry on.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch

from .checks import check_int

__all__ = ["clip_per_network_", "grad_norm_per_network", "nonfinite_networks", "frozen_step", "tile_networks",
           "tile_optimizer", "concat_networks"]

def grad_norm_per_network(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Total gradient norm of each network over all parameter arrays: (E,). Missing gradients count as zero."""
    sq = None
    for p in params:
        if p.grad is None:
            continue
        s = p.grad.detach().pow(2).flatten(1).sum(1)  # (E,)
        sq = s if sq is None else sq + s
    if sq is None:
        return torch.zeros(params[0].shape[0], dtype=params[0].dtype, device=params[0].device)
    return sq.sqrt()


def clip_per_network_(params: Sequence[torch.Tensor], max_norm: float | None) -> None:
    """Scale each network's gradient of each parameter array to norm <= max_norm, in place (None or 0: no-op)."""
    if not max_norm:
        return
    for p in params:
        if p.grad is None:
            continue
        norm = p.grad.detach().flatten(1).norm(dim=1)  # (E,)
        scale = (max_norm / (norm + 1e-12)).clamp(max=1.0)  # (E,)
        p.grad.mul_(scale.view(-1, *([1] * (p.dim() - 1))))


def nonfinite_networks(losses: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """(E,) bool: networks whose loss, any parameter or gradient entry, or whole gradient norm is NaN or inf.

    The norm matters on its own: a network whose finite but huge weights saturate it can have finite gradient
    entries whose norm overflows (inf in float32); clipping would then silently zero its gradient forever."""
    bad = ~torch.isfinite(losses.detach())
    for p in params:
        if p.grad is not None:
            bad |= ~torch.isfinite(p.grad.detach()).flatten(1).all(1)
        bad |= ~torch.isfinite(p.detach()).flatten(1).all(1)
    return bad | ~torch.isfinite(grad_norm_per_network(params))


def frozen_step(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], frozen: torch.Tensor) -> None:
    """``optimizer.step()`` that leaves the parameters of the frozen networks (E,) bool untouched.

    Their gradients are zeroed first (so NaN cannot reach the optimizer state of the others, which is elementwise
    anyway), and their values are restored after the step (Adam's momentum would otherwise keep moving them)."""
    if not bool(frozen.any()):
        optimizer.step()
        return
    backups = []
    for p in params:
        if p.grad is not None:
            p.grad[frozen] = 0.0
        backups.append(p.detach()[frozen].clone())
    optimizer.step()
    with torch.no_grad():
        for p, old in zip(params, backups):
            p[frozen] = old


def tile_networks(model, times: int):
    """A new ensemble holding ``times`` copies of every network of ``model``: E' = times * E, network
    ``r * E + e`` is a copy of network e (e.g. one copy per delay of a sweep). Parameters are copied, not shared."""
    check_int("times", times, 1)
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.data = p.data.repeat(times, *([1] * (p.dim() - 1)))
    return out


def concat_networks(models: Sequence):
    """One ensemble holding the networks of several ensembles of the same architecture and sizes, in order."""
    if not models:
        raise ValueError("concat_networks needs at least one model")
    out = copy.deepcopy(models[0])
    names = [n for n, _ in out.named_parameters()]
    with torch.no_grad():
        for name, p in out.named_parameters():
            parts = [dict(m.named_parameters())[name] for m in models]
            if any(q.shape[1:] != p.shape[1:] for q in parts):
                raise ValueError(f"cannot concatenate ensembles whose parameter {name!r} shapes differ")
            p.data = torch.cat([q.detach() for q in parts], dim=0)
    assert names == [n for n, _ in out.named_parameters()]
    return out


def tile_optimizer(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], times: int):
    """A new optimizer of the same class and settings over ``params``, the parameters of a ``tile_networks(model,
    times)`` copy, whose per-network state is ``times`` copies of ``optimizer``'s (state tensors shaped like their
    parameter are repeated along the network dimension; scalars such as Adam's step are copied) and whose parameter
    groups keep their own settings. So a tiled ensemble continues exactly as each original network would (e.g. one
    flossing Adam from preflossing into later episodes)."""
    check_int("times", times, 1)
    old = [p for group in optimizer.param_groups for p in group["params"]]
    if len(old) != len(params) or any(q.shape[1:] != p.shape[1:] or p.shape[0] != times * q.shape[0]
                                      for q, p in zip(old, params)):
        raise ValueError("params must be the tiled copies of the optimizer's parameters, in the same order")
    tiled_of = dict(zip(map(id, old), params))
    groups = [{**{key: copy.deepcopy(value) for key, value in group.items() if key != "params"},
               "params": [tiled_of[id(q)] for q in group["params"]]} for group in optimizer.param_groups]
    out = type(optimizer)(groups, **optimizer.defaults)  # each group's own settings (e.g. an lr a scheduler changed)
    for q, p in zip(old, params):
        for key, value in optimizer.state.get(q, {}).items():
            tiled = isinstance(value, torch.Tensor) and value.shape == q.shape
            out.state[p][key] = value.repeat(times, *([1] * (value.dim() - 1))) if tiled else \
                value.clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)
    return out
