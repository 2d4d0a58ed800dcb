"""Random draws from explicit generators, onto any device, one stream per ensemble or one per network.

Two rules keep the numbers reproducible: the library never seeds globally (every draw takes a ``torch.Generator``),
and draws are made on the generator's device and then moved, so a CPU generator gives the same numbers on CPU and
CUDA. A *generator argument* is one of

    None                        torch's default generator
    torch.Generator             one stream for the whole ensemble
    [torch.Generator] * E       one per network: network e's slice is drawn from generator e alone, so a network in an
                                ensemble gets exactly the numbers it gets built (or trained) alone with that generator
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

__all__ = ["GeneratorArg", "sample", "draw", "check_generator"]

GeneratorArg = Union[torch.Generator, Sequence[torch.Generator], None]


def check_generator(generator, n_networks: int, name: str = "generator"):
    """``generator`` if it is None, a torch.Generator, or a list/tuple of ``n_networks`` of them."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)):
        if len(generator) != n_networks or not all(isinstance(g, torch.Generator) for g in generator):
            raise ValueError(f"{name} must be a torch.Generator or a list of {n_networks} (one per network), "
                             f"got a list of {len(generator)}")
        return generator
    raise ValueError(f"{name} must be a torch.Generator, a list of them (one per network) or None, "
                     f"got {type(generator).__name__}")


def draw(fn: Callable[[int, torch.Generator | None], torch.Tensor], generator: GeneratorArg,
         n_networks: int) -> torch.Tensor:
    """A tensor with leading network dimension E = n_networks.

    ``fn(n, gen)`` must return a tensor whose first dimension is n. With a list of E generators, network e's slice
    is ``fn(1, generator[e])``; with one generator (or None), it is one draw ``fn(E, generator)``."""
    if isinstance(generator, (list, tuple)):
        check_generator(generator, n_networks)
        return torch.cat([fn(1, g) for g in generator], dim=0)
    return fn(n_networks, generator)


def sample(fn, *shape, generator: GeneratorArg = None, dtype=None, device=None) -> torch.Tensor:
    """``fn(*shape)`` (torch.randn, torch.rand, ...) drawn from ``generator`` and placed on ``device``.

    With a list of generators, ``shape[0]`` is the number of networks and network e's slice comes from generator e."""

    def one(n, g):
        src = g.device if g is not None else device
        return fn(n, *shape[1:], generator=g, dtype=dtype, device=src).to(device)

    if isinstance(generator, (list, tuple)):
        return draw(one, generator, shape[0])
    src = generator.device if generator is not None else device
    return fn(*shape, generator=generator, dtype=dtype, device=src).to(device)
