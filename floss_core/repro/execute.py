"""Running one notebook: papermill in a kernel whose environment and output the runner chooses, figures staged.

``run_notebook`` gives the kernel a temporary figure directory (``FLOSS_FIG_DIR``) and moves its files into the
figure directory only when every cell succeeded. ``execute`` calls ``papermill.execute_notebook`` in this process;
the kernel is a subprocess started by jupyter_client with the environment given here (not this process's
``os.environ``), its stdout and stderr going to the notebook's log together with papermill's own messages and, on
failure, the error. papermill writes the executed notebook after every cell, so a failed notebook is kept up to
its failing cell. ``write_book_copy`` makes the lean copy of a paper-scale run that the documentation shows.
"""
from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import site
import sys
import tempfile
import traceback
from collections.abc import Mapping
from pathlib import Path

__all__ = ["KERNEL", "STATE_DIR_VARIABLES", "ensure_python3_kernel", "execute", "failed_copy",
           "kernel_environment", "make_state_dirs", "run_notebook", "write_book_copy"]

KERNEL = "python3"
# Where IPython, Jupyter and matplotlib keep state (_env.sh points them into <repo>/.home). They must exist: a
# missing IPYTHONDIR parent makes IPython warn "not a writable location" and leave a directory in the system temp.
STATE_DIR_VARIABLES = ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "IPYTHONDIR", "MPLCONFIGDIR")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _import_root() -> Path | None:
    """The directory this floss_core is imported from, if a checkout (None if installed into site-packages)."""
    import floss_core

    root = Path(floss_core.__file__).resolve().parent.parent
    sites = [*site.getsitepackages(), site.getusersitepackages()]
    return None if any(Path(s).resolve() == root for s in sites if os.path.isdir(s)) else root


def kernel_environment(base: Mapping[str, str], **floss: object) -> dict[str, str]:
    """``base`` with the runner's variables: ``FLOSS_<NAME>`` for each keyword (``fig_dir=...``), threads, and
    the state directories made absolute (the kernel runs in the notebook directory).

    PYTHONPATH starts with the checkout this floss_core comes from, so the kernel imports the same library.
    """
    env = dict(base)
    env.update({f"FLOSS_{name.upper()}": str(value) for name, value in floss.items()})
    if "FLOSS_THREADS" in env:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = env["FLOSS_THREADS"]
    env.setdefault("TQDM_MININTERVAL", "10")  # progress bars write into the executed notebook: one update per 10 s
    env.setdefault("MPLBACKEND", "Agg")
    for var in STATE_DIR_VARIABLES:
        if env.get(var):
            env[var] = os.path.abspath(env[var])
    root = _import_root()
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root is not None and (not paths or Path(paths[0]).resolve() != root):
        env["PYTHONPATH"] = os.pathsep.join([str(root), *paths])
    return env


def make_state_dirs(env: Mapping[str, str]) -> None:
    """Create the IPython / Jupyter / matplotlib directories named in ``env``."""
    for var in STATE_DIR_VARIABLES:
        if env.get(var):
            Path(env[var]).mkdir(parents=True, exist_ok=True)


