"""What the runner's command line and environment say: options, directories, threads, device, notebooks.

Everything here is checked before any notebook runs; bad input raises ``UsageError`` (exit status 2) with one
message naming the culprit. Directories default to the working directory (not to where the package lives).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .quick_params import QUICK_PARAMS_NAME

__all__ = ["NOTEBOOK_GLOB", "Options", "Settings", "UsageError", "check_device", "parse_args", "select_notebooks",
           "settings_from_env"]

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"


class UsageError(ValueError):
    """Bad command line or environment: reported before anything runs, exit status 2."""


@dataclass
class Options:
    """The command line."""

    quick: bool = False
    device: str | None = None
    cluster: str | None = None  # "local" or a Dask scheduler address ("none" on the command line: None)
    cluster_by_default: bool = False  # cluster "local" chosen by the runner, not by --cluster
    listing: bool = False
    help: bool = False
    names: list[str] = field(default_factory=list)


@dataclass
class Settings:
    """Where the notebooks are and where their outputs go (absolute), and the threads per kernel."""

    notebook_dir: Path
    fig_dir: Path
    cache_dir: Path
    executed_dir: Path
    quick_params: Path
    threads: int


def parse_args(argv) -> Options:
    """Options from the command line (as run_all.sh always parsed it: options and names in any order)."""
    opts, args = Options(), list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            opts.help = True
            return opts
        if arg in ("--quick", "--list"):
            setattr(opts, "quick" if arg == "--quick" else "listing", True)
        elif arg.split("=", 1)[0] in ("--device", "--cluster"):
            name, _, value = arg.partition("=")
            value = value if "=" in arg else (args.pop(0) if args else "")
            if not value:
                raise UsageError(f"{name} needs a value")
            setattr(opts, name[2:], value)
        elif arg == "--":
            opts.names += args
            break
        elif arg.startswith("-"):
            raise UsageError(f"unknown option '{arg}'")
        else:
            opts.names.append(arg)
    return opts


def _threads(env: Mapping[str, str]) -> int:
    value = env.get("FLOSS_THREADS", "")
    if not value:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
        raise UsageError(f"FLOSS_THREADS must be a positive integer, got {value!r}")
    return int(value)


def settings_from_env(env: Mapping[str, str], *, quick: bool = False, cwd=None) -> Settings:
    """The directories and threads from the ``FLOSS_*`` variables, defaults under ``cwd`` (the working directory)."""
    cwd = Path(cwd if cwd is not None else os.getcwd())

    def path(var: str, default: str) -> Path:
        return Path(os.path.abspath(cwd / (env.get(var) or default)))

    threads = _threads(env)
    notebook_dir = path("FLOSS_NOTEBOOK_DIR", "notebooks")
    if not notebook_dir.is_dir():
        raise UsageError(f"notebook directory '{notebook_dir}' does not exist")
    fig_dir = path("FLOSS_FIG_DIR", "figures_quick" if quick else "figures")
    cache_dir, executed_dir = path("FLOSS_CACHE_DIR", "_cache"), path("FLOSS_EXECUTED_DIR", "_executed")
    if quick:
        cache_dir, executed_dir = cache_dir / "quick", executed_dir / "quick"
        if fig_dir.resolve() == (cwd / "figures").resolve():
            raise UsageError("--quick must not write into figures/ (unset FLOSS_FIG_DIR)")
        if env.get("FLOSS_FIG_DIR"):  # the paper-scale figures' directory: quick ones go beside them, never over them
            fig_dir = fig_dir / "quick"
    quick_params = path("FLOSS_QUICK_PARAMS", str(notebook_dir / QUICK_PARAMS_NAME))
    if env.get("FLOSS_QUICK_PARAMS") and not quick_params.is_file():
        raise UsageError(f"FLOSS_QUICK_PARAMS: no file '{env['FLOSS_QUICK_PARAMS']}'")
    return Settings(notebook_dir, fig_dir, cache_dir, executed_dir, quick_params, threads)


def check_device(device: str, *, available: bool = True) -> None:
    """UsageError unless ``torch.device(device)`` parses, is not "meta" and, with ``available``, exists here (a cuda
    device by count, any other by making a tensor there)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"invalid --device {device!r}: {err}") from None
    if parsed.type == "meta":
        raise UsageError(f"--device {device}: a meta device holds no data, the figures cannot be computed on it")
    if available and parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available here (torch.cuda.is_available() is False)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} cuda device(s) here")
    elif available:  # e.g. mps, xpu, cpu:7: usable only if a tensor can be made there
        try:
            torch.zeros(1, device=parsed) + 1
        except Exception as err:  # noqa: BLE001 - any failure means the notebooks would fail there
            raise UsageError(f"--device {device}: not usable here ({type(err).__name__}: {err})") from None


def select_notebooks(notebook_dir, names=()) -> list[Path]:
    """The notebooks ``names`` select (all when empty), in directory order; UsageError for an unknown or
    ambiguous name. A name is a stem, a unique prefix of a stem or of a stem without its number, or a path."""
    notebooks = sorted(p for p in Path(notebook_dir).glob(NOTEBOOK_GLOB) if p.is_file())
    if not notebooks:
        raise UsageError(f"no notebooks {NOTEBOOK_GLOB} in {notebook_dir}")
    stems = [p.stem for p in notebooks]
    chosen = set()
    for name in names:
        stem = name.replace(os.sep, "/").rsplit("/", 1)[-1].removesuffix(".ipynb")
        if not stem:
            raise UsageError("empty notebook name")
        matches = [stem] if stem in stems else [s for s in stems if s.startswith(stem) or s[3:].startswith(stem)]
        if not matches:
            raise UsageError(f"unknown notebook '{name}' (notebooks: {' '.join(stems)})")
        if len(matches) > 1:
            raise UsageError(f"notebook name '{name}' is ambiguous: {' '.join(matches)}")
        chosen.add(matches[0])
    return [p for p in notebooks if not names or p.stem in chosen]
