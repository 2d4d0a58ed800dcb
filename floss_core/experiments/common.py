"""What the figure sweeps share: building a sweep's config from a notebook's plain parameters, and one random
stream per network.

Per-network streams. Every random draw of a sweep comes from a generator of one network, seeded from
(sweep seed, stage, network): ``network_generators(seed, "train", keys)`` gives one CPU generator per key, seeded
with the first 63 bits of sha256("<seed>/<stage>/<key>"). A key names a network by what it is (e.g. "copy/d20/s3":
task, delay, seed), not by its position in the ensemble, so a network draws the same numbers whichever networks
share its shard (``experiments.sharding``), and adding a delay or a seed to a sweep leaves the other networks' draws
as they were.
"""
from __future__ import annotations

import dataclasses
import hashlib

import torch

from ..checks import check_int

__all__ = ["build", "network_generators", "as_tuple"]


def network_generators(seed: int, stage: str, keys) -> list:
    """One CPU generator per network key (draws are made on the CPU and moved, so the numbers do not depend on the
    device), seeded from (seed, stage, key) alone."""
    def one(key) -> torch.Generator:
        digest = hashlib.sha256(f"{seed}/{stage}/{key}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)

    return [one(key) for key in keys]


def as_tuple(name: str, value, item=None) -> tuple:
    """A non-empty list or tuple as a tuple (a notebook's parameters are lists), each item checked by ``item``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be a non-empty list, got {value!r}")
    return tuple(item(f"{name}[{i}]", v) if item else v for i, v in enumerate(value))


def build(cls, **params):
    """``cls(**params)`` where a dict given for a config field updates that field's default.

    ``build(DelaySweep, delays=[10, 20], train={"n_steps": 1500})`` is ``DelaySweep(delays=(10, 20),
    train=replace(DelaySweep.train, n_steps=1500))``: a notebook states only what it changes from the author's
    settings, as plain values papermill can pass. Unknown names raise ValueError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; its fields: {sorted(fields)}")
    kwargs = {}
    for name, value in params.items():
        default = fields[name].default
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            names = {f.name for f in dataclasses.fields(default)}
            bad = sorted(set(value) - names)
            if bad:
                raise ValueError(f"{cls.__name__}.{name} is a {type(default).__name__}, which has no field(s) {bad}; "
                                 f"its fields: {sorted(names)}")
            value = dataclasses.replace(default, **value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def check_seed(name: str, seed) -> int:
    return check_int(name, seed, 0)
