"""The computations behind the paper's figures: one function per experiment, returning plain dicts of CPU tensors.

Each function is the single call a figure notebook makes (wrapped in ``floss_core.cache.cached``); it takes plain
keyword arguments (the notebook's parameters) and vectorizes seeds and conditions into ensembles:

    flossing_sweep      figures 1 and 2: exponents during flossing from several gains and several k, spectra,
                        gradient-norm profiles and long-term-Jacobian singular values before and after.
    delay_sweep         figures 3 and 4: training on a delayed task over a grid of delays, for no flossing,
                        flossing before training, and flossing before and during training.
    complexity_sweep    figure 5: final accuracy vs the number of flossed exponents k for tasks of several dimensions.

Network index conventions are documented per function (e.g. ``e = d * n_networks + s`` for delay d, seed s).
"""
from __future__ import annotations

import copy

import torch

from .config import FlossConfig, FlossSchedule, ModelConfig, TrainConfig
from .diagnostics import gradient_norm_profile, long_term_jacobian_singular_values
from .ensemble import concat_networks, tile_networks
from .flossing import floss
from .lyapunov import lyapunov_spectrum
from .tasks import TaskConfig
from .training import train

__all__ = ["flossing_sweep", "delay_sweep", "complexity_sweep", "summarize_delay_sweep", "final_accuracy", "running_mean",
           "CONDITIONS"]

CONDITIONS = ("none", "pre", "pre+during")


def _gen(seed: int) -> torch.Generator:
    """A CPU generator: draws are made on the CPU and moved, so the numbers do not depend on the device."""
    return torch.Generator().manual_seed(seed)


def _input_drive(E: int, batch: int, T: int, kind: str, generator, dtype, device) -> torch.Tensor:
    """(E, batch, T, 1) flossing-like inputs: random +-1 bits ("task") or zeros ("zero")."""
    if kind == "zero":
        return torch.zeros(E, batch, T, 1, dtype=dtype, device=device)
    return (2 * torch.randint(0, 2, (E, batch, T, 1), generator=generator) - 1).to(dtype=dtype, device=device)


