"""Figures 1 and 2: flossing the first k exponents of ensembles started at several gains to several targets, and what
it changes (the spectrum, the gradient-norm profile, the singular values of the long-term Jacobian).

Gradient modes per gain (``FlossingSweep.gradients``): from a chaotic start the full gradient over a trajectory of T
steps is dominated by the trajectory's own sensitivity, which grows like exp(lambda_1 T); the state-detached gradient
stays bounded but, from stable starts, converges poorly for k > 1 (see the README's "Gradient modes"). A sweep can
therefore floss each starting gain with its own mode."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch

from ..cells import ModelConfig
from ..checks import check_choice, check_int, check_number
from ..diagnostics import gradient_norm_profile, long_term_jacobian_singular_values
from ..flossing import FlossConfig, floss
from ..spectrum import GRADIENT_MODES
from ..spectrum import spectrum_estimate
from ..tasks import bit_signal, random_bits
from .common import as_tuple, check_seed, network_generators
from .sharding import Shard, join, open_executor, ranges

__all__ = ["FlossingSweep", "flossing_sweep"]


@dataclass(frozen=True)
class FlossingSweep:
    """Flossing ensembles started at several gains, for several k and several targets (figures 1 and 2): the same
    initial networks are flossed once for every (k, target) pair of ``runs``."""
    gains: tuple = (0.5, 1.0, 2.0)  # starting gains g (ModelConfig.gain is replaced by each)
    ks: tuple = (1, 16)  # numbers of exponents flossed (FlossConfig.k is replaced by each)
    targets: tuple = (0.0,)  # target exponents, nats per step (FlossConfig.target is replaced by each)
    target_ks: tuple | None = None  # the ks flossed to every target, the others to targets[0] only; None: every k
    gradients: tuple | None = None  # per gain, its FlossConfig.gradient ("full"/"detached"); None: floss.gradient
    n_networks: int = 6  # networks per gain
    floss_steps: int = 500  # flossing (Adam) steps
    model: ModelConfig = ModelConfig()
    floss: FlossConfig = FlossConfig()  # also sets the inputs of every measurement ("task" or "zero")
    spectrum_k: int = 32  # exponents measured before and after (at most N)
    spectrum_steps: int = 2000  # steps of the trajectories measuring the spectra
    horizon: int = 300  # longest lag tau of the gradient profile and the long-term Jacobian
    sv_every: int = 5  # the long-term Jacobian's singular values every this many steps
    sv_gains: tuple | None = None  # the gains whose singular values are measured (costly); None: all; others NaN
    seed: int = 0
    shard_size: int = 16  # networks per shard: independent ensembles of at most this many (experiments.sharding)

    def __post_init__(self):
        object.__setattr__(self, "gains", as_tuple("FlossingSweep.gains", self.gains,
                                                   lambda n, v: check_number(n, v, 0)))
        object.__setattr__(self, "ks", as_tuple("FlossingSweep.ks", self.ks,
                                                lambda n, v: check_int(n, v, 1, self.model.n_hidden)))
        object.__setattr__(self, "targets", as_tuple("FlossingSweep.targets", self.targets, check_number))
        for name in ("gains", "ks", "targets"):
            values = getattr(self, name)
            if len(set(values)) < len(values):
                raise ValueError(f"FlossingSweep.{name} must not repeat a value, got {list(values)}")
        if self.sv_gains is not None:
            object.__setattr__(self, "sv_gains", as_tuple("FlossingSweep.sv_gains", self.sv_gains,
                                                          lambda n, v: check_choice(n, v, self.gains)))
        if self.target_ks is not None:
            object.__setattr__(self, "target_ks", as_tuple("FlossingSweep.target_ks", self.target_ks,
                                                           lambda n, v: check_choice(n, v, self.ks)))
        if self.gradients is not None:
            gradients = as_tuple("FlossingSweep.gradients", self.gradients,
                                 lambda n, v: check_choice(n, v, GRADIENT_MODES))
            if len(gradients) != len(self.gains):
                raise ValueError(f"FlossingSweep.gradients must give one gradient mode per gain ({len(self.gains)}), "
                                 f"got {list(gradients)}")
            object.__setattr__(self, "gradients", gradients)
        for name in ("n_networks", "spectrum_k", "spectrum_steps", "horizon", "sv_every", "shard_size"):
            check_int(f"FlossingSweep.{name}", getattr(self, name), 1)
        check_int("FlossingSweep.floss_steps", self.floss_steps, 0)
        check_seed("FlossingSweep.seed", self.seed)

    @property
    def runs(self) -> list:
        """The (k, target) pairs flossed, k first: every k to targets[0], the ks of target_ks to every target."""
        return [(k, t) for k in self.ks for t in self.targets
                if t == self.targets[0] or self.target_ks is None or k in self.target_ks]


def _drive(E: int, batch: int, T: int, config: FlossConfig, gen, dtype, device) -> torch.Tensor:
    """(E, batch, T, 1) inputs like the flossing's: random bits ("task", encoded alike) or zeros ("zero")."""
    if config.input == "zero":
        return torch.zeros(E, batch, T, 1, dtype=dtype, device=device)
    return bit_signal(random_bits(E, batch, T, 1, generator=gen), config.encoding, dtype=dtype, device=device)


