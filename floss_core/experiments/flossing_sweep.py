"""Figures 1 and 2: flossing the first k exponents of ensembles started at several gains, and what it changes
(the spectrum, the gradient-norm profile, the singular values of the long-term Jacobian)."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch

from ..cells import ModelConfig
from ..checks import check_int, check_number
from ..diagnostics import gradient_norm_profile, long_term_jacobian_singular_values
from ..flossing import FlossConfig, floss
from ..spectrum import lyapunov_spectrum
from ..tasks import bit_signal, random_bits
from .common import as_tuple, check_seed, network_generators
from .sharding import Shard, join, open_executor, ranges

__all__ = ["FlossingSweep", "flossing_sweep"]


@dataclass(frozen=True)
class FlossingSweep:
    """Flossing ensembles started at several gains, for several k (figures 1 and 2)."""
    gains: tuple = (0.5, 1.0, 2.0)  # starting gains g (ModelConfig.gain is replaced by each)
    ks: tuple = (1, 16)  # numbers of exponents flossed (FlossConfig.k is replaced by each)
    n_networks: int = 6  # networks per gain
    floss_steps: int = 500  # flossing (Adam) steps
    model: ModelConfig = ModelConfig()
    floss: FlossConfig = FlossConfig()  # also sets the inputs of every measurement ("task" or "zero")
    spectrum_k: int = 32  # exponents measured before and after (at most N)
    spectrum_steps: int = 2000  # steps of the trajectories measuring the spectra
    horizon: int = 300  # longest lag tau of the gradient profile and the long-term Jacobian
    sv_every: int = 5  # the long-term Jacobian's singular values every this many steps
    seed: int = 0
    shard_size: int = 16  # networks per shard: independent ensembles of at most this many (experiments.sharding)

    def __post_init__(self):
        object.__setattr__(self, "gains", as_tuple("FlossingSweep.gains", self.gains,
                                                   lambda n, v: check_number(n, v, 0)))
        object.__setattr__(self, "ks", as_tuple("FlossingSweep.ks", self.ks,
                                                lambda n, v: check_int(n, v, 1, self.model.n_hidden)))
        for name in ("n_networks", "spectrum_k", "spectrum_steps", "horizon", "sv_every", "shard_size"):
            check_int(f"FlossingSweep.{name}", getattr(self, name), 1)
        check_int("FlossingSweep.floss_steps", self.floss_steps, 0)
        check_seed("FlossingSweep.seed", self.seed)


def _drive(E: int, batch: int, T: int, config: FlossConfig, gen, dtype, device) -> torch.Tensor:
    """(E, batch, T, 1) inputs like the flossing's: random bits ("task", encoded alike) or zeros ("zero")."""
    if config.input == "zero":
        return torch.zeros(E, batch, T, 1, dtype=dtype, device=device)
    return bit_signal(random_bits(E, batch, T, 1, generator=gen), config.encoding, dtype=dtype, device=device)


def _keys(s: FlossingSweep, a: int, b: int) -> list:
    """The names of networks a..b-1 (gain, seed), which seed their generators."""
    return [f"g{float(g)!r}/s{i}" for g in s.gains for i in range(s.n_networks)][a:b]  # g = 2 and 2.0 alike


def _initial(s: FlossingSweep, a: int, b: int, device):
    """Networks a..b-1 before flossing: drawn at gain 1, W scaled by each network's gain."""
    model = dataclasses.replace(s.model, gain=1.0).build(
        1, 1, n_networks=b - a, generator=network_generators(s.seed, "init", _keys(s, a, b)), device=device)
    gain_of = torch.tensor(s.gains).repeat_interleave(s.n_networks)[a:b]  # (b - a,)
    with torch.no_grad():
        model.W.mul_(gain_of.to(model.W).view(-1, 1, 1))
    return model


def _measure(s: FlossingSweep, model, a: int, b: int) -> dict:
    """Spectrum, gradient-norm profile and long-term-Jacobian singular values of networks a..b-1 (``model``), driven
    like the flossing, from the same random starts before and after flossing."""
    E, keys, f64 = b - a, _keys(s, a, b), torch.float64  # E: the shard's networks
    device, k = model.W.device, min(s.spectrum_k, s.model.n_hidden)

    def gens(stage):
        return network_generators(s.seed, stage, keys)

    drive_spec = _drive(E, 4, s.spectrum_steps, s.floss, gens("drive spectrum"), model.W.dtype, device)
    drive_long = _drive(E, 8, s.horizon + 1, s.floss, gens("drive long"), f64, device)
    m64 = copy.deepcopy(model).to(f64)
    with torch.no_grad():
        spec = lyapunov_spectrum(model, drive_spec, k, generator=gens("start spectrum"), method="reference").cpu()
        log_sv = long_term_jacobian_singular_values(m64, drive_long[:, :1, :s.horizon], k, t_ons=s.sv_every,
                                                    generator=gens("start sv"))[:, 0].cpu()
    profile = gradient_norm_profile(m64, drive_long, generator=gens("start profile")).cpu()
    return {"spectrum": spec, "profile": profile, "log_sv": log_sv}