def flossing_sweep(*, n_hidden: int = 80, gains=(0.5, 1.0, 2.0), ks=(1, 16), n_networks: int = 6,
                   floss_steps: int = 500, gradient: str = "detached", lr: float = 1e-3, batch: int = 4,
                   seq_len: int = 100, n_transient: int = 30, input: str = "zero", spectrum_k: int = 32,
                   spectrum_steps: int = 2000, horizon: int = 300, sv_every: int = 5, seed: int = 0,
                   device: str = "cpu", dtype: str = "float32", progress: bool = True) -> dict:
    """Flossing the first k exponents of ensembles started at several gains (figures 1 and 2).

    For every k in ``ks``: one ensemble of E = len(gains) * n_networks networks (network ``e = i * n_networks + s``
    has gain ``gains[i]``, seed s; the same initial networks for every k) is flossed for ``floss_steps`` steps.

    Returns a dict with (lists "after" are aligned with ``ks``)
        gains (E,), ks, floss_exponents [(floss_steps, E, k) per k] measured during flossing,
        spectrum_before (E, spectrum_k), spectrum_after [(E, spectrum_k) per k] over long trajectories,
        profile_before (E, horizon + 1), profile_after [... per k]: gradient norm of a late loss w.r.t. the state
            tau steps earlier (float64), and
        log_sv_before (E, horizon // sv_every, spectrum_k), log_sv_after [... per k]: log singular values of the
            long-term Jacobian every sv_every steps (float64), sv_times; failed [(E,) per k].
    All trajectories are driven like the flossing (``input``: "zero" or "task"), from the same random starts.
    """
    gains = [float(g) for g in gains]
    E = len(gains) * n_networks
    gen = _gen(seed)
    base = ModelConfig(n_hidden=n_hidden, gain=1.0, dtype=dtype).build(1, 1, n_networks=E, generator=gen,
                                                                     device=device)
    gain_of = torch.tensor(gains).repeat_interleave(n_networks)  # (E,)
    with torch.no_grad():
        base.W.mul_(gain_of.to(base.W).view(E, 1, 1))
    spectrum_k = min(spectrum_k, n_hidden)
    f64 = torch.float64
    drive_spec = _input_drive(E, 4, spectrum_steps, input, _gen(seed + 1), base.W.dtype, device)
    drive_long = _input_drive(E, 8, horizon + 1, input, _gen(seed + 2), f64, device)
    drive_sv = drive_long[:, :1, :horizon]

    def measure(model):
        m64 = copy.deepcopy(model).to(f64)
        with torch.no_grad():
            spec = lyapunov_spectrum(model, drive_spec, spectrum_k, generator=_gen(seed + 3)).cpu()
            log_sv = long_term_jacobian_singular_values(m64, drive_sv, spectrum_k, t_ons=sv_every,
                                                        generator=_gen(seed + 4))[:, 0].cpu()
        profile = gradient_norm_profile(m64, drive_long, generator=_gen(seed + 5)).cpu()
        return spec, profile, log_sv

    out = {"gains": gain_of, "ks": list(ks), "floss_exponents": [], "spectrum_after": [], "profile_after": [],
           "log_sv_after": [], "failed": [], "sv_times": torch.arange(sv_every, horizon + 1, sv_every)}
    out["spectrum_before"], out["profile_before"], out["log_sv_before"] = measure(base)
    for k in ks:
        model = copy.deepcopy(base)
        cfg = FlossConfig(k=k, gradient=gradient, lr=lr, batch=batch, seq_len=seq_len, n_transient=n_transient,
                          input=input)
        res = floss(model, floss_steps, config=cfg, generator=_gen(seed + 10 + k), progress=progress)
        spec, profile, log_sv = measure(model)
        for key, value in (("floss_exponents", res.exponents), ("spectrum_after", spec), ("profile_after", profile),
                           ("log_sv_after", log_sv), ("failed", res.failed)):
            out[key].append(value)
    return out


def _train_configs(train_steps, lr, clip, record_every, record_k):
    return TrainConfig(n_steps=train_steps, lr=lr, clip=clip, record_every=record_every, record_k=record_k)