def ensure_python3_kernel() -> bool:
    """Make kernel ``python3`` start this interpreter; True if it had to be registered.

    jupyter_client replaces a kernelspec's bare "python"/"python3" by the running interpreter, but a python3
    kernelspec with an absolute path to another Python would not: then register this one for the user (under
    ``$JUPYTER_DATA_DIR``, inside the repository with _env.sh). Uses this process's Jupyter paths, as papermill does.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        exe = KernelSpecManager().get_kernel_spec(KERNEL).argv[0]
    except NoSuchKernel:
        exe = None
    if exe is not None:
        bare = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
        same_env = os.path.dirname(os.path.abspath(exe)) == os.path.dirname(os.path.abspath(sys.executable))
        if exe in bare or (os.path.isabs(exe) and same_env):
            return False
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_core.paths import jupyter_data_dir

    print(f"[env] registering this Python as kernel {KERNEL} in {jupyter_data_dir()}", file=sys.stderr)
    # What `ipykernel install --user` does, minus the directory it leaves in the system temp.
    python_arguments = ["-Xfrozen_modules=off"] if platform.python_implementation() == "CPython" else None
    with tempfile.TemporaryDirectory() as scratch:
        spec = write_kernel_spec(Path(scratch) / KERNEL, python_arguments=python_arguments)
        KernelSpecManager().install_kernel_spec(spec, kernel_name=KERNEL, user=True)
    return True


def _kernel_manager_class(env: Mapping[str, str], output):
    """A kernel manager class that starts its kernel with ``env`` and sends its stdout and stderr to ``output``."""
    from jupyter_client import AsyncKernelManager

    class KernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw.setdefault("env", dict(env))
            kw.setdefault("stdout", output)
            kw.setdefault("stderr", output)
            return await super().start_kernel(**kw)

    return KernelManager


def execute(notebook: Path, output: Path, log: Path, *, parameters: Mapping, env: Mapping[str, str]) -> bool:
    """Run ``notebook`` into ``output`` (kernel in the notebook's directory); True if every cell succeeded.

    The log gets papermill's messages, the kernel's stdout/stderr and, on failure, the error (appended).
    KeyboardInterrupt propagates (papermill's client shuts the kernel down on the way out).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    logger = logging.getLogger("papermill")
    with open(log, "a", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            papermill.execute_notebook(str(notebook), str(output), parameters=dict(parameters), kernel_name=KERNEL,
                                       cwd=str(notebook.parent), progress_bar=False,
                                       kernel_manager_class=_kernel_manager_class(env, stream))
            return True
        except KeyboardInterrupt:
            stream.write("interrupted\n")
            raise
        except PapermillExecutionError as err:  # a cell raised: its traceback is the message
            stream.write(_ANSI.sub("", str(err)) + "\n")
        except Exception:  # noqa: BLE001 - the kernel died, would not start, ...: logged, the next notebook runs
            stream.write(_ANSI.sub("", traceback.format_exc()))
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
    return False


def _move_files(src: Path, dst: Path) -> int:
    """Move every file under ``src`` to the same place under ``dst`` (replacing); the number moved."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    for path in files:
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
    return len(files)


def run_notebook(params, *, fig_dir: Path, executed_dir: Path, env: Mapping[str, str]) -> tuple[str, int]:
    """Run one notebook (``quick_params.NotebookParameters``) with kernel environment ``env``; (status, number of
    figure files moved into ``fig_dir``). The log of the run is ``executed_dir/<stem>.log``. The executed notebook
    replaces ``<stem>.ipynb`` only when it succeeds; a failed run's partly executed copy is ``<stem>.failed.ipynb``
    (``failed_copy``), and the last good ``<stem>.ipynb`` stays, like the figures.

    Invalid parameters fail the notebook without running it, the message in its log.
    """
    log, output, failed = (executed_dir / f"{params.stem}.log", executed_dir / f"{params.stem}.ipynb",
                           failed_copy(executed_dir, params.stem))
    failed.unlink(missing_ok=True)
    if params.error:
        log.write_text(params.error + "\n")
        return "FAILED", 0
    log.write_text(f"parameters: {params.values}\n")
    tmp_fig = Path(tempfile.mkdtemp(prefix=f".figures-{params.stem}.", dir=executed_dir))
    running = tmp_fig.with_name(f"{tmp_fig.name}.ipynb")  # hidden, beside the temporary figures
    try:
        kernel_env = {**env, "FLOSS_FIG_DIR": str(tmp_fig)}
        if not execute(params.path, running, log, parameters=params.values, env=kernel_env):
            if running.exists():
                os.replace(running, failed)
            return "FAILED", 0
        n_files = _move_files(tmp_fig, fig_dir)
        os.replace(running, output)
        return ("ok" if n_files else "ok (no figures)"), n_files
    finally:
        shutil.rmtree(tmp_fig, ignore_errors=True)
        running.unlink(missing_ok=True)


def failed_copy(executed_dir: Path, stem: str) -> Path:
    """Where a failed run leaves its partly executed notebook."""
    return executed_dir / f"{stem}.failed.ipynb"


_PROGRESS = re.compile(r"\d+%\||\d+it \[|it/s\]|s/it\]")  # a tqdm progress line
_WIDGET = "application/vnd.jupyter.widget-view+json"
_KEPT_OUTPUT_METADATA = ("duration", "end_time", "exception", "parameters", "start_time", "version")


def _lean_stderr(text: str) -> str:
    """stderr as a terminal shows it (each line's text after its last carriage return), without progress bars."""
    lines = (line.rsplit("\r", 1)[-1] for line in text.split("\n"))
    return "\n".join(line for line in lines if not _PROGRESS.search(line)).strip("\n")


def write_book_copy(executed: Path, destination: Path) -> Path:
    """Write the lean copy of an executed notebook that the documentation shows (``docs/executed/<stem>.ipynb``).

    It keeps every cell with its outputs (figures as the kernel's inline PNG, at screen resolution, printed numbers,
    warnings) and drops what only the machine that ran it needs: progress bars (tqdm's widgets and their stderr
    lines), other image formats beside a PNG, per-cell timestamps and papermill's absolute paths. Written atomically
    (a reader never sees half a notebook).
    """
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stderr":
                out.text = _lean_stderr(out.text)
                if not out.text:
                    continue
            data = out.get("data")
            if data is not None and _WIDGET in data:  # a progress bar (the notebooks show no other widgets)
                continue
            if data is not None and "image/png" in data:
                for mime in ("image/svg+xml", "application/pdf", "image/jpeg"):
                    data.pop(mime, None)
            outputs.append(out)
        cell.outputs = outputs
    run = nb.metadata.get("papermill", {})
    nb.metadata["papermill"] = {key: run[key] for key in _KEPT_OUTPUT_METADATA if key in run}
    nb.metadata.pop("widgets", None)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial")
    nbformat.write(nb, partial)
    os.replace(partial, destination)
    return destination
