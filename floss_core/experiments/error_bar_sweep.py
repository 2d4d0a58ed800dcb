"""Notebook 08: error bars of the exponents and the geometry of the flossed directions, before and after flossing.

Networks like figure 1's (the author's tanh RNN, started at several gains, driven like the flossing) are measured
before flossing and after flossing the first k exponents to the target, for each k:

* ``spectrum_estimate`` over trajectories like figure 1's (``batch`` x ``spectrum_steps``): the exponents and their
  standard errors; the steps that would reach ``target_stderr`` for all ``spectrum_k`` exponents if the error falls
  like 1 / sqrt(steps) ("projected"), and the steps a run to ``target_stderr`` took for the first ``target_k``
  exponents ("measured", at most ``max_steps``);
* ``covariant_vectors``: the first k + ``clv_extra`` covariant Lyapunov vectors along a trajectory and, at every
  stored time, the smallest angle between the span of the first k (the flossed directions) and the span of the
  others (near 0: a near-tangency, a departure from hyperbolicity). Before flossing, the vectors of the largest k
  are computed once; the first k + clv_extra of them are those a run with fewer would give.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass

import torch

from ..cells import ModelConfig
from ..checks import check_int, check_number
from ..flossing import FlossConfig, floss
from ..spectrum import covariant_vectors, spectrum_estimate, subspace_angle
from ..tasks import bit_signal, random_bits
from .common import as_tuple, check_seed, network_generators

__all__ = ["ErrorBarSweep", "error_bar_sweep"]


@dataclass(frozen=True)
class ErrorBarSweep:
    """The networks, flossing and measurements of notebook 08 (module docstring)."""
    gains: tuple = (1.0, 2.0)  # starting gains g (ModelConfig.gain is replaced by each)
    ks: tuple = (1, 16)  # numbers of exponents flossed to floss.target (FlossConfig.k is replaced by each)
    n_networks: int = 4  # networks per gain
    floss_steps: int = 300  # flossing (Adam) steps
    model: ModelConfig = ModelConfig()
    floss: FlossConfig = FlossConfig()  # also the inputs of every measurement ("task" bits or "zero")
    spectrum_k: int = 32  # exponents estimated before and after
    spectrum_steps: int = 2000  # steps of each trajectory of the estimates (figure 1's)
    batch: int = 4  # trajectories per network (figure 1's)
    target_stderr: float = 1e-3  # the standard error the measured runs go on to
    target_k: int = 1  # the exponents those runs estimate (lambda_1 .. lambda_target_k)
    max_steps: int = 200_000  # the longest of those runs
    clv_extra: int = 16  # covariant vectors beyond the k flossed
    clv_steps: int = 400  # steps whose vectors are kept (every clv_every-th)
    clv_transient: int = 400  # forward alignment (covariant_vectors' n_transient)
    clv_future: int = 400  # backward alignment (covariant_vectors' n_future)
    clv_every: int = 4
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "gains", as_tuple("ErrorBarSweep.gains", self.gains,
                                                   lambda n, v: check_number(n, v, 0)))
        S = self.model.n_hidden
        object.__setattr__(self, "ks", as_tuple("ErrorBarSweep.ks", self.ks,
                                                lambda n, v: check_int(n, v, 1, S - self.clv_extra,
                                                                       note=" (n_hidden - clv_extra)")))
        for name in ("n_networks", "spectrum_steps", "batch", "clv_steps", "clv_future", "clv_every"):
            check_int(f"ErrorBarSweep.{name}", getattr(self, name), 1)
        for name in ("floss_steps", "clv_transient"):
            check_int(f"ErrorBarSweep.{name}", getattr(self, name), 0)
        check_int("ErrorBarSweep.clv_extra", self.clv_extra, 1, S - 1)
        check_int("ErrorBarSweep.spectrum_k", self.spectrum_k, 1, S, note=" (n_hidden)")
        check_int("ErrorBarSweep.target_k", self.target_k, 1, S, note=" (n_hidden)")
        check_int("ErrorBarSweep.max_steps", self.max_steps, self.spectrum_steps, note=" (spectrum_steps)")
        check_number("ErrorBarSweep.target_stderr", self.target_stderr, 0, low_open=True)
        check_seed("ErrorBarSweep.seed", self.seed)

    @property
    def conditions(self) -> list:
        """"before", then "k<k>" for every k flossed."""
        return ["before"] + [f"k{k}" for k in self.ks]


def _keys(s: ErrorBarSweep) -> list:
    return [f"g{float(g)!r}/s{i}" for g in s.gains for i in range(s.n_networks)]


def _initial(s: ErrorBarSweep, device):
    """The networks before flossing: drawn at gain 1, W scaled by each network's gain (as figure 1's)."""
    model = dataclasses.replace(s.model, gain=1.0).build(
        1, 1, n_networks=len(_keys(s)), generator=network_generators(s.seed, "init", _keys(s)), device=device)
    with torch.no_grad():
        model.W.mul_(torch.tensor(s.gains).repeat_interleave(s.n_networks).to(model.W).view(-1, 1, 1))
    return model


def _drive(s: ErrorBarSweep, model, stage: str, batch: int):
    """``inputs(n)``: the next n steps of flossing-like inputs, from one stream per network."""
    gens = network_generators(s.seed, stage, _keys(s))
    p = next(model.parameters())

    def inputs(n: int) -> torch.Tensor:
        if s.floss.input == "zero":
            return torch.zeros(model.n_networks, batch, n, 1, dtype=p.dtype, device=p.device)
        return bit_signal(random_bits(model.n_networks, batch, n, 1, generator=gens), s.floss.encoding,
                          dtype=p.dtype, device=p.device)

    return inputs


def _estimates(s: ErrorBarSweep, model) -> dict:
    """The exponents and standard errors, the projected and measured steps to target_stderr."""
    def gens(stage):  # the same drives and starts before and after flossing
        return network_generators(s.seed, stage, _keys(s))

    with torch.no_grad():
        est = spectrum_estimate(model, _drive(s, model, "drive spectrum", s.batch), s.spectrum_k,
                                n_steps=s.spectrum_steps, batch=s.batch, generator=gens("start spectrum"))
        with warnings.catch_warnings():  # networks that do not reach the target are reported in the result
            warnings.simplefilter("ignore", UserWarning)
            run = spectrum_estimate(model, _drive(s, model, "drive target", s.batch), s.target_k,
                                    n_steps=s.spectrum_steps, batch=s.batch, generator=gens("start target"),
                                    target_stderr=s.target_stderr, max_steps=s.max_steps)
    averaged = s.spectrum_steps - est.n_transient
    projected = est.n_transient + averaged * (est.stderr.amax(-1).double() / s.target_stderr) ** 2  # (E,)
    return {"exponents": est.exponents.detach().cpu(), "stderr": est.stderr.cpu(),
            "projected_steps": projected.cpu(), "target_steps": run.n_steps.cpu(),
            "target_converged": run.converged.cpu(), "target_stderr": run.stderr.cpu()}


def _angles(s: ErrorBarSweep, model, ks) -> dict:
    """{"k<k>": (E, T') smallest angle between the first k CLVs and the next clv_extra} along one trajectory."""
    K = max(ks) + s.clv_extra
    total = s.clv_transient + s.clv_steps + s.clv_future
    x = _drive(s, model, "drive clv", 1)(total)
    res = covariant_vectors(model, x, K, n_steps=s.clv_steps, n_transient=s.clv_transient, n_future=s.clv_future,
                            store_every=s.clv_every,
                            generator=network_generators(s.seed, "start clv", _keys(s)))
    return {f"k{k}": subspace_angle(res.vectors[..., :k + s.clv_extra], k)[:, 0].cpu() for k in ks}


def error_bar_sweep(sweep: ErrorBarSweep, *, device: str = "cpu", progress: bool = False) -> dict:
    """Run the sweep (module docstring). Network ``e = i * n_networks + s`` has gain ``gains[i]``, seed s; every
    draw comes from its own generators, seeded from (sweep.seed, stage, "g<g>/s<s>"); the measurements of every
    condition use the same drives and starts.

    Returns a dict: gains (E,), conditions ["before", "k<k>", ...], ks, and per condition (lists aligned with
    ``conditions``): exponents and stderr (E, spectrum_k), projected_steps (E,) (float64), target_steps (E,),
    target_converged (E,), target_stderr (E, target_k); angles: per condition a dict {"k<k>": (E, T')} (before:
    every k; after flossing k: that k), in radians."""
    s = sweep
    base = _initial(s, device)
    out = {"gains": torch.tensor(s.gains).repeat_interleave(s.n_networks), "conditions": s.conditions,
           "ks": list(s.ks), "angles": []}
    for condition in s.conditions:
        model = copy.deepcopy(base)
        ks = list(s.ks)
        if condition != "before":
            k = int(condition[1:])
            ks = [k]
            config = dataclasses.replace(s.floss, k=k)
            floss(model, s.floss_steps, config=config, progress=progress,
                  generator=network_generators(s.seed, f"floss k{k}", _keys(s)))
        for key, value in _estimates(s, model).items():
            out.setdefault(key, []).append(value)
        out["angles"].append(_angles(s, model, ks))
    return out
