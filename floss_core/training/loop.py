"""Training an ensemble by backpropagation through time, with gradient flossing before and/or during training.

One training step: a fresh batch of the task for every network and its masked BCE (``training.loss``),
back-propagation through time, the gradient of each parameter array of each network clipped to a norm, and an Adam
step. Losses are summed over networks, so the E networks train independently in one batched computation,
each with its own Adam state; a network whose loss or gradient stops being finite is frozen and recorded as failed.

Since every batch is fresh, the accuracy measured on it before the update is a test accuracy.

Flossing schedules (``FlossSchedule``): ``pre_steps`` flossing steps before training; every ``every`` training steps
an episode of ``episode_steps`` flossing steps, at most ``max_episodes`` times; and/or the flossing loss added to the
task loss at every step with ``weight``.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..ensemble import clip_per_network_, frozen_step, grad_norm_per_network, nonfinite_networks
from ..flossing import FlossConfig, FlossResult, check_floss_k, floss, flossed_parameters, flossing_loss, \
    flossing_spectrum
from ..checks import check_int
from ..rng import check_generator
from ..tasks import TaskConfig
from .config import FlossSchedule, TrainConfig
from .loss import check_checkpoint, per_network_tasks, sample_task, task_loss

__all__ = ["train", "History", "TrainState"]


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
    state: where a ``train(..., stop=s)`` call stopped (TrainState), None otherwise.
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
    state: TrainState | None = None


@dataclass
class TrainState:
    """Where ``train(..., stop=s)`` stopped, to go on with ``train(..., resume=state)``, in this process or another,
    with the same numbers as one uninterrupted call: the next training step, the states of both Adams and of every
    generator, the failures and the records so far. The parameters are the model's own: resume on a model that holds
    the stopped one's (the same model, or a copy). Resuming never changes the state (it may be resumed several
    times, e.g. under two schedules that agree up to ``step``: conditions that share a prefix)."""
    step: int  # the next training step
    optimizer: dict  # state_dict of the training Adam
    floss_optimizer: dict | None  # state_dict of the flossing Adam (None: none made yet)
    generators: list  # get_state() of each generator
    failed: torch.Tensor  # (E,)
    failed_step: torch.Tensor  # (E,)
    records: dict  # loss, accuracy, grad_norm: [(E,) per step]; exponent_steps; exponents: [(E, k) per record]
    pre_floss: FlossResult | None
    episodes: list


def _generators(generator) -> list:
    return list(generator) if isinstance(generator, (list, tuple)) else [generator]


def _check_resumable(opt, params) -> None:
    """A TrainState restores the flossing optimizer as one Adam over the flossed parameters in their order."""
    group = opt.param_groups[0]["params"] if len(opt.param_groups) == 1 else []
    if type(opt) is not torch.optim.Adam or [id(p) for p in group] != [id(p) for p in params]:
        raise ValueError("stop needs a floss_optimizer that is one torch.optim.Adam over the flossed parameters in "
                         "FlossConfig.params order (a TrainState restores it as such), got "
                         f"{type(opt).__name__} with {len(opt.param_groups)} parameter group(s)")


def _check_resume(stop, resume, generator, floss_optimizer, n_steps: int, E: int) -> int:
    """The first training step; ValueError naming the argument where stop or resume cannot be honoured."""
    start = 0
    if resume is not None:
        if not isinstance(resume, TrainState):
            raise ValueError(f"resume must be a TrainState (History.state of a train(..., stop=...) call), "
                             f"got {type(resume).__name__}")
        if resume.failed.shape != (E,):
            raise ValueError(f"resume holds {resume.failed.shape[0]} networks but the model has {E}")
        if floss_optimizer is not None:
            raise ValueError("give floss_optimizer or resume, not both: resume carries the flossing Adam")
        start = check_int("resume.step", resume.step, 0, n_steps - 1, note=" (TrainConfig.n_steps - 1)")
    if stop is not None:
        check_int("stop", stop, start + 1, n_steps, note=f" (the first step{' after resume' if resume else ''} + 1 "
                                                          "to TrainConfig.n_steps)")
    if (stop is not None or resume is not None) and generator is None:
        raise ValueError("stop and resume need explicit generators (generator=None draws from torch's global one, "
                         "whose state a TrainState cannot carry)")
    if resume is not None and len(resume.generators) != len(_generators(generator)):
        raise ValueError(f"resume holds {len(resume.generators)} generator states but {len(_generators(generator))} "
                         "generator(s) were given")
    return start


def _record_exponents(model, floss_config: FlossConfig, k: int, generator):
    with torch.no_grad():
        return flossing_spectrum(model, floss_config, generator=generator, k=k).detach().cpu()  # (E, k)


def train(model, task: TaskConfig, *, config: TrainConfig = TrainConfig(), floss_config: FlossConfig = FlossConfig(),
          schedule: FlossSchedule = FlossSchedule(), generator=None, floss_optimizer=None,
          progress: bool = True, stop: int | None = None, resume: TrainState | None = None) -> History:
    """Train every network of ``model`` on ``task``, in place, with the flossing ``schedule``.

    Main arguments:
        model: a TanhRNN ensemble (or any cell of the protocol with ``readout`` and ``train_state``).
        task: TaskConfig (name, delay, seq_len, batch, channels), or a sequence of E of them, one per network
            (e.g. a delay grid as one ensemble; they must share seq_len, batch and channels).

    Other arguments:
        config: TrainConfig (steps, lr, clipping, trainable h0, when to record exponents).
        floss_config: FlossConfig used by every flossing step and for recording exponents; its "task" inputs are
            encoded like the task's (its own ``encoding`` is replaced by the task's).
        schedule: FlossSchedule (default: the author's run, preflossing and two episodes during training;
            ``FlossSchedule.none()`` for plain training, ``FlossSchedule.pre()`` for preflossing only).
        generator: torch.Generator, or a list of one per network (then network e's data depend on generator e only).
        floss_optimizer: an optimizer over the flossed parameters (``FlossConfig.params``) to continue, e.g. the one
            that preflossed these networks (the author keeps one flossing Adam from preflossing on); default: a new
            Adam with ``FlossConfig.lr`` at the first flossing step.
        progress: tqdm progress bar; False for silence.
        stop: end before this training step (its History then has ``state``, a TrainState); default n_steps.
        resume: go on from a TrainState (preflossing, if any, happened in the call that stopped): the records so far
            are part of the returned History. stop and resume need explicit generators.
    """
    E = model.n_networks
    for name, value, cls in (("config", config, TrainConfig), ("floss_config", floss_config, FlossConfig),
                             ("schedule", schedule, FlossSchedule)):
        if not isinstance(value, cls):
            raise ValueError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")
    check_checkpoint(config.checkpoint, "TrainConfig.checkpoint")  # before any training step
    check_generator(generator, E)
    start = _check_resume(stop, resume, generator, floss_optimizer, config.n_steps, E)
    tasks = per_network_tasks(task, E)
    if tasks[0].n_inputs != model.input_size or tasks[0].n_outputs != model.output_size:
        raise ValueError(f"task {tasks[0].name!r} has {tasks[0].n_inputs} input and {tasks[0].n_outputs} target "
                         f"channel(s) but the model has {model.input_size} input(s) and {model.output_size} "
                         "output(s)")
    if len({t.encoding for t in tasks}) > 1:
        raise ValueError("per-network tasks must share their InputEncoding (flossing inputs are drawn like theirs)")
    floss_config = dataclasses.replace(floss_config, encoding=tasks[0].encoding)  # flossing sees the task's inputs
    params = [p for name, p in model.named_parameters() if config.train_h0 or name != "h0"]
    opt = torch.optim.Adam(params, lr=config.lr)
    floss_opt = floss_optimizer
    floss_params = flossed_parameters(model, floss_config)
    if floss_opt is not None and {id(p) for g in floss_opt.param_groups for p in g["params"]} != \
            {id(p) for p in floss_params}:
        raise ValueError("floss_optimizer must optimize exactly the flossed parameters (FlossConfig.params) of "
                         "this model")
    if stop is not None and floss_opt is not None:
        _check_resumable(floss_opt, floss_params)
    if schedule.flosses:  # flossing happens: k must fit (else k only sets how many exponents are recorded)
        check_floss_k(model, floss_config)
    record_k = config.recorded_k(floss_config.k, model.state_size)
    failed = torch.zeros(E, dtype=torch.bool, device=params[0].device)
    failed_step = torch.full((E,), -1, dtype=torch.long)

    pre = None
    losses, accs, gnorms, exp_steps, exps, episodes = [], [], [], [], [], []
    if resume is not None:  # copies: resuming leaves the state as it was
        opt.load_state_dict(copy.deepcopy(resume.optimizer))
        if resume.floss_optimizer is not None:
            floss_opt = torch.optim.Adam(floss_params, lr=floss_config.lr)
            floss_opt.load_state_dict(copy.deepcopy(resume.floss_optimizer))
        for g, state in zip(_generators(generator), resume.generators):
            g.set_state(state)
        failed = resume.failed.to(failed.device, copy=True)
        failed_step = resume.failed_step.clone()
        r = resume.records
        losses, accs, gnorms = list(r["loss"]), list(r["accuracy"]), list(r["grad_norm"])
        exp_steps, exps, episodes = list(r["exponent_steps"]), list(r["exponents"]), list(resume.episodes)
        pre = resume.pre_floss
    elif schedule.pre_steps:
        floss_opt = floss_opt or torch.optim.Adam(floss_params, lr=floss_config.lr)
        pre = floss(model, schedule.pre_steps, config=floss_config, generator=generator, optimizer=floss_opt,
                    failed=failed, progress=progress)
        failed_step[pre.failed] = -2

    end = config.n_steps if stop is None else stop
    for step in tqdm(range(start, end), initial=start, total=config.n_steps, disable=not progress, desc="training"):
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
        loss, acc = task_loss(model, batch, h0, checkpoint=config.checkpoint, method=config.bptt)  # (E,), (E,)
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

    state = None
    if stop is not None:
        state = TrainState(
            step=end, optimizer=copy.deepcopy(opt.state_dict()),
            floss_optimizer=None if floss_opt is None else copy.deepcopy(floss_opt.state_dict()),
            generators=[g.get_state() for g in _generators(generator)], failed=failed.clone(),
            failed_step=failed_step.clone(), pre_floss=pre, episodes=list(episodes),
            records={"loss": list(losses), "accuracy": list(accs), "grad_norm": list(gnorms),
                     "exponent_steps": list(exp_steps), "exponents": list(exps)})
    p = params[0]
    empty = torch.empty(0, E, dtype=p.dtype)
    return History(
        loss=torch.stack(losses) if losses else empty,
        accuracy=torch.stack(accs) if accs else empty,
        grad_norm=torch.stack(gnorms) if gnorms else empty,
        exponent_steps=exp_steps,
        exponents=torch.stack(exps) if exps else torch.empty(0, E, record_k, dtype=p.dtype),
        failed=failed.cpu(), failed_step=failed_step, pre_floss=pre, episodes=episodes, state=state,
    )
