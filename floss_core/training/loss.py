"""The task loss of one training step: a fresh batch for every network, the networks run over it, masked binary
cross-entropy on the readout logits (averaged over each network's defined targets) and the accuracy of the signs.
Since every batch is fresh, the accuracy measured before the update is a test accuracy."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from ..cells.protocol import unroll
from ..checks import check_choice
from ..tasks import TaskBatch, TaskConfig
from .gated_bptt import gated_task_loss, supports_gated_bptt
from .tanh_bptt import check_batch, check_checkpoint, supports_tanh_bptt, tanh_task_loss

BPTT_METHODS = ("fast", "autograd")

__all__ = ["rollout", "sample_task", "task_loss", "per_network_tasks", "check_checkpoint"]


def rollout(model, inputs: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """States of every step: inputs (E, B, T, I), h0 (E, B, S) -> (E, B, T, S) (the state after each input)."""
    return torch.stack(unroll(model, inputs, h0), dim=2)  # (E, B, T, S)


def per_network_tasks(task, n_networks: int) -> list:
    """A TaskConfig, or a sequence of one per network (same seq_len, batch and channels), as a list of E."""
    tasks = [task] * n_networks if isinstance(task, TaskConfig) else list(task)
    if len(tasks) != n_networks or not all(isinstance(t, TaskConfig) for t in tasks):
        raise ValueError(f"task must be a TaskConfig or a sequence of {n_networks} TaskConfigs (one per network)")
    shapes = {(t.seq_len, t.batch, t.n_inputs, t.n_outputs) for t in tasks}
    if len(shapes) > 1:
        raise ValueError(f"per-network tasks must share seq_len, batch and their input and output channels, got "
                         f"(seq_len, batch, inputs, outputs) = {sorted(shapes)}")
    return tasks


def sample_task(task, model, generator=None) -> TaskBatch:
    """A fresh task batch for every network.

    ``task`` is a TaskConfig, or a sequence of E TaskConfigs (e.g. one delay per network, sharing seq_len, batch and
    channels). ``generator`` is one torch.Generator (networks with the same task config share one draw, in network
    order) or a list of one per network (network e's batch then depends on generator e only)."""
    E = model.n_networks
    tasks = per_network_tasks(task, E)
    p = next(model.parameters())

    def one(t, n, g):  # encoded in the model's precision (a float64 model gets exact inputs, not float32 ones)
        return t.sample(n, g, dtype=p.dtype)

    if isinstance(generator, (list, tuple)):
        if len(generator) != E:
            raise ValueError(f"got {len(generator)} generators for an ensemble of {E} networks")
        parts, order = [one(t, 1, g) for t, g in zip(tasks, generator)], list(range(E))
    else:
        groups = {}
        for e, t in enumerate(tasks):
            groups.setdefault(t, []).append(e)
        parts = [one(t, len(idx), generator) for t, idx in groups.items()]
        order = [e for idx in groups.values() for e in idx]
    inv = torch.empty(E, dtype=torch.long)
    inv[torch.tensor(order)] = torch.arange(E)

    def gather(name, **to):
        return torch.cat([getattr(b, name) for b in parts])[inv].to(device=p.device, **to)

    return TaskBatch(inputs=gather("inputs", dtype=p.dtype), targets=gather("targets", dtype=p.dtype),
                     mask=gather("mask", dtype=p.dtype), bits=gather("bits"))


def task_loss(model, batch: TaskBatch, h0: torch.Tensor, *, checkpoint: int = 0, method: str = "fast"):
    """Masked BCE on the logits and accuracy of correct signs, per network: (E,), (E,).

    ``checkpoint`` > 0: back-propagation through time in segments of that many steps, each recomputed in the
    backward: memory held for the backward ~T / checkpoint states instead of a few per step, for one more forward
    pass; the same loss and gradients up to summation order.
    ``method``: "fast" (default: a hand-written BPTT, ``training.tanh_bptt`` for a TanhRNN and
    ``training.gated_bptt`` for an LSTM or GRU, each in one autograd node; autograd for other cells) or "autograd"
    (autograd through every step, ``torch.utils.checkpoint`` for segments); the same loss and gradients up to
    roundoff."""
    check_choice("method", method, BPTT_METHODS)
    check_batch(model, batch, h0)
    check_checkpoint(checkpoint, "checkpoint")
    if method == "fast" and supports_tanh_bptt(model):
        return tanh_task_loss(model, batch, h0, checkpoint=checkpoint)
    if method == "fast" and supports_gated_bptt(model):
        return gated_task_loss(model, batch, h0, checkpoint=checkpoint)
    n = batch.mask.flatten(1).sum(1)  # (E,)
    T = batch.inputs.shape[2]
    if not checkpoint or checkpoint >= T or not torch.is_grad_enabled():
        _, bce, correct = _segment_loss(model, h0, batch.inputs, batch.targets, batch.mask)
    else:
        h, bce, correct = h0, 0, 0
        for t0 in range(0, T, checkpoint):
            seg = slice(t0, t0 + checkpoint)
            h, b, c = torch.utils.checkpoint.checkpoint(
                _segment_loss, model, h, batch.inputs[:, :, seg], batch.targets[:, :, seg], batch.mask[:, :, seg],
                use_reentrant=False)
            bce, correct = bce + b, correct + c
    return bce / n, (correct / n).detach()


def _segment_loss(model, h0, inputs, targets, mask):
    """Over a stretch of steps: (last state (E, B, S), masked BCE sum (E,), number of correct signs (E,))."""
    states = rollout(model, inputs, h0)  # (E, B, T, S)
    E, B, T, S = states.shape
    logits = model.readout(states.reshape(E, B * T, S)).reshape(E, B, T, -1)  # (E, B, T, O)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # (E, B, T, O)
    correct = ((logits > 0) == (targets > 0.5)).to(logits.dtype)
    last = states[:, :, -1].clone()  # its own memory: a view would keep the segment's states alive
    return last, (bce * mask).flatten(1).sum(1), (correct * mask).flatten(1).sum(1).detach()