def _keys(s: FlossingSweep, a: int, b: int) -> list:
    """The names of networks a..b-1 (gain, seed), which seed their generators (with the stage: the flossing's names
    the k and the target)."""
    return [f"g{float(g)!r}/s{i}" for g in s.gains for i in range(s.n_networks)][a:b]  # g = 2 and 2.0 alike


def _initial(s: FlossingSweep, a: int, b: int, device):
    """Networks a..b-1 before flossing: drawn at gain 1, W scaled by each network's gain."""
    model = dataclasses.replace(s.model, gain=1.0).build(
        1, 1, n_networks=b - a, generator=network_generators(s.seed, "init", _keys(s, a, b)), device=device)
    gain_of = torch.tensor(s.gains).repeat_interleave(s.n_networks)[a:b]  # (b - a,)
    with torch.no_grad():
        model.W.mul_(gain_of.to(model.W).view(-1, 1, 1))
    return model


def _runs(flags: list) -> list:
    """[(i, j, flag), ...]: the maximal runs of equal consecutive flags."""
    cuts = [i for i in range(1, len(flags)) if flags[i] != flags[i - 1]]
    return [(i, j, flags[i]) for i, j in zip([0] + cuts, cuts + [len(flags)])]


def _part(s: FlossingSweep, model, a: int, i: int, j: int):
    """Networks i..j-1 of ``model`` (networks a.. of the sweep) as an ensemble of their own (a copy)."""
    if (i, j) == (0, model.n_networks):
        return model
    part = _initial(s, a + i, a + j, model.W.device).to(model.W.dtype)
    with torch.no_grad():
        for p, q in zip(part.parameters(), model.parameters()):  # every parameter has the networks first
            p.copy_(q[i:j])
    return part