def delay_sweep(*, tasks=("copy", "xor"), delays=(10, 20, 30, 40), conditions=CONDITIONS, n_networks: int = 5,
                cell: str = "tanh", n_hidden: int = 80, gain: float = 1.0, train_steps: int = 3001, batch: int = 16, seq_len: int = 300,
                lr: float = 1e-3, clip: float = 0.03, floss_k: int = 75, floss_seq_len: int = 55,
                floss_transient: int = 16, floss_batch: int = 1, floss_gradient: str = "full",
                pre_steps: int = 500, every: int = 100, episode_steps: int = 500, max_episodes: int = 2,
                record_every: int = 100, record_k: int = 8, seed: int = 0, device: str = "cpu",
                dtype: str = "float32", progress: bool = True) -> dict:
    """Training on delayed tasks over a grid of delays for each flossing condition (figures 3 and 4).

    ``cell``: "tanh" (the paper's vanilla RNN), "lstm" or "gru" (figure 6).
    Conditions: "none" (plain training), "pre" (``pre_steps`` flossing steps before training), "pre+during" (also
    ``max_episodes`` episodes of ``episode_steps`` flossing steps every ``every`` training steps). The n_networks
    initial networks (seeds) are the same for every task, delay and condition; preflossing is done once per seed and
    the flossed networks are copied to every task and delay. Conditions without flossing episodes ("none", "pre")
    train together as one ensemble, "pre+during" as another: network ``e = (c * n_tasks + j) * D * S + d * S + s``.

    Returns {"tasks", "delays", "conditions", and per condition c: c -> {"accuracy", "loss", "grad_norm":
    (train_steps, n_tasks, D, S), "exponents": (n_records, n_tasks, D, S, record_k), "exponent_steps",
    "failed": (n_tasks, D, S)}} plus "pre_floss_exponents" (pre_steps, S, floss_k) measured during preflossing.
    """
    for c in conditions:
        if c not in CONDITIONS:
            raise ValueError(f"unknown condition {c!r}; valid: {CONDITIONS}")
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    J, D, S = len(tasks), len(delays), n_networks
    grid = [TaskConfig(name=t, delay=d, seq_len=seq_len, batch=batch) for t in tasks for d in delays for _ in range(S)]
    for t in set(grid):  # fail before any flossing on impossible settings (e.g. an odd delay for XOR)
        t.sample(1, _gen(0))
    base = ModelConfig(cell=cell, n_hidden=n_hidden, gain=gain, dtype=dtype).build(
        1, 1, n_networks=S, generator=_gen(seed), device=device)
    fcfg = FlossConfig(k=floss_k, seq_len=floss_seq_len, n_transient=floss_transient, batch=floss_batch, lr=lr,
                       gradient=floss_gradient)
    out = {"tasks": tasks, "delays": list(delays), "conditions": list(conditions)}
    pre = None
    if any(c != "none" for c in conditions) and pre_steps:
        pre = copy.deepcopy(base)
        res = floss(pre, pre_steps, config=fcfg, generator=_gen(seed + 1), progress=progress)
        out["pre_floss_exponents"] = res.exponents
    tcfg = _train_configs(train_steps, lr, clip, record_every, record_k)
    groups = [[c for c in conditions if c != "pre+during"], [c for c in conditions if c == "pre+during"]]
    for group in groups:
        if not group:
            continue
        model = concat_networks([tile_networks(base if c == "none" or pre is None else pre, J * D) for c in group])
        sched = FlossSchedule.none() if group[0] != "pre+during" else FlossSchedule(
            pre_steps=0, every=every, episode_steps=episode_steps, max_episodes=max_episodes)
        h = train(model, grid * len(group), config=tcfg, floss_config=fcfg, schedule=sched,
                  generator=_gen(seed + 2), progress=progress)
        n, r = h.accuracy.shape[0], len(h.exponent_steps)
        for i, c in enumerate(group):
            sl = slice(i * J * D * S, (i + 1) * J * D * S)
            out[c] = {
                "accuracy": h.accuracy[:, sl].reshape(n, J, D, S), "loss": h.loss[:, sl].reshape(n, J, D, S),
                "grad_norm": h.grad_norm[:, sl].reshape(n, J, D, S),
                "exponents": h.exponents[:, sl].reshape(r, J, D, S, -1), "exponent_steps": h.exponent_steps,
                "failed": h.failed[sl].reshape(J, D, S),
            }
    return out


