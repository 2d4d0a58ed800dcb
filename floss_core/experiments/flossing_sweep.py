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
from .common import as_tuple, check_seed, generator

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

    def __post_init__(self):
        object.__setattr__(self, "gains", as_tuple("FlossingSweep.gains", self.gains,
                                                   lambda n, v: check_number(n, v, 0)))
        object.__setattr__(self, "ks", as_tuple("FlossingSweep.ks", self.ks,
                                                lambda n, v: check_int(n, v, 1, self.model.n_hidden)))
        for name in ("n_networks", "spectrum_k", "spectrum_steps", "horizon", "sv_every"):
            check_int(f"FlossingSweep.{name}", getattr(self, name), 1)
        check_int("FlossingSweep.floss_steps", self.floss_steps, 0)
        check_seed("FlossingSweep.seed", self.seed)


def _drive(E: int, batch: int, T: int, config: FlossConfig, gen, dtype, device) -> torch.Tensor:
    """(E, batch, T, 1) inputs like the flossing's: random bits ("task", encoded alike) or zeros ("zero")."""
    if config.input == "zero":
        return torch.zeros(E, batch, T, 1, dtype=dtype, device=device)
    return bit_signal(random_bits(E, batch, T, 1, generator=gen), config.encoding, dtype=dtype, device=device)


def flossing_sweep(sweep: FlossingSweep, *, device: str = "cpu", progress: bool = True) -> dict:
    """Run the sweep. For every k in ``ks``: one ensemble of E = len(gains) * n_networks networks (network
    ``e = i * n_networks + s`` has gain ``gains[i]``, seed s; the same initial networks for every k) is flossed.

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
    base = dataclasses.replace(s.model, gain=1.0).build(1, 1, n_networks=E, generator=generator(s.seed),
                                                        device=device)
    gain_of = torch.tensor(s.gains).repeat_interleave(s.n_networks)  # (E,)
    with torch.no_grad():
        base.W.mul_(gain_of.to(base.W).view(E, 1, 1))
    spectrum_k = min(s.spectrum_k, s.model.n_hidden)
    f64 = torch.float64
    drive_spec = _drive(E, 4, s.spectrum_steps, s.floss, generator(s.seed + 1), base.W.dtype, device)
    drive_long = _drive(E, 8, s.horizon + 1, s.floss, generator(s.seed + 2), f64, device)
    drive_sv = drive_long[:, :1, :s.horizon]

    def measure(model):
        m64 = copy.deepcopy(model).to(f64)
        with torch.no_grad():
            spec = lyapunov_spectrum(model, drive_spec, spectrum_k, generator=generator(s.seed + 3),
                                     method="reference").cpu()
            log_sv = long_term_jacobian_singular_values(m64, drive_sv, spectrum_k, t_ons=s.sv_every,
                                                        generator=generator(s.seed + 4))[:, 0].cpu()
        profile = gradient_norm_profile(m64, drive_long, generator=generator(s.seed + 5)).cpu()
        return spec, profile, log_sv

    out = {"gains": gain_of, "ks": list(s.ks), "floss_exponents": [], "spectrum_after": [], "profile_after": [],
           "log_sv_after": [], "failed": [], "sv_times": torch.arange(s.sv_every, s.horizon + 1, s.sv_every)}
    out["spectrum_before"], out["profile_before"], out["log_sv_before"] = measure(base)
    for k in s.ks:
        model = copy.deepcopy(base)
        res = floss(model, s.floss_steps, config=dataclasses.replace(s.floss, k=k),
                    generator=generator(s.seed + 10 + k), progress=progress)
        spec, profile, log_sv = measure(model)
        for key, value in (("floss_exponents", res.exponents), ("spectrum_after", spec), ("profile_after", profile),
                           ("log_sv_after", log_sv), ("failed", res.failed)):
            out[key].append(value)
    return out
