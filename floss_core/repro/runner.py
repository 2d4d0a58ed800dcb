"""The runner of the figure notebooks: ``./run_all.sh`` is ``python -m floss_core.repro.runner`` (see ``--help``).

A figure notebook is a parameterised script: its cell tagged ``parameters`` holds the paper-scale defaults, and a
run may override some of them (the small sizes of ``--quick``, ``--device``; ``quick_params.py``). The runner

1. reads its command line and the ``FLOSS_*`` variables (``settings.py``), selects the notebooks, resolves their
   parameters and checks all of it before anything runs (a usage error exits 2 with one message naming the
   culprit);
2. runs each notebook with ``papermill.execute_notebook`` in a fresh kernel (``execute.py``) whose
   ``FLOSS_FIG_DIR`` is a temporary directory: the figures move into the figure directory only when the notebook
   succeeds, so a failed (or interrupted) notebook leaves the previous figures as they were;
3. goes on after a failure, and reports each notebook's status, wall time and log, then a summary table;
4. at paper scale (never with ``--quick``), writes a lean copy of each notebook that succeeded, outputs included,
   into the documentation's executed notebooks (``docs/executed/<stem>.ipynb`` beside the notebook directory, or
   ``FLOSS_DOCS_EXECUTED_DIR``): the copies ``./build_docs.sh`` shows, committed with the figures.

Output directories are the ``FLOSS_*`` variables or default to the working directory (run_all.sh runs from the
repository root), never to where this package is installed. ``main(argv, env=...)`` returns the exit status
instead of exiting, so the tests run it in-process on throwaway notebooks.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from .cluster import LOCAL, check_cluster_spec, open_cluster
from .execute import (
    ensure_python3_kernel,
    failed_copy,
    kernel_environment,
    make_state_dirs,
    run_notebook,
    write_book_copy,
)
from .quick_params import (
    NotebookParameters,
    declared_parameters,
    load_quick_params,
    notebook_parameters,
    quick_parameters,
    resolve_parameters,
)
from .settings import Options, Settings, UsageError, check_device, parse_args, select_notebooks, settings_from_env

__all__ = ["NotebookParameters", "Options", "Settings", "UsageError", "check_device", "declared_parameters",
           "docs_executed_dir",
           "load_quick_params", "main", "notebook_parameters", "parse_args", "quick_parameters", "resolve_parameters",
           "select_notebooks", "settings_from_env"]

PROG = "run_all.sh"
USAGE = """\
Usage: ./run_all.sh [--quick] [--device DEV] [--cluster local|ADDRESS] [--list] [NAME ...]
   or: python -m floss_core.repro.runner [...]   (the same, from the repository root)

