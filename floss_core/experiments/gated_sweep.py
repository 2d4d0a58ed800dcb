"""Figure 6: preflossing LSTMs and GRUs, over the number of flossed exponents k and the gate-bias initialization,
with the gate statistics that show what flossing did to the gates.

Why k and the initialization matter for gated cells. Flossing k = S exponents of a gated cell to zero can reach
lambda = 0 by saturating its gates (an LSTM's forget gates go to 1 and its cell state |c| grows; a GRU's update
gates go to 1 and its state freezes) rather than by balancing the dynamics; a small k leaves the gates near 1/2.
And a plain LSTM with PyTorch's initialization (forget-gate bias ~0, f ~ 1/2) forgets in a few steps, so it is a weak
baseline; the usual remedy is a forget-gate bias of +1 (``ModelConfig.memory_bias``). ``GatedSweep`` crosses both.

Networks. For each cell, a *unit* is (memory bias, k, seed): the seed's initial network (the same weights for every
memory bias, which only adds to the gate's bias, and for every k), preflossed with k exponents (k = 0: not flossed).
Each unit trains on every task and delay, from the same batches for every memory bias and k (the training streams
are named "<task>/d<delay>/s<seed>", as in ``delay_sweep``), so every comparison of two conditions is paired.

Stages and shards (``experiments.sharding``): the units of a cell are preflossed in shards of at most ``shard_size``
(the networks of one k flossed as one ensemble, on inputs drawn from the seed's own stream, the same for every k and
memory bias), and their gate statistics (``diagnostics.gate_statistics``) measured there: on ``gate_batch``
trajectories of T steps per network from the network's own initial state h0, driven by random bits encoded like the
task's, the same bits for every unit of a seed (k = 0: before flossing). Then all networks of a cell (units x tasks x
delays) train in shards of at most ``shard_size``: bigger ensembles cost less per network on a CPU (H = 16, T = 300:
an LSTM training step costs about half as much per network in an ensemble of 54 as in one of 9).

Sizes. ``model.n_hidden`` gives both cells H units; ``state_size`` instead gives both the same state size S (the GRU
H = S units, the LSTM H = S / 2), so that k counts the same share of their exponents.

A probe and a bracket (figure 6's notebook). A sweep of plain training only (``ks = (0,)``) over several delays finds
where plain training stops learning; ``bracket_delays`` picks the delays around that border, a second sweep flosses
there, and ``gated_conditions`` puts the probe's plain networks beside the flossed ones (the same seeds' initial
networks and training batches).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..cells import ModelConfig
from ..checks import check_choice, check_int, check_number
from ..diagnostics import criterion_outcome, gate_statistics
from ..ensemble import concat_networks
from ..flossing import FlossConfig, floss
from ..tasks import TASKS, InputEncoding, TaskConfig, bit_signal, random_bits
from ..training import FlossSchedule, TrainConfig, train
from .common import as_tuple, check_seed, network_generators
from .sharding import Shard, join, open_executor, ranges

__all__ = ["GatedSweep", "gated_sweep", "gate_inputs", "network_gate_statistics", "initial_units",
           "summarize_gated_sweep", "gated_conditions", "bracket_delays", "GATED_CELLS"]

GATED_CELLS = ("lstm", "gru")
_STATE_FACTOR = {"lstm": 2, "gru": 1}  # state size S / units H


@dataclass(frozen=True)
class GatedSweep:
    """Gated cells x memory biases x preflossed k x tasks x delays x seeds (figure 6)."""
    cells: tuple = GATED_CELLS  # "lstm" (state [h, c], S = 2H) and/or "gru" (S = H)
    memory_biases: tuple = (0.0, 1.0)  # added to the forget (LSTM) / update (GRU) gate bias; 0: PyTorch's init
    ks: tuple = (0, 2, 16)  # exponents preflossed (0: plain training), each at most every cell's state size
    tasks: tuple = ("copy",)  # task names (floss_core.tasks)
    delays: tuple = (20,)  # d, the longest lag
    n_networks: int = 9  # networks (seeds) per cell, memory bias, k, task and delay
    seq_len: int = TaskConfig.seq_len  # T of the training sequences and of the gate-statistics trajectories
    batch: int = TaskConfig.batch  # sequences per training step
    encoding: InputEncoding = InputEncoding()  # of the tasks, the flossing inputs and the gate-statistics inputs
    model: ModelConfig = ModelConfig(cell="lstm", n_hidden=16)  # its cell and memory_bias: set by cells, memory_biases
    state_size: int | None = None  # S of every cell: H = S / 2 for the LSTM, S for the GRU (None: model.n_hidden)
    train: TrainConfig = TrainConfig(record_every=0)  # no exponents recorded during training (the cost of figure 6)
    floss: FlossConfig = FlossConfig()  # its k is replaced by each k > 0 of ks, its encoding by ``encoding``
    schedule: FlossSchedule = FlossSchedule.pre()  # only pre_steps (E_p) is used
    gate_batch: int = 8  # trajectories per network for the gate statistics
    seed: int = 0
    shard_size: int = 64  # networks per shard: independent ensembles of at most this many (experiments.sharding)

    def __post_init__(self):
        object.__setattr__(self, "cells", _unique("GatedSweep.cells", self.cells,
                                                  lambda n, v: check_choice(n, v, GATED_CELLS)))
        object.__setattr__(self, "memory_biases", _unique("GatedSweep.memory_biases", self.memory_biases,
                                                          lambda n, v: check_number(n, v)))
        if self.state_size is not None:
            check_int("GatedSweep.state_size", self.state_size, 1)
            if "lstm" in self.cells and self.state_size % 2:
                raise ValueError(f"GatedSweep.state_size must be even with an LSTM among the cells (S = 2H), got "
                                 f"{self.state_size}")
        which = min(self.cells, key=self.cell_state_size)  # the cell with the smallest state size
        smallest = self.cell_state_size(which)
        which = f"the {which.upper()}'s"
        object.__setattr__(self, "ks", _unique("GatedSweep.ks", self.ks, lambda n, v: check_int(
            n, v, 0, smallest, note=f" ({which} state size)")))
        object.__setattr__(self, "tasks", as_tuple("GatedSweep.tasks", self.tasks,
                                                   lambda n, v: check_choice(n, v, TASKS)))
        object.__setattr__(self, "delays", as_tuple("GatedSweep.delays", self.delays,
                                                    lambda n, v: check_int(n, v, 1)))
        if self.model.memory_bias:
            raise ValueError("GatedSweep.model.memory_bias must be 0: give the biases as GatedSweep.memory_biases")
        if any(self.ks) and not self.schedule.pre_steps:
            raise ValueError("GatedSweep.schedule.pre_steps must be >= 1 when ks has a k > 0 (preflossing steps)")
        check_int("GatedSweep.n_networks", self.n_networks, 1)
        check_int("GatedSweep.gate_batch", self.gate_batch, 1)
        check_int("GatedSweep.shard_size", self.shard_size, 1)
        check_seed("GatedSweep.seed", self.seed)
        self.task_configs()  # every task of the grid is valid (e.g. no odd delay for XOR) before any work

    def task_configs(self) -> list:
        """The TaskConfig of every (task, delay), task-major: index ``j * D + d``."""
        return [TaskConfig(name=t, delay=d, seq_len=self.seq_len, batch=self.batch, encoding=self.encoding)
                for t in self.tasks for d in self.delays]

    def units(self) -> list:
        """(memory-bias index, k index, seed) of every unit of a cell: index ``(b * K + q) * n_networks + s``."""
        return [(b, q, s) for b in range(len(self.memory_biases)) for q in range(len(self.ks))
                for s in range(self.n_networks)]

    def n_hidden(self, cell: str) -> int:
        """H of ``cell``: state_size / 2 for the LSTM and state_size for the GRU, or model.n_hidden."""
        return self.model.n_hidden if self.state_size is None else self.state_size // _STATE_FACTOR[cell]

    def cell_state_size(self, cell: str) -> int:
        """S of ``cell``: 2H for the LSTM ([h, c]), H for the GRU."""
        return _STATE_FACTOR[cell] * self.n_hidden(cell)

    def model_config(self, cell: str, memory_bias: float) -> ModelConfig:
        return dataclasses.replace(self.model, cell=cell, memory_bias=memory_bias, n_hidden=self.n_hidden(cell))

    def floss_config(self, k: int) -> FlossConfig:
        """Preflossing of k exponents, its inputs encoded like the tasks'."""
        return dataclasses.replace(self.floss, k=k, encoding=self.encoding)