def complexity_sweep(*, task: str = "copy", channels=(1, 2, 4), ks=(0, 1, 4, 16, 64), delay: int = 20,
                     n_networks: int = 5, n_hidden: int = 80, gain: float = 1.0, train_steps: int = 3001,
                     batch: int = 16, seq_len: int = 300, lr: float = 1e-3, clip: float = 0.03,
                     floss_seq_len: int = 55, floss_transient: int = 16, floss_batch: int = 1,
                     floss_gradient: str = "full", pre_steps: int = 500, seed: int = 0, device: str = "cpu",
                     dtype: str = "float32", progress: bool = True) -> dict:
    """Final accuracy vs the number of preflossed exponents k, for tasks on several independent channels (figure 5).

    For each number of channels C: n_networks initial networks with C inputs and C outputs; for each k in ``ks``
    (0: no flossing) a copy preflossed with that k; all (k, seed) networks then train together as one ensemble,
    network ``e = j * n_networks + s`` for k = ks[j].

    Returns {"channels", "ks", "accuracy": [(train_steps, len(ks), S) per C], "failed": [(len(ks), S) per C]}.
    """
    S = n_networks
    out = {"channels": list(channels), "ks": list(ks), "task": task, "delay": delay, "accuracy": [], "failed": []}
    for C in channels:
        gen = _gen(seed + 100 * C)
        base = ModelConfig(n_hidden=n_hidden, gain=gain, dtype=dtype).build(C, C, n_networks=S, generator=gen,
                                                                           device=device)
        members = []
        for k in ks:
            model = copy.deepcopy(base)
            if k:
                fcfg = FlossConfig(k=min(k, n_hidden), seq_len=floss_seq_len, n_transient=floss_transient,
                                   batch=floss_batch, lr=lr, gradient=floss_gradient)
                floss(model, pre_steps, config=fcfg, generator=_gen(seed + 1), progress=progress)
            members.append(model)
        model = concat_networks(members)
        tcfg = _train_configs(train_steps, lr, clip, 0, None)
        h = train(model, TaskConfig(name=task, delay=delay, seq_len=seq_len, batch=batch, n_channels=C),
                  config=tcfg, schedule=FlossSchedule.none(), generator=_gen(seed + 2), progress=progress)
        n = h.accuracy.shape[0]
        out["accuracy"].append(h.accuracy.reshape(n, len(ks), S))
        out["failed"].append(h.failed.reshape(len(ks), S))
    return out


def running_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Running mean over the first (step) dimension: (n, ...) -> (n - window + 1, ...)."""
    if window < 1 or window > x.shape[0]:
        raise ValueError(f"window must be in [1, {x.shape[0]}], got {window}")
    c = torch.cat([torch.zeros_like(x[:1]), x.cumsum(0)])
    return (c[window:] - c[:-window]) / window


def final_accuracy(accuracy: torch.Tensor, last: int = 100) -> torch.Tensor:
    """Mean accuracy over the last ``last`` training steps: (steps, ...) -> (...)."""
    return accuracy[-min(last, accuracy.shape[0]):].mean(0)


def summarize_delay_sweep(result: dict, task: str, *, threshold: float = 0.9, window: int = 50,
                          compare=None) -> dict:
    """Success, steps to criterion and final accuracy per condition for one task of a ``delay_sweep`` result.

    Success: the running mean (``window`` steps) of the test accuracy reaches ``threshold`` and stays above it until
    the end (``diagnostics.steps_to_criterion``); steps_to_criterion counts training steps (-1: never).
    Returns {"success", "steps_to_criterion", "final_accuracy": {condition: (D, S)}, "smoothed_accuracy":
    {condition: (steps - window + 1, D, S)}, "hardest_informative_delay_index": the delay where the success rates
    of the conditions in ``compare`` (default: all) differ most (ties: the longest such delay)}."""
    from .diagnostics import steps_to_criterion

    if task not in result["tasks"]:
        raise ValueError(f"task {task!r} is not in this sweep: {result['tasks']}")
    j = result["tasks"].index(task)
    out = {"success": {}, "steps_to_criterion": {}, "final_accuracy": {}, "smoothed_accuracy": {}}
    for c in result["conditions"]:
        acc = result[c]["accuracy"][:, j]  # (steps, D, S)
        n, D, S = acc.shape
        w = min(window, n)
        sm = running_mean(acc, w)  # (n - w + 1, D, S)
        steps = steps_to_criterion(sm.reshape(sm.shape[0], D * S).T, threshold).reshape(D, S)
        steps = torch.where(steps >= 0, steps + w - 1, steps)
        out["success"][c] = steps >= 0
        out["steps_to_criterion"][c] = steps
        out["final_accuracy"][c] = final_accuracy(acc)
        out["smoothed_accuracy"][c] = sm
    rates = torch.stack([out["success"][c].float().mean(1) for c in (compare or result["conditions"])])  # (C, D)
    gap = rates.max(0).values - rates.min(0).values  # (D,)
    best = torch.nonzero(gap == gap.max()).flatten()
    out["hardest_informative_delay_index"] = int(best[-1])
    return out