def _before_shard(s: FlossingSweep, a: int, b: int, device) -> dict:
    return _measure(s, _initial(s, a, b, device), a, b)


def _after_shard(s: FlossingSweep, k: int, a: int, b: int, device, progress: bool) -> dict:
    """Networks a..b-1 flossed with this k, and measured."""
    model = _initial(s, a, b, device)
    res = floss(model, s.floss_steps, config=dataclasses.replace(s.floss, k=k),
                generator=network_generators(s.seed, f"floss k{k}", _keys(s, a, b)), progress=progress)
    return {**_measure(s, model, a, b), "floss_exponents": res.exponents, "failed": res.failed}


def flossing_sweep(sweep: FlossingSweep, *, device: str = "cpu", progress: bool = True, cluster=None) -> dict:
    """Run the sweep. For every k in ``ks``: the E = len(gains) * n_networks networks (network
    ``e = i * n_networks + s`` has gain ``gains[i]``, seed s; the same initial networks for every k) are flossed.

    Randomness: network (gain g, seed s) draws from its own generators, seeded from (sweep.seed, stage, "g<g>/s<s>")
    (``common.network_generators``): its initial weights ("init"), its flossing inputs, starts and bases
    ("floss k<k>"), and the drives and random starts of the measurements (the same before and after flossing).

    Shards (``experiments.sharding``): the "before" measurements and each k's flossing and measurements run as
    independent ensembles of at most ``sweep.shard_size`` networks, here one after the other or, with ``cluster``
    (a Dask ``Client``, scheduler address or Cluster), as Dask tasks at once: the same numbers, bit for bit.

    Returns a dict with (lists "after" are aligned with ``ks``)
        gains (E,), ks, floss_exponents [(floss_steps, E, k) per k] measured during flossing,
        spectrum_before (E, spectrum_k), spectrum_after [(E, spectrum_k) per k] over long trajectories,
        profile_before (E, horizon + 1), profile_after [... per k]: gradient norm of a late loss w.r.t. the state
            tau steps earlier (float64), and
        log_sv_before (E, horizon // sv_every, spectrum_k), log_sv_after [... per k]: log singular values of the
            long-term Jacobian every sv_every steps (float64), sv_times; failed [(E,) per k].
    All trajectories are driven like the flossing (``floss.input``), from the same random starts.
    """
    s = sweep
    E = len(s.gains) * s.n_networks
    parts = ranges(E, s.shard_size)
    inner = progress and cluster is None  # the steps' progress bars in this process, the shards' on a cluster
    with open_executor(cluster, progress=progress) as ex:
        shards = [Shard("flossing_sweep", a, b, "before flossing") for a, b in parts]
        tasks = [ex.submit(sh, _before_shard, s, a, b, device) for sh, (a, b) in zip(shards, parts)]
        for k in s.ks:
            after = [Shard("flossing_sweep", a, b, f"k = {k}") for a, b in parts]
            tasks += [ex.submit(sh, _after_shard, s, k, a, b, device, inner) for sh, (a, b) in zip(after, parts)]
            shards += after
        done = ex.gather(tasks, shards)
    n, dims = len(parts), {"floss_exponents": 1}  # (floss_steps, E, k); the others have E first
    before, after = join(done[:n]), [join(done[n * (i + 1):n * (i + 2)], dims) for i in range(len(s.ks))]
    out = {"gains": torch.tensor(s.gains).repeat_interleave(s.n_networks), "ks": list(s.ks),
           "sv_times": torch.arange(s.sv_every, s.horizon + 1, s.sv_every),
           "spectrum_before": before["spectrum"], "profile_before": before["profile"],
           "log_sv_before": before["log_sv"]}
    for key, name in (("floss_exponents", "floss_exponents"), ("spectrum_after", "spectrum"),
                      ("profile_after", "profile"), ("log_sv_after", "log_sv"), ("failed", "failed")):
        out[key] = [part[name] for part in after]
    return out