def _unique(name: str, value, item) -> tuple:
    out = as_tuple(name, value, item)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has repeated entries: {value!r}")
    return out


def initial_units(s: GatedSweep, cell: str, units: list, device="cpu"):
    """The initial networks of ``units`` [(memory-bias index, k index, seed)] as one ensemble, in that order: the
    seed's weights (stream ("init", "s<seed>"), as in ``delay_sweep``) with the memory bias added."""
    groups = [(b, [u for u in units if u[0] == b]) for b in dict.fromkeys(u[0] for u in units)]
    members = [s.model_config(cell, s.memory_biases[b]).build(
        1, 1, n_networks=len(us), device=device, generator=network_generators(s.seed, "init", [f"s{u[2]}" for u in us]))
        for b, us in groups]
    model = concat_networks(members) if len(members) > 1 else members[0]
    order = [u for _, us in groups for u in us]
    return _reorder(model, [order.index(u) for u in units])


def _reorder(model, index: list):
    """``model`` with its networks in the order ``index`` (in place)."""
    if index != list(range(len(index))):
        with torch.no_grad():
            for p in model.parameters():
                p.data = p.data[index].clone()
    return model


def gate_inputs(s: GatedSweep, seeds, *, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """The inputs of the gate statistics of networks with these seeds: ``gate_batch`` sequences of T random bits
    encoded like the task's, drawn from the seed's own stream ("gates", "s<seed>"): (len(seeds), gate_batch, T, 1)."""
    seeds = list(seeds)
    gens = network_generators(s.seed, "gates", [f"s{i}" for i in seeds])
    bits = random_bits(len(seeds), s.gate_batch, s.seq_len, 1, generator=gens)  # (E, B, T, 1)
    return bit_signal(bits, s.encoding, dtype=dtype, device=device)


def network_gate_statistics(model, inputs: torch.Tensor) -> dict:
    """``diagnostics.gate_statistics`` along the trajectories from each network's own initial state h0 (its
    ``h0`` parameter): {gate name: (E,)}, plus "abs_cell" for the LSTM. inputs: (E, B, T, I)."""
    E, B = inputs.shape[:2]
    h0 = model.h0.detach().unsqueeze(1).expand(E, B, model.state_size).contiguous()  # (E, B, S)
    return gate_statistics(model, inputs, h0=h0)


def _prefloss_shard(s: GatedSweep, cell: str, a: int, b: int, device, progress: bool) -> dict:
    """Units a..b-1 of a cell: their initial networks, preflossed (those of each k > 0 as one ensemble), and their
    gate statistics after preflossing (k = 0: the initial networks)."""
    units = s.units()[a:b]
    model = initial_units(s, cell, units, device)  # (b - a networks)
    for q in dict.fromkeys(u[1] for u in units):
        k = s.ks[q]
        idx = [i for i, u in enumerate(units) if u[1] == q]
        if not k:
            continue
        part = initial_units(s, cell, [units[i] for i in idx], device)
        floss(part, s.schedule.pre_steps, config=s.floss_config(k), progress=progress,
              generator=network_generators(s.seed, "prefloss", [f"s{units[i][2]}" for i in idx]))
        with torch.no_grad():
            for p, flossed in zip(model.parameters(), part.parameters()):
                p[idx] = flossed.detach()
    p = next(model.parameters())
    gates = network_gate_statistics(model, gate_inputs(s, [u[2] for u in units], dtype=p.dtype, device=p.device))
    return {"state": {name: q.detach() for name, q in model.named_parameters()}, "gates": gates}


def _train_shard(s: GatedSweep, cell: str, a: int, b: int, preflossed: list, device, progress: bool) -> dict:
    """Networks a..b-1 of a cell (network ``u * n_tasks_delays + t``: unit u on task-delay t) trained as one
    ensemble from their units' preflossed parameters (``preflossed``: the preflossing shards' results, in order)."""
    TD = len(s.tasks) * len(s.delays)
    units, configs = s.units(), s.task_configs()
    state = join([pre["state"] for pre in preflossed])  # {name: (units, ...)}
    index = [e // TD for e in range(a, b)]  # the unit of each network
    model = initial_units(s, cell, [units[u] for u in index], device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(state[name][index])
    tasks = [configs[e % TD] for e in range(a, b)]
    keys = [f"{t.name}/d{t.delay}/s{units[u][2]}" for t, u in zip(tasks, index)]  # not the memory bias, not k
    h = train(model, tasks, config=s.train, floss_config=dataclasses.replace(s.floss, encoding=s.encoding),
              schedule=FlossSchedule.none(), generator=network_generators(s.seed, "train", keys), progress=progress)
    return {"accuracy": h.accuracy, "failed": h.failed}


def gated_sweep(sweep: GatedSweep, *, device: str = "cpu", progress: bool = True, cluster=None) -> dict:
    """Run the sweep (module docstring): for every cell, preflossing and gate statistics of its units, then
    training of every unit on every task and delay; shards run here one after the other or, with ``cluster`` (a Dask
    ``Client``, scheduler address or Cluster), as Dask tasks at once, the training shards of a cell after its
    preflossing shards.

    Returns {"cells", "memory_biases", "ks", "tasks", "delays", and per cell:
        "accuracy": {cell: (train_steps, n_biases, K, n_tasks, D, S)} test accuracy over training,
        "failed": {cell: (n_biases, K, n_tasks, D, S)} training stopped on a non-finite loss,
        "gates": {cell: {gate: (n_biases, K, S)}} mean gate values (and "abs_cell", the LSTM's mean |c|) of the
            initial networks at k = 0 and of the networks preflossed with k otherwise,
        "pre_state": {cell: {parameter name: (n_biases, K, S, ...)}} the networks before training}.
    Seed s is network s of every condition: the same initial weights (up to the memory bias) for every condition.
    """
    s = sweep
    NB, K, J, D, S = len(s.memory_biases), len(s.ks), len(s.tasks), len(s.delays), s.n_networks
    n_units = NB * K * S
    inner = progress and cluster is None  # the steps' progress bars in this process, the shards' on a cluster
    with open_executor(cluster, progress=progress) as ex:
        items, shards, n_pre = [], [], {}
        for cell in s.cells:
            pre = []
            for a, b in ranges(n_units, s.shard_size):
                shards.append(Shard("gated_sweep", a, b, f"{cell} preflossing", "units"))
                pre.append(ex.submit(shards[-1], _prefloss_shard, s, cell, a, b, device, inner))
            n_pre[cell] = len(pre)
            items += pre
            for a, b in ranges(n_units * J * D, s.shard_size):
                shards.append(Shard("gated_sweep", a, b, f"{cell} training"))
                items.append(ex.submit(shards[-1], _train_shard, s, cell, a, b, pre, device, inner))
        done = ex.gather(items, shards)
    out = {"cells": list(s.cells), "memory_biases": list(s.memory_biases), "ks": list(s.ks), "tasks": list(s.tasks),
           "delays": list(s.delays), "n_hidden": {cell: s.n_hidden(cell) for cell in s.cells}, "accuracy": {},
           "failed": {}, "gates": {}, "pre_state": {}}
    n_train = len(ranges(n_units * J * D, s.shard_size))
    for cell in s.cells:
        pre, trained = done[:n_pre[cell]], done[n_pre[cell]:n_pre[cell] + n_train]
        done = done[n_pre[cell] + n_train:]
        gates = join([p["gates"] for p in pre])  # {name: (units,)}
        out["gates"][cell] = {name: v.reshape(NB, K, S) for name, v in gates.items()}
        state = join([p["state"] for p in pre])
        out["pre_state"][cell] = {name: v.reshape(NB, K, S, *v.shape[1:]) for name, v in state.items()}
        h = join(trained, {"accuracy": 1})
        steps = h["accuracy"].shape[0]
        # networks are (unit, task-delay) = (b, q, s, j, d): put the seed last
        out["accuracy"][cell] = h["accuracy"].reshape(steps, NB, K, S, J, D).permute(0, 1, 2, 4, 5, 3)
        out["failed"][cell] = h["failed"].reshape(NB, K, S, J, D).permute(0, 1, 3, 4, 2)
    return out


def summarize_gated_sweep(result: dict, *, threshold: float = 0.9, window: int = 50, last: int = 100) -> dict:
    """Success and final accuracy of every network of a ``gated_sweep`` result, the criteria of figures 3-4:
    success when the running mean (``window`` steps) of the test accuracy reaches ``threshold`` and stays above it
    to the end; final accuracy the mean over the ``last`` training steps. A network whose training failed
    (``failed``) is no success, with no steps to criterion and a NaN final accuracy (``summarize_delay_sweep``).

    Returns {"success", "final_accuracy", "steps_to_criterion", "failed": {cell: (n_biases, K, n_tasks, D, S)}}
    (steps to criterion count training steps, -1: never)."""
    out = {"success": {}, "final_accuracy": {}, "steps_to_criterion": {}, "failed": {}}
    for cell, acc in result["accuracy"].items():  # (steps, ...)
        failed = result["failed"][cell].to(torch.bool)
        o = criterion_outcome(acc, failed, threshold=threshold, window=window, last=last)
        for key in ("success", "final_accuracy", "steps_to_criterion"):
            out[key][cell] = o[key]
        out["failed"][cell] = failed
    return out


_OUTCOMES = ("success", "final_accuracy", "steps_to_criterion", "failed")


def gated_conditions(summary: dict, cell: str, ks, delays, *, plain: dict | None = None, plain_delays=None,
                     bias: int = 0, task: int = 0) -> dict:
    """One cell's outcomes by condition, in the shape of ``summarize_delay_sweep``'s for ``repro.numbers`` and the
    delay plots: {outcome: {condition: (D, S)}} for "success", "final_accuracy", "steps_to_criterion" and "failed",
    the conditions "none" (k = 0) and "k<k>" for each k > 0 of ``ks`` (the summarized sweep's ks, in order).

    ``summary``: ``summarize_gated_sweep`` of a sweep over ``delays``; memory bias index ``bias``, task index ``task``.
    ``plain``: the summary of a second sweep of plain training only (ks = (0,)) over ``plain_delays``, which must
    hold every delay of ``delays``: "none" is then taken from it at those delays (the same initial networks and
    training batches as the first sweep's k = 0 would have: both follow the seeds' streams)."""
    ks, delays = list(ks), list(delays)
    out = {key: {} for key in _OUTCOMES}
    for q, k in enumerate(ks):
        for key in _OUTCOMES:
            if k or plain is None:
                out[key]["none" if not k else f"k{k}"] = summary[key][cell][bias, q, task]  # (D, S)
    if plain is not None:
        plain_delays = list(plain_delays)
        missing = [d for d in delays if d not in plain_delays]
        if missing:
            raise ValueError(f"plain_delays {plain_delays} lack the delays {missing} of the flossed sweep")
        index = [plain_delays.index(d) for d in delays]
        for key in _OUTCOMES:
            out[key]["none"] = plain[key][cell][bias, 0, task][index]  # (D, S)
    return out


def bracket_delays(success, delays, n: int = 3) -> list:
    """``n`` consecutive delays of a probe that bracket where plain training stops learning: the first delay at which
    fewer than half of the networks succeed (the border), the one before it and those after it, shifted to stay
    within the probe's delays (the first n if the border is the first delay, the last n if none is a border or it
    is among the last).

    success: (P, S) bool, plain training's successes at the P probe ``delays`` (ascending), e.g.
    ``gated_conditions(...)["success"]["none"]``."""
    delays = [int(d) for d in delays]
    check_int("n", n, 1, len(delays), note=" (the number of probe delays)")
    if delays != sorted(set(delays)):
        raise ValueError(f"delays must be strictly increasing, got {delays}")
    success = torch.as_tensor(success)
    if success.dim() != 2 or success.shape[0] != len(delays) or success.dtype != torch.bool:
        raise ValueError(f"success must be a bool (delays, networks) = ({len(delays)}, S) tensor, got "
                         f"{tuple(success.shape)} {success.dtype}")
    rate = success.double().mean(1)  # (P,)
    failing = [i for i, r in enumerate(rate.tolist()) if r < 0.5]
    border = failing[0] if failing else len(delays) - 1
    start = min(max(border - 1, 0), len(delays) - n)
    return delays[start:start + n]