Execute the figure notebooks notebooks/[0-9][0-9]_*.ipynb with papermill, in order, and collect their figures.

  (no NAME)      run every notebook
  NAME ...       run only these: a stem (01_fig1_flossing), a unique prefix of it (01, 01_fig1) or of the
                 stem without its number (fig1); a path to the .ipynb works too
  --quick        smoke-test scale: pass each notebook the small parameters of notebooks/quick_params.yaml
                 (its `_all` section, then its own section); figures go to figures_quick/, the cache to
                 _cache/quick/, executed notebooks to _executed/quick/, so full-scale outputs are never touched
  --device DEV   pass device=DEV (e.g. cuda, cuda:1) to every notebook that declares `device`; checked before
                 anything runs: torch.device(DEV) must parse, and a cuda device must exist (unless --list)
  --cluster local|ADDRESS|none
                 run the notebooks' sweeps as shards on a Dask cluster, started (local: one single-threaded
                 worker process per core, FLOSS_THREADS of them) or reached (ADDRESS: a scheduler,
                 tcp://HOST:PORT) once before any notebook runs; its address goes to every notebook that declares
                 `cluster`, its dashboard address is printed; an unreachable scheduler exits 2. The same numbers
                 as without it (bit for bit, with one thread per worker as with FLOSS_THREADS=1). Default: local
                 at paper scale on a CPU with 2+ threads when dask.distributed is installed (1.4-2.4x faster than
                 one process; if it does not start, a warning and none), else none; none: every sweep in its
                 notebook's kernel. A cluster asked for that does not start exits 2
  --list         print the selected notebooks and the parameters each would get (the defaults of its
                 `parameters` cell, overrides marked with where they come from), run nothing
  -h, --help     this text

Without --quick, notebooks run at paper scale (the defaults of their `parameters` cell), write figures into
figures/, executed copies into _executed/ and caches into _cache/ (all relative to the working directory;
run_all.sh runs from the repository root), and a lean copy of each executed notebook (outputs and figures, no
progress bars) into docs/executed/, which the documentation (./build_docs.sh) shows; --quick never writes
there. A notebook's figures are written into a temporary directory and moved into place only if the notebook
succeeds, so a failing notebook leaves the previous figures intact. After a failure the remaining notebooks still
run; the exit status is 1 and every failed notebook is named (its log: _executed/[quick/]NAME.log; the partly
executed notebook next to it, NAME.failed.ipynb: the last good NAME.ipynb stays, and so does its copy in
docs/executed/).

Environment:
  FLOSS_THREADS        threads for torch / OpenMP / MKL, a positive integer (default: all cores, nproc)
  FLOSS_FIG_DIR        figure directory (default figures/, or figures_quick/ with --quick; with --quick a given
                       FLOSS_FIG_DIR gets its subdirectory quick/, so quick figures never replace full ones)
  FLOSS_CACHE_DIR      cache directory (default _cache/; --quick uses its subdirectory quick/)
  FLOSS_EXECUTED_DIR   executed notebooks and logs (default _executed/; --quick uses quick/ inside it)
  FLOSS_DOCS_EXECUTED_DIR
                       the documentation's executed notebooks, written at paper scale only (default docs/executed/
                       beside the notebook directory: the repository's docs/executed/)
  FLOSS_NOTEBOOK_DIR   where the notebooks are (default notebooks/; the tests point it at throwaway notebooks)
  FLOSS_QUICK_PARAMS   quick parameter file (default quick_params.yaml in the notebook directory)
  TQDM_MININTERVAL     seconds between progress-bar updates in the executed notebooks (default 10)
Each notebook's kernel sees FLOSS_NOTEBOOK=<its stem> (floss_core.repro.plotting.record names its numbers file after
it), FLOSS_FIG_DIR=<its temporary figure directory>, FLOSS_CACHE_DIR, FLOSS_THREADS and
OMP/MKL/OPENBLAS_NUM_THREADS=FLOSS_THREADS, and imports floss_core from the same place as the runner.

