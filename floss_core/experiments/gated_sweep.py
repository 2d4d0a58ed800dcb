"""Figure 6: preflossing LSTMs and GRUs, over the number of flossed exponents k and the gate-bias initialization,
with the gate statistics that show what flossing did to the gates.

Why k and the initialization matter for gated cells. Flossing k = S exponents of a gated cell to zero can reach
lambda = 0 by saturating its gates (an LSTM's forget gates go to 1 and its cell state |c| grows; a GRU's update
gates go to 1 and its state freezes) rather than by balancing the dynamics; a small k leaves the gates near 1/2.
And a plain LSTM with PyTorch's initialization (forget-gate bias ~0, f ~ 1/2) forgets in a few steps, so it is a weak
baseline; the usual remedy is a forget-gate bias of +1 (``ModelConfig.memory_bias``). ``GatedSweep`` crosses both.

The sweep is a set of ``DelaySweep``s (``delay_sweep_config``): for every cell, memory bias and k one sweep, with the
condition "none" for k = 0 and "pre" (``schedule.pre_steps`` flossing steps of k exponents) otherwise. The networks
of a cell and memory bias start from the same weights and train on the same batches for every k (the delay sweep's
per-network streams leave the condition out of their names), so every preflossed-vs-plain comparison is paired.
Gate statistics (``diagnostics.gate_statistics``) are measured on the initial networks (k = 0) and on the preflossed
ones (k > 0), along ``gate_batch`` trajectories of T steps per network from the network's own initial state h0,
driven by random bits encoded like the task's, the same bits before and after.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..cells import ModelConfig
from ..checks import check_choice, check_int, check_number
from ..diagnostics import final_accuracy, gate_statistics, running_mean, steps_to_criterion
from ..flossing import FlossConfig
from ..tasks import TASKS, InputEncoding, TaskConfig, bit_signal, random_bits
from ..training import FlossSchedule, TrainConfig
from .common import as_tuple, check_seed, network_generators
from .delay_sweep import DelaySweep, delay_sweep, initial_networks

__all__ = ["GatedSweep", "gated_sweep", "gate_inputs", "network_gate_statistics", "summarize_gated_sweep",
           "GATED_CELLS"]

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
    model: ModelConfig = ModelConfig(n_hidden=16)  # its cell and memory_bias are set by cells and memory_biases
    train: TrainConfig = TrainConfig(record_every=0)  # no exponents recorded during training (the cost of figure 6)
    floss: FlossConfig = FlossConfig()  # its k is replaced by each k > 0 of ks
    schedule: FlossSchedule = FlossSchedule.pre()  # only pre_steps (E_p) is used
    gate_batch: int = 8  # trajectories per network for the gate statistics
    seed: int = 0
    shard_size: int = 16  # networks per shard (experiments.sharding)

    def __post_init__(self):
        object.__setattr__(self, "cells", _unique("GatedSweep.cells", self.cells,
                                                  lambda n, v: check_choice(n, v, GATED_CELLS)))
        object.__setattr__(self, "memory_biases", _unique("GatedSweep.memory_biases", self.memory_biases,
                                                          lambda n, v: check_number(n, v)))
        smallest = min(_STATE_FACTOR[c] for c in self.cells) * self.model.n_hidden  # the smallest state size
        object.__setattr__(self, "ks", _unique("GatedSweep.ks", self.ks, lambda n, v: check_int(
            n, v, 0, smallest, note=f" (the state size of {'the GRU' if 'gru' in self.cells else 'the LSTM'})")))
        if self.model.memory_bias:
            raise ValueError("GatedSweep.model.memory_bias must be 0: give the biases as GatedSweep.memory_biases")
        if any(self.ks) and not self.schedule.pre_steps:
            raise ValueError("GatedSweep.schedule.pre_steps must be >= 1 when ks has a k > 0 (preflossing steps)")
        check_int("GatedSweep.gate_batch", self.gate_batch, 1)
        check_int("GatedSweep.n_networks", self.n_networks, 1)
        check_seed("GatedSweep.seed", self.seed)
        self.delay_sweep_config(self.cells[0], self.memory_biases[0], self.ks[-1])  # tasks, delays, ... valid

    def delay_sweep_config(self, cell: str, memory_bias: float, k: int) -> DelaySweep:
        """The DelaySweep of one cell, memory bias and k: condition "none" for k = 0, "pre" with k exponents
        flossed otherwise."""
        floss = dataclasses.replace(self.floss, k=k) if k else self.floss
        return DelaySweep(tasks=self.tasks, delays=self.delays, conditions=("pre",) if k else ("none",),
                          n_networks=self.n_networks, seq_len=self.seq_len, batch=self.batch, encoding=self.encoding,
                          model=dataclasses.replace(self.model, cell=cell, memory_bias=memory_bias),
                          train=self.train, floss=floss, schedule=self.schedule, seed=self.seed,
                          shard_size=self.shard_size)


def _unique(name: str, value, item) -> tuple:
    out = as_tuple(name, value, item)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has repeated entries: {value!r}")
    return out


def gate_inputs(s: GatedSweep, *, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """The inputs of the gate statistics: for every seed, ``gate_batch`` sequences of T random bits encoded like the
    task's, drawn from the seed's own generator (stage "gates"): (n_networks, gate_batch, T, 1)."""
    gens = network_generators(s.seed, "gates", [f"s{i}" for i in range(s.n_networks)])
    bits = random_bits(s.n_networks, s.gate_batch, s.seq_len, 1, generator=gens)  # (S, B, T, 1)
    return bit_signal(bits, s.encoding, dtype=dtype, device=device)


def network_gate_statistics(model, inputs: torch.Tensor) -> dict:
    """``diagnostics.gate_statistics`` along the trajectories from each network's own initial state h0 (its trained
    or initial ``h0`` parameter): {gate name: (E,)}, plus "abs_cell" for the LSTM. inputs: (E, B, T, I)."""
    E, B = inputs.shape[:2]
    h0 = model.h0.detach().unsqueeze(1).expand(E, B, model.state_size).contiguous()  # (E, B, S)
    return gate_statistics(model, inputs, h0=h0)


def _preflossed(s: DelaySweep, state: dict, device):
    """The initial networks of the sweep with the preflossed parameters ``state`` {name: (S, ...)}."""
    model = initial_networks(s, device=device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(state[name])
    return model


def gated_sweep(sweep: GatedSweep, *, device: str = "cpu", progress: bool = True, cluster=None) -> dict:
    """Run the sweep: one ``delay_sweep`` per cell, memory bias and k (``GatedSweep.delay_sweep_config``), one
    after the other (each on ``cluster`` if given), and the gate statistics before and after preflossing.

    Returns {"cells", "memory_biases", "ks", "tasks", "delays", and per cell:
        "accuracy": {cell: (train_steps, n_biases, K, n_tasks, D, S)} test accuracy over training,
        "failed": {cell: (n_biases, K, n_tasks, D, S)} training stopped on a non-finite loss,
        "gates": {cell: {gate: (n_biases, K, S)}} mean gate values (and "abs_cell", the LSTM's mean |c|) of the
            initial networks at k = 0 and of the networks preflossed with k otherwise}.
    Network s of every entry is seed s: the same initial network for every k of a cell and memory bias.
    """
    s = sweep
    out = {"cells": list(s.cells), "memory_biases": list(s.memory_biases), "ks": list(s.ks), "tasks": list(s.tasks),
           "delays": list(s.delays), "accuracy": {}, "failed": {}, "gates": {}}
    for cell in s.cells:
        acc, failed, gates = [], [], []
        for bias in s.memory_biases:
            acc_b, failed_b, gates_b = [], [], []
            for k in s.ks:
                ds = s.delay_sweep_config(cell, bias, k)
                res = delay_sweep(ds, device=device, progress=progress, cluster=cluster)
                h = res[ds.conditions[0]]
                acc_b.append(h["accuracy"])  # (steps, J, D, S)
                failed_b.append(h["failed"])  # (J, D, S)
                model = _preflossed(ds, res["pre_state"], device) if k else initial_networks(ds, device=device)
                p = next(model.parameters())
                gates_b.append(network_gate_statistics(model, gate_inputs(s, dtype=p.dtype, device=p.device)))
            acc.append(torch.stack(acc_b, 1))  # (steps, K, J, D, S)
            failed.append(torch.stack(failed_b))  # (K, J, D, S)
            gates.append({name: torch.stack([g[name] for g in gates_b]) for name in gates_b[0]})  # {name: (K, S)}
        out["accuracy"][cell] = torch.stack(acc, 1)  # (steps, n_biases, K, J, D, S)
        out["failed"][cell] = torch.stack(failed)  # (n_biases, K, J, D, S)
        out["gates"][cell] = {name: torch.stack([g[name] for g in gates]) for name in gates[0]}  # (n_biases, K, S)
    return out


def summarize_gated_sweep(result: dict, *, threshold: float = 0.9, window: int = 50, last: int = 100) -> dict:
    """Success and final accuracy of every network of a ``gated_sweep`` result, the criteria of figures 3-4:
    success when the running mean (``window`` steps) of the test accuracy reaches ``threshold`` and stays above it
    to the end; final accuracy the mean over the ``last`` training steps.

    Returns {"success", "final_accuracy", "steps_to_criterion": {cell: (n_biases, K, n_tasks, D, S)}} (steps to
    criterion count training steps, -1: never)."""
    out = {"success": {}, "final_accuracy": {}, "steps_to_criterion": {}}
    for cell, acc in result["accuracy"].items():  # (steps, ...)
        n, shape = acc.shape[0], acc.shape[1:]
        w = min(window, n)
        sm = running_mean(acc, w).reshape(n - w + 1, -1)  # (n - w + 1, networks)
        steps = steps_to_criterion(sm, threshold, steps_dim=0)
        steps = torch.where(steps >= 0, steps + w - 1, steps).reshape(shape)
        out["steps_to_criterion"][cell] = steps
        out["success"][cell] = steps >= 0
        out["final_accuracy"][cell] = final_accuracy(acc, last)
    return out
