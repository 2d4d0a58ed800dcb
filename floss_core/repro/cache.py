"""A disk cache for the slow computations of the figure notebooks.

``cached(name, params, compute)`` returns ``compute()``, a dict of tensors / lists / numbers, and stores it on disk
under a key made of the name, the parameters (as canonical JSON) and the *code version*: a hash of the torch version
and of the floss_core code that computes results, as imported (every ``*.py`` but ``repro/``: ``floss_core._source``).
Rerunning a notebook with the same parameters and unchanged library code only re-plots; changing a parameter or a
computing file of the library recomputes (a change of the plotting or the runner does not). The thread count of
the computation is not part of the key, though it moves results at roundoff: a result computed on one thread per
Dask worker is served to a run with two threads in one process, and the other way round.

Layout of the cache directory (default ``$FLOSS_CACHE_DIR``, else ``_cache/`` under the working directory):

    <name>-<key>.pt     the result, written with ``torch.save`` (atomically: a temp file, then ``os.replace``)
    <name>-<key>.json   what produced it: name, params, code version, torch version, compute time, date

What a result may hold (so that it loads back with ``torch.load(weights_only=True)``): dicts with string keys,
lists, tuples, tensors (stored detached, on the CPU), ints, floats, bools, strings and None. Dataclasses (e.g.
``FlossResult``, ``History``) are converted to dicts with ``dataclasses.asdict``. The *converted* result is returned
on the first call as well, so a notebook sees the same objects whether or not the cache was hit.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import numbers
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from .. import _source

__all__ = ["cached", "code_version", "cache_key", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$FLOSS_CACHE_DIR`` if set, else ``_cache`` under the current working directory."""
    env = os.environ.get("FLOSS_CACHE_DIR")
    return Path(env) if env else Path.cwd() / "_cache"


def code_version() -> str:
    """sha256 (16 hex digits) of the torch version and of floss_core's computing code as this process imported it
    (``floss_core._source``: every ``*.py`` but ``repro/``, hashed at import; edits after that need a restart)."""
    return hashlib.sha256(f"torch {torch.__version__}\n{_source.AT_IMPORT}".encode()).hexdigest()[:16]


def _dataclass_as_dict(value):
    """``json.dumps``'s hook: a config dataclass anywhere in the parameters is written as its ``asdict``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _canonical(params: dict) -> str:
    """Canonical JSON of the parameters (sorted keys, no NaN); raises TypeError for values JSON cannot hold.
    Dataclasses, at the top or inside the dict (``{"sweep": sweep, "device": device}``), become their ``asdict``."""
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = dataclasses.asdict(params)
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict, got {type(params).__name__}")
    try:
        return json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_dataclass_as_dict)
    except (TypeError, ValueError) as err:
        raise TypeError(f"params must be plain JSON (str, int, float, bool, None, lists, dicts): {err}") from None


def cache_key(name: str, params: dict) -> str:
    """The key (16 hex digits) of (name, params, code version)."""
    text = f"{name}\n{_canonical(params)}\n{code_version()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value, where: str = "result"):
    """``value`` converted to what ``torch.load(weights_only=True)`` reads back; TypeError names anything else."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a non-string key {k!r}; use string keys")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, numbers.Integral):  # numpy integers
        return int(value)
    if isinstance(value, numbers.Real):  # numpy floats
        return float(value)
    raise TypeError(f"{where} is a {type(value).__name__}: a cached result may hold only dicts, lists, tuples, "
                    "tensors, numbers, strings and None (convert numpy arrays with torch.as_tensor)")


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cached(name: str, params: dict, compute: Callable[[], dict], *, cache_dir=None, refresh: bool = False) -> dict:
    """``compute()``, loaded from the disk cache when (name, params, code version) was computed before.

    Main arguments:
        name: a short file-name-safe label, e.g. "fig2_spectra".
        params: everything the result depends on, as plain JSON (the notebook's parameters, seeds, device...);
            config dataclasses (e.g. an experiment's), the whole params or values in it, are converted with
            ``dataclasses.asdict``.
            ``compute`` must be a deterministic function of them (seed its own ``torch.Generator`` from them).
        compute: a function of no arguments returning a dict (see the module docstring for what it may hold).

    Other arguments (keyword-only):
        cache_dir: where to store it (default ``$FLOSS_CACHE_DIR``, else ``./_cache``).
        refresh: recompute and overwrite even if a cached result exists.

    A file that cannot be read (truncated, corrupt, from an incompatible torch) is reported with a warning and
    recomputed.
    """
    if not isinstance(name, str) or not name or any(c in name for c in "/\\\0") or name.startswith("."):
        raise ValueError(f"name must be a non-empty file-name-safe string, got {name!r}")
    key = cache_key(name, params)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / f"{name}-{key}.pt"
    if path.exists() and not refresh:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is recomputed
            warnings.warn(f"cache file {path} is unreadable ({type(err).__name__}: {err}); recomputing",
                          RuntimeWarning, stacklevel=2)
    start = time.perf_counter()
    result = compute()
    seconds = time.perf_counter() - start
    if not isinstance(result, dict) and not (dataclasses.is_dataclass(result) and not isinstance(result, type)):
        raise TypeError(f"compute() must return a dict, got {type(result).__name__}")
    result = _plain(result)
    root.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda tmp: torch.save(result, tmp))
    meta = {"name": name, "key": key, "params": json.loads(_canonical(params)), "code_version": code_version(),
            "torch": torch.__version__, "compute_seconds": round(seconds, 3),
            "created": datetime.datetime.now().isoformat(timespec="seconds")}

    def write_meta(tmp):
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.write("\n")
    _atomic_write(path.with_suffix(".json"), write_meta)
    return result