Exit status: 0 all succeeded, 1 some notebook failed, 2 usage error (unknown option or notebook name, bad
--device, --cluster or FLOSS_THREADS, an unreachable scheduler, ...), 130 interrupted.
"""


def _report_failure(log: Path, lines: int = 15) -> None:
    tail = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
    print(f"    log: {log} (last lines below)", *(f"    | {line}" for line in tail), sep="\n", file=sys.stderr)


def docs_executed_dir(env: Mapping[str, str], settings: Settings) -> Path:
    """Where paper-scale runs leave the documentation's executed notebooks: ``FLOSS_DOCS_EXECUTED_DIR`` (relative
    to the working directory), else ``docs/executed`` beside the notebook directory."""
    given = env.get("FLOSS_DOCS_EXECUTED_DIR")
    if given:
        return Path(os.path.abspath(given))
    return settings.notebook_dir.parent / "docs" / "executed"


def run_notebooks(plans: list[NotebookParameters], settings: Settings, env: Mapping[str, str], *,
                  mode: str, docs_dir: Path | None = None) -> int:
    """Run the notebooks one after the other, report each and a summary; the exit status (0 or 1). With
    ``docs_dir`` (paper scale), each notebook that succeeded also gets its lean copy there (``write_book_copy``)."""
    for directory in (settings.fig_dir, settings.cache_dir, settings.executed_dir):
        directory.mkdir(parents=True, exist_ok=True)
    make_state_dirs(env)
    try:
        ensure_python3_kernel()
    except Exception as err:  # noqa: BLE001 - as `ipykernel install` failing did
        print(f"{PROG}: cannot register this Python as kernel python3: {err}", file=sys.stderr)
        return 1
    print(f"{PROG}: {len(plans)} notebook(s), {mode}, {settings.threads} thread(s)",
          f"  figures -> {settings.fig_dir}", f"  executed notebooks and logs -> {settings.executed_dir}",
          *([f"  executed notebooks for the documentation -> {docs_dir}"] if docs_dir is not None else []),
          sep="\n")
    rows, failed, start = [], [], time.perf_counter()
    for i, params in enumerate(plans, 1):
        print(f"[{i}/{len(plans)}] {params.stem} ... ", end="", flush=True)
        t0 = time.perf_counter()
        kernel_env = kernel_environment(env, threads=settings.threads, cache_dir=settings.cache_dir,
                                        notebook=params.stem)
        status, n_files = run_notebook(params, fig_dir=settings.fig_dir, executed_dir=settings.executed_dir,
                                       env=kernel_env)
        seconds = f"{time.perf_counter() - t0:.1f}"
        if docs_dir is not None and status != "FAILED":
            write_book_copy(settings.executed_dir / f"{params.stem}.ipynb", docs_dir / f"{params.stem}.ipynb")
        print(f"{status}  {seconds} s", flush=True)
        if status == "FAILED":
            failed.append(params.stem)
            _report_failure(settings.executed_dir / f"{params.stem}.log")
        rows.append(f"{params.stem:<32} {status:<16} {seconds:>8} {n_files:>6}")
    print("", f"{'notebook':<32} {'status':<16} {'seconds':>8} {'files':>6}", *rows,
          f"{'total':<32} {'':<16} {time.perf_counter() - start:>8.1f}", sep="\n")
    if failed:
        print(f"{PROG}: {len(failed)} of {len(plans)} notebook(s) FAILED: {' '.join(failed)}", file=sys.stderr)
        for stem in failed:
            output = failed_copy(settings.executed_dir, stem)
            kept = f"; partly executed notebook {output}" if output.exists() else ""
            print(f"  {stem}: log {settings.executed_dir / f'{stem}.log'}{kept}", file=sys.stderr)
        return 1
    print(f"{PROG}: all {len(plans)} notebook(s) succeeded; figures in {settings.fig_dir}")
    return 0


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM raises KeyboardInterrupt (cleaned up and reported like Ctrl-C), in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _prepare(opts: Options, env: Mapping[str, str]) -> tuple[Settings, list[NotebookParameters]]:
    """Validate everything and resolve every selected notebook's parameters (UsageError on bad input)."""
    settings = settings_from_env(env, quick=opts.quick)
    notebooks = select_notebooks(settings.notebook_dir, opts.names)
    if opts.device is not None:
        check_device(opts.device, available=not opts.listing)
    table = None
    if opts.quick:
        try:
            table = load_quick_params(settings.quick_params)
        except Exception as err:  # noqa: BLE001 - unreadable / not YAML / not a mapping: one message
            raise UsageError(f"cannot read the quick parameters {settings.quick_params}: {err}") from None
    plans = [resolve_parameters(nb, quick=opts.quick, device=opts.device, quick_params=table) for nb in notebooks]
    if opts.cluster == NO_CLUSTER:
        opts.cluster = None
    elif opts.cluster is not None:
        check_cluster_spec(opts.cluster)
        _pass_cluster(plans, opts.cluster, warn=True)
    elif _local_by_default(opts, settings, plans):
        opts.cluster, opts.cluster_by_default = LOCAL, True
        _pass_cluster(plans, LOCAL, source=DEFAULT_SOURCE)
    return settings, plans


NO_CLUSTER = "none"
DEFAULT_SOURCE = "paper scale on a multi-core CPU: --cluster local by default"