def _measure(s: FlossingSweep, model, a: int, b: int) -> dict:
    """Spectrum, gradient-norm profile and long-term-Jacobian singular values of networks a..b-1 (``model``), driven
    like the flossing, from the same random starts before and after flossing. The singular values only for the
    networks of ``sv_gains`` (consecutive ones as one ensemble), NaN for the others."""
    E, keys, f64 = b - a, _keys(s, a, b), torch.float64  # E: the shard's networks
    device, k = model.W.device, min(s.spectrum_k, s.model.n_hidden)

    def gens(stage, i=0, j=E):
        return network_generators(s.seed, stage, keys[i:j])

    drive_spec = _drive(E, 4, s.spectrum_steps, s.floss, gens("drive spectrum"), model.W.dtype, device)
    drive_long = _drive(E, 8, s.horizon + 1, s.floss, gens("drive long"), f64, device)
    m64 = copy.deepcopy(model).to(f64)
    gain_of = torch.tensor(s.gains).repeat_interleave(s.n_networks)[a:b].tolist()
    log_sv = torch.full((E, -(-s.horizon // s.sv_every), k), float("nan"), dtype=f64)  # (E, reports, k)
    with torch.no_grad():
        est = spectrum_estimate(model, drive_spec, k, generator=gens("start spectrum"), method="reference")
        spec, spec_se = est.exponents.cpu(), est.stderr.cpu()  # lyapunov_spectrum's exponents, bit for bit
        for i, j, wanted in _runs([s.sv_gains is None or g in s.sv_gains for g in gain_of]):
            if wanted:
                log_sv[i:j] = long_term_jacobian_singular_values(
                    _part(s, m64, a, i, j), drive_long[i:j, :1, :s.horizon], k, t_ons=s.sv_every,
                    generator=gens("start sv", i, j))[:, 0].cpu()
    profile = gradient_norm_profile(m64, drive_long, generator=gens("start profile")).cpu()
    return {"spectrum": spec, "spectrum_stderr": spec_se, "profile": profile, "log_sv": log_sv}


def _before_shard(s: FlossingSweep, a: int, b: int, device) -> dict:
    return _measure(s, _initial(s, a, b, device), a, b)


def _gradient_of(s: FlossingSweep) -> list:
    """The gradient mode of every network (E,)."""
    modes = s.gradients or (s.floss.gradient,) * len(s.gains)
    return [m for m in modes for _ in range(s.n_networks)]


def _after_shard(s: FlossingSweep, k: int, target: float, a: int, b: int, device, progress: bool) -> dict:
    """Networks a..b-1 flossed with this k to this target, and measured. Consecutive networks of one gradient mode
    are flossed as one ensemble (the shard's range alone decides which)."""
    model = _initial(s, a, b, device)
    stage = f"floss k{k} target{float(target)!r}"
    exps, failed = [], []
    for i, j, mode in _runs(_gradient_of(s)[a:b]):
        part = _part(s, model, a, i, j)
        config = dataclasses.replace(s.floss, k=k, target=target, gradient=mode)
        res = floss(part, s.floss_steps, config=config, progress=progress,
                    generator=network_generators(s.seed, stage, _keys(s, a + i, a + j)))
        if part is not model:
            with torch.no_grad():
                for p, q in zip(model.parameters(), part.parameters()):  # every parameter has the networks first
                    p[i:j] = q
        exps.append(res.exponents)  # (floss_steps, j - i, k)
        failed.append(res.failed)
    return {**_measure(s, model, a, b), "floss_exponents": torch.cat(exps, 1), "failed": torch.cat(failed)}


def flossing_sweep(sweep: FlossingSweep, *, device: str = "cpu", progress: bool = True, cluster=None) -> dict:
    """Run the sweep. For every pair (k, target) of ``sweep.runs`` (k first; see ``target_ks``): the
    E = len(gains) * n_networks networks (network ``e = i * n_networks + s`` has gain ``gains[i]``, seed s; the same
    initial networks for every pair) are flossed, each with the gradient mode of its gain (``gradients``).

    Randomness: network (gain g, seed s) draws from its own generators, seeded from (sweep.seed, stage, "g<g>/s<s>")
    (``common.network_generators``): its initial weights ("init"), its flossing inputs, starts and bases
    ("floss k<k> target<target>"), and the drives and random starts of the measurements (the same before and after
    flossing).

    Shards (``experiments.sharding``): the "before" measurements and each pair's flossing and measurements run as
    independent ensembles of at most ``sweep.shard_size`` networks, here one after the other or, with ``cluster``
    (a Dask ``Client``, scheduler address or Cluster), as Dask tasks at once: the same numbers, bit for bit.

    Returns a dict with (lists "after" are aligned with ``runs``)
        gains (E,), gradients [E strings], ks, targets, runs [(k, target), ...],
        floss_exponents [(floss_steps, E, k) per run] measured during flossing,
        spectrum_before (E, spectrum_k), spectrum_after [(E, spectrum_k) per run] over long trajectories, and
            spectrum_stderr_before, spectrum_stderr_after: their standard errors (``spectrum_estimate``),
        profile_before (E, horizon + 1), profile_after [... per run]: gradient norm of a late loss w.r.t. the state
            tau steps earlier (float64), and
        log_sv_before (E, horizon // sv_every, spectrum_k), log_sv_after [... per run]: log singular values of the
            long-term Jacobian every sv_every steps (float64; NaN for gains not in sv_gains), sv_times;
        failed [(E,) per run].
    All trajectories are driven like the flossing (``floss.input``), from the same random starts.
    """
    s = sweep
    E = len(s.gains) * s.n_networks
    parts = ranges(E, s.shard_size)
    runs = s.runs
    inner = progress and cluster is None  # the steps' progress bars in this process, the shards' on a cluster
    with open_executor(cluster, progress=progress) as ex:
        shards = [Shard("flossing_sweep", a, b, "before flossing") for a, b in parts]
        tasks = [ex.submit(sh, _before_shard, s, a, b, device) for sh, (a, b) in zip(shards, parts)]
        for k, target in runs:
            after = [Shard("flossing_sweep", a, b, f"k = {k}, target {target}") for a, b in parts]
            tasks += [ex.submit(sh, _after_shard, s, k, target, a, b, device, inner)
                      for sh, (a, b) in zip(after, parts)]
            shards += after
        done = ex.gather(tasks, shards)
    n, dims = len(parts), {"floss_exponents": 1}  # (floss_steps, E, k); the others have E first
    before, after = join(done[:n]), [join(done[n * (i + 1):n * (i + 2)], dims) for i in range(len(runs))]
    out = {"gains": torch.tensor(s.gains).repeat_interleave(s.n_networks), "gradients": _gradient_of(s),
           "ks": list(s.ks), "targets": list(s.targets), "runs": runs,
           "sv_times": torch.tensor(sorted({*range(s.sv_every, s.horizon + 1, s.sv_every), s.horizon})),
           "spectrum_before": before["spectrum"], "spectrum_stderr_before": before["spectrum_stderr"],
           "profile_before": before["profile"],
           "log_sv_before": before["log_sv"]}
    for key, name in (("floss_exponents", "floss_exponents"), ("spectrum_after", "spectrum"),
                      ("spectrum_stderr_after", "spectrum_stderr"),
                      ("profile_after", "profile"), ("log_sv_after", "log_sv"), ("failed", "failed")):
        out[key] = [part[name] for part in after]
    return out
