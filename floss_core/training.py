"""Training an ensemble by backpropagation through time, with gradient flossing before and/or during training.

One training step: draw a fresh batch of the task for every network, run the networks over the sequence, take the
masked binary cross-entropy between the readout logits and the targets (averaged over the defined targets of each
network), back-propagate through time, clip the gradient of each parameter array of each network to a norm, and take
an Adam step. Losses are summed over networks, so the E networks train independently in one batched computation,
each with its own Adam state; a network whose loss or gradient stops being finite is frozen and recorded as failed.

Since every batch is fresh, the accuracy measured on it before the update is a test accuracy.

Flossing schedules (``FlossSchedule``): ``pre_steps`` flossing steps before training; every ``every`` training steps
an episode of ``episode_steps`` flossing steps, at most ``max_episodes`` times; and/or the flossing loss added to the
task loss at every step with ``weight``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from tqdm.auto import tqdm

from .config import FlossConfig, FlossSchedule, TrainConfig
from .ensemble import clip_per_network_, frozen_step, grad_norm_per_network, nonfinite_networks
from .flossing import FlossResult, floss, flossing_loss, flossing_spectrum
from .tasks import TaskBatch, TaskConfig, make_batch

__all__ = ["train", "History", "rollout", "task_loss", "sample_task"]


def rollout(model, inputs: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """States of every step: inputs (E, B, T, I), h0 (E, B, S) -> (E, B, T, S) (the state after each input)."""
    h, states = h0, []
    for x in inputs.unbind(2):  # unbind once: indexing inside the loop makes the backward quadratic
        h = model.step(h, x)  # (E, B, S)
        states.append(h)
    return torch.stack(states, dim=2)  # (E, B, T, S)


def _per_network_tasks(task, n_networks: int) -> list:
    """A TaskConfig, or a sequence of one per network (same seq_len, batch and channels), as a list of E."""
    tasks = [task] * n_networks if isinstance(task, TaskConfig) else list(task)
    if len(tasks) != n_networks or not all(isinstance(t, TaskConfig) for t in tasks):
        raise ValueError(f"task must be a TaskConfig or a sequence of {n_networks} TaskConfigs (one per network)")
    shapes = {(t.seq_len, t.batch, t.n_channels) for t in tasks}
    if len(shapes) > 1:
        raise ValueError(f"per-network tasks must share seq_len, batch and n_channels, got {sorted(shapes)}")
    return tasks


def sample_task(task, model, generator=None) -> TaskBatch:
    """A fresh task batch for every network.

    ``task`` is a TaskConfig, or a sequence of E TaskConfigs (e.g. one delay per network, sharing seq_len, batch and
    channels). ``generator`` is one torch.Generator (networks with the same task config share one draw, in network
    order) or a list of one per network (network e's batch then depends on generator e only)."""
    E = model.n_networks
    tasks = _per_network_tasks(task, E)
    p = next(model.parameters())

    def one(t, n, g):
        return make_batch(t.name, delay=t.delay, seq_len=t.seq_len, batch=t.batch, n_networks=n,
                          n_channels=t.n_channels, n_bits=t.n_bits, generator=g)

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


def task_loss(model, batch: TaskBatch, h0: torch.Tensor, *, checkpoint: int = 0):
    """Masked BCE on the logits and accuracy of correct signs, per network: (E,), (E,).

    ``checkpoint`` > 0: back-propagation through time in segments of that many steps, each recomputed in the
    backward (``torch.utils.checkpoint``): memory held for the backward ~T / checkpoint states instead of a few per
    step, for one more forward pass; the same loss and gradients up to summation order."""
    if batch.inputs.shape[-1] != model.input_size or batch.targets.shape[-1] != model.output_size:
        raise ValueError(f"the task has {batch.inputs.shape[-1]} input and {batch.targets.shape[-1]} target "
                         f"channels but the model has {model.input_size} inputs and {model.output_size} outputs")
    _check_checkpoint(checkpoint, "checkpoint")
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


def _check_checkpoint(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0 (segment length in steps, 0: off), got {value!r}")


def _segment_loss(model, h0, inputs, targets, mask):
    """Over a stretch of steps: (last state (E, B, S), masked BCE sum (E,), number of correct signs (E,))."""
    states = rollout(model, inputs, h0)  # (E, B, T, S)
    E, B, T, S = states.shape
    logits = model.readout(states.reshape(E, B * T, S)).reshape(E, B, T, -1)  # (E, B, T, O)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # (E, B, T, O)
    correct = ((logits > 0) == (targets > 0.5)).to(logits.dtype)
    last = states[:, :, -1].clone()  # its own memory: a view would keep the segment's states alive
    return last, (bce * mask).flatten(1).sum(1), (correct * mask).flatten(1).sum(1).detach()


@dataclass
class History:
    """Per-step records of ``train`` (CPU tensors).

    loss, accuracy, grad_norm: (n_steps, E), measured on each step's fresh batch before the update; grad_norm is the
        gradient norm of each network's training loss (task loss, plus the weighted flossing loss when the schedule
        has a weight) before clipping.
    exponent_steps: the training steps at which exponents were recorded; exponents: (len(exponent_steps), E, k).
    failed: (E,) networks frozen because their loss or gradient stopped being finite; failed_step: (E,) the training
        step where that happened (-1: never; -2: during preflossing).
    pre_floss: what preflossing did (None without it); episodes: [(step, FlossResult)] of flossing during training.
    """
    loss: torch.Tensor
    accuracy: torch.Tensor
    grad_norm: torch.Tensor
    exponent_steps: list
    exponents: torch.Tensor
    failed: torch.Tensor
    failed_step: torch.Tensor
    pre_floss: FlossResult | None = None
    episodes: list = field(default_factory=list)


def _record_exponents(model, floss_config: FlossConfig, k: int, generator):
    with torch.no_grad():
        return flossing_spectrum(model, floss_config, generator=generator, k=k).detach().cpu()  # (E, k)


def train(model, task: TaskConfig, *, config: TrainConfig = TrainConfig(), floss_config: FlossConfig = FlossConfig(),
          schedule: FlossSchedule = FlossSchedule(), generator=None, progress: bool = True) -> History:
    """Train every network of ``model`` on ``task``, in place, with the flossing ``schedule``.

    Main arguments:
        model: a TanhRNN ensemble (or any cell of the protocol with ``readout`` and ``train_state``).
        task: TaskConfig (name, delay, seq_len, batch, channels), or a sequence of E of them, one per network
            (e.g. a delay grid as one ensemble; they must share seq_len, batch and channels).

    Other arguments:
        config: TrainConfig (steps, lr, clipping, trainable h0, when to record exponents).
        floss_config: FlossConfig used by every flossing step and for recording exponents.
        schedule: FlossSchedule (default: the author's run, preflossing and two episodes during training;
            ``FlossSchedule.none()`` for plain training, ``FlossSchedule.pre()`` for preflossing only).
        generator: torch.Generator, or a list of one per network (then network e's data depend on generator e only).
        progress: tqdm progress bar; False for silence.
    """
    E = model.n_networks
    if isinstance(config.n_steps, bool) or not isinstance(config.n_steps, int) or config.n_steps < 0:
        raise ValueError(f"TrainConfig.n_steps must be an int >= 0, got {config.n_steps!r}")
    _check_checkpoint(config.checkpoint, "TrainConfig.checkpoint")  # before any training step
    tasks = _per_network_tasks(task, E)
    if tasks[0].n_channels != model.input_size or tasks[0].n_channels != model.output_size:
        raise ValueError(f"task {tasks[0].name!r} has {tasks[0].n_channels} channel(s) but the model has "
                         f"{model.input_size} input(s) and {model.output_size} output(s)")
    params = [p for name, p in model.named_parameters() if config.train_h0 or name != "h0"]
    opt = torch.optim.Adam(params, lr=config.lr)
    floss_opt = None
    floss_params = [getattr(model, n) for n in floss_config.params]
    failed = torch.zeros(E, dtype=torch.bool, device=params[0].device)
    failed_step = torch.full((E,), -1, dtype=torch.long)
    record_k = config.record_k or floss_config.k

    pre = None
    if schedule.pre_steps:
        floss_opt = torch.optim.Adam(floss_params, lr=floss_config.lr)
        pre = floss(model, schedule.pre_steps, config=floss_config, generator=generator, optimizer=floss_opt,
                    failed=failed, progress=progress)
        failed_step[pre.failed] = -2

    losses, accs, gnorms, exp_steps, exps, episodes = [], [], [], [], [], []
    for step in tqdm(range(config.n_steps), disable=not progress, desc="training"):
        if schedule.episode_at(step, len(episodes)):
            floss_opt = floss_opt or torch.optim.Adam(floss_params, lr=floss_config.lr)
            was = failed.clone()
            episodes.append((step, floss(model, schedule.episode_steps, config=floss_config, generator=generator,
                                         optimizer=floss_opt, failed=failed)))
            failed_step[(failed & ~was).cpu()] = step
        if config.record_every and (step % config.record_every == 0 or step == config.n_steps - 1):
            exp_steps.append(step)
            exps.append(_record_exponents(model, floss_config, record_k, generator))

        opt.zero_grad(set_to_none=True)
        batch = sample_task(task, model, generator)
        h0 = model.train_state(tasks[0].batch)
        loss, acc = task_loss(model, batch, h0, checkpoint=config.checkpoint)  # (E,), (E,)
        total = loss
        if schedule.weight:
            total = loss + schedule.weight * flossing_loss(flossing_spectrum(model, floss_config, generator=generator),
                                                           floss_config.target)
        total = torch.where(failed, torch.zeros_like(total), total)
        total.sum().backward()
        gnorms.append(grad_norm_per_network(params).cpu())
        was = failed.clone()
        failed |= nonfinite_networks(total, params)
        failed_step[(failed & ~was).cpu()] = step
        clip_per_network_(params, config.clip)
        frozen_step(opt, params, failed)
        losses.append(loss.detach().cpu())
        accs.append(acc.cpu())

    p = params[0]
    empty = torch.empty(0, E, dtype=p.dtype)
    return History(
        loss=torch.stack(losses) if losses else empty,
        accuracy=torch.stack(accs) if accs else empty,
        grad_norm=torch.stack(gnorms) if gnorms else empty,
        exponent_steps=exp_steps,
        exponents=torch.stack(exps) if exps else torch.empty(0, E, record_k, dtype=p.dtype),
        failed=failed.cpu(), failed_step=failed_step, pre_floss=pre, episodes=episodes,
    )