def _local_by_default(opts: Options, settings: Settings, plans: list[NotebookParameters]) -> bool:
    """Whether the sweeps run on a local Dask cluster without --cluster: at paper scale on the CPU, with more than
    one thread, when some selected notebook declares ``cluster`` and dask.distributed is installed (one
    single-threaded worker process per core ran the sweeps 1.4-2.4x faster than one process on 2 threads)."""
    if opts.quick or settings.threads < 2 or importlib.util.find_spec("distributed") is None:
        return False
    if opts.device is not None and opts.device.split(":")[0] != "cpu":
        return False
    return any("cluster" in params.defaults for params in plans if not params.error)


def _drop_default_cluster(plans: list[NotebookParameters]) -> None:
    """Undo ``_pass_cluster`` of the default cluster: every notebook gets its own ``cluster`` default again."""
    for params in plans:
        if params.sources.get("cluster") == DEFAULT_SOURCE:
            del params.values["cluster"], params.sources["cluster"]


def _pass_cluster(plans: list[NotebookParameters], value: str, *, warn: bool = False,
                  source: str = "--cluster") -> None:
    """``cluster=value`` for every notebook that declares ``cluster`` (with ``warn``: a warning for the others)."""
    for params in plans:
        if params.error:
            continue
        if "cluster" in params.defaults:
            params.values["cluster"], params.sources["cluster"] = value, source
        elif warn:
            params.warnings.append(f"{params.path.name} declares no 'cluster' parameter; --cluster {value} ignored "
                                   "(its sweeps run in its kernel)")


def _run(plans: list[NotebookParameters], settings: Settings, env: Mapping[str, str], opts: Options) -> int:
    """Run the notebooks, on the cluster of ``--cluster`` if given (started or reached first; UsageError if not)."""
    mode = ("quick" if opts.quick else "paper scale") + (f", device {opts.device}" if opts.device else "")
    run = functools.partial(run_notebooks, docs_dir=None if opts.quick else docs_executed_dir(env, settings))
    if opts.cluster is None:
        return run(plans, settings, env, mode=mode)
    with contextlib.ExitStack() as stack:
        try:
            info = stack.enter_context(open_cluster(opts.cluster, n_workers=settings.threads))
        except Exception as err:  # noqa: BLE001 - a cluster that does not start: exit 2, or for the default, a warning
            if not opts.cluster_by_default:  # asked for: a usage error (exit 2) before any notebook ran
                if isinstance(err, UsageError):
                    raise
                raise UsageError(f"--cluster {opts.cluster}: the cluster did not start ({type(err).__name__}: "
                                 f"{err})") from err
            print(f"{PROG}: warning: the default local Dask cluster did not start ({type(err).__name__}: {err}); "
                  "every sweep runs in its notebook's kernel, as with --cluster none", file=sys.stderr, flush=True)
            _drop_default_cluster(plans)
            return run(plans, settings, env, mode=mode)
        print(f"{PROG}: {info.describe()}", flush=True)
        if opts.cluster_by_default:
            print(f"{PROG}: (the default at paper scale on a multi-core CPU; --cluster none runs every sweep in its "
                  "notebook's kernel)", flush=True)
        _pass_cluster(plans, info.address, source=DEFAULT_SOURCE if opts.cluster_by_default else "--cluster")
        return run(plans, settings, env, mode=f"{mode}, Dask cluster {info.address}")


def main(argv: list[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) with environment ``env`` (default
    ``os.environ``; the kernels inherit it); the exit status: 0 ok, 1 a notebook failed, 2 usage, 130 interrupted."""
    env = dict(os.environ if env is None else env)
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
        if opts.help:
            print(USAGE, end="")
            return 0
        settings, plans = _prepare(opts, env)
    except UsageError as err:
        print(f"{PROG}: {err}\nTry ./run_all.sh --help", file=sys.stderr)
        return 2
    if opts.listing:
        for params in plans:
            print(params.stem, *(f"    {line}" for line in params.describe()), sep="\n")
        return 0
    for params in plans:
        for warning in params.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    try:
        with _terminate_as_interrupt():
            return _run(plans, settings, env, opts)
    except UsageError as err:  # the cluster could not be started or reached: before any notebook ran
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
