"""Random draws from an explicit generator onto any device.

A ``torch.Generator`` lives on one device; drawing with it onto another raises. ``sample`` draws on the
generator's device and moves the result, so a CPU generator gives the same numbers on CPU and CUDA (same seed, same
networks, whatever the device)."""
from __future__ import annotations

import torch

__all__ = ["sample"]


def sample(fn, *shape, generator: torch.Generator | None = None, dtype=None, device=None) -> torch.Tensor:
    """``fn(*shape)`` (torch.randn, torch.rand, ...) drawn from ``generator`` and placed on ``device``."""
    src = generator.device if generator is not None else device
    return fn(*shape, generator=generator, dtype=dtype, device=src).to(device)
