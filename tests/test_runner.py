"""run_all.sh (floss_core.repro.runner) runs, selects and isolates notebooks as its --help says.

Most tests call the runner in-process, ``main([...], env=...)``, on throwaway notebooks written into tmp_path
(FLOSS_NOTEBOOK_DIR points there); one test goes through ./run_all.sh, one interrupts it.
"""
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("papermill")
nbformat = pytest.importorskip("nbformat")

from floss_core.repro.execute import ensure_python3_kernel, kernel_environment
from floss_core.repro.runner import (
    UsageError,
    main,
    quick_parameters,
    resolve_parameters,
    select_notebooks,
    settings_from_env,
)

REPO = Path(__file__).resolve().parent.parent
THREADS = os.environ.get("FLOSS_TEST_THREADS", "1")
PARAMETERS = 'quick = False\ndevice = "cpu"\nseed = 0\nsize = 100'


def write_notebook(path, body, parameters=PARAMETERS):
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def figure_body(name, fail=False):
    return f"""\
import sys
import matplotlib.pyplot as plt
from floss_core.repro import plotting
plotting.setup()
fig, ax = plt.subplots()
ax.plot([0, size], [0, 1])
plotting.save(fig, {name!r})
plotting.record({{"size": size, "quick": int(quick)}})
open(plotting.fig_dir() / "kernel.txt", "w").write(sys.prefix + "\\n" + device)
""" + ("raise RuntimeError('this notebook fails on purpose')\n" if fail else "")


# A notebook that does not import torch (fast): it reports what its kernel sees.
ENV_BODY = """\
import json, os, sys, tempfile
import matplotlib
names = ["FLOSS_NOTEBOOK", "FLOSS_THREADS", "FLOSS_FIG_DIR", "FLOSS_CACHE_DIR", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
         "OPENBLAS_NUM_THREADS", "TQDM_MININTERVAL", "PYTHONPATH", "IPYTHONDIR", "MPLCONFIGDIR"]
seen = {name: os.environ.get(name) for name in names}
seen.update(cwd=os.getcwd(), tempdir=tempfile.gettempdir(), mpl_config=matplotlib.get_configdir(), prefix=sys.prefix)
open(os.path.join(os.environ["FLOSS_FIG_DIR"], "env.json"), "w").write(json.dumps(seen))
"""

SLEEP_BODY = """\
import os, time
open(os.path.join(os.environ["FLOSS_FIG_DIR"], "half.png"), "w").write("half-written figure")
open("started", "w").write(str(os.getpid()))
time.sleep(300)
"""


def make_project(root):
    """Four notebooks (02 fails after writing its figure, 04 has a typo in its quick parameters) and the quick
    parameter file."""
    nb_dir = root / "notebooks"
    nb_dir.mkdir()
    write_notebook(nb_dir / "01_alpha_first.ipynb", figure_body("alpha"))
    write_notebook(nb_dir / "02_beta_fails.ipynb", figure_body("beta", fail=True))
    write_notebook(nb_dir / "03_alpha_last.ipynb", figure_body("gamma"))
    write_notebook(nb_dir / "04_delta_typo.ipynb", figure_body("delta"))
    (nb_dir / "quick_params.yaml").write_text("_all:\n  quick: true\n  undeclared_elsewhere: 1\n"
                                              "01_alpha_first:\n  size: 3\n02_beta_fails: {}\n"
                                              "03_alpha_last: {}\n04_delta_typo:\n  sizee: 3\n")
    return root


def one_notebook_project(root, body):
    (root / "notebooks").mkdir()
    write_notebook(root / "notebooks" / "01_single.ipynb", body)
    (root / "notebooks" / "quick_params.yaml").write_text("_all:\n  quick: true\n01_single: {}\n")
    return root


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)


def project_env(project, **extra):
    """The environment of a run on ``project``: outputs, and Jupyter / IPython / matplotlib state, inside it."""
    env = dict(os.environ, FLOSS_NOTEBOOK_DIR=str(project / "notebooks"), FLOSS_FIG_DIR=str(project / "figures"),
               FLOSS_CACHE_DIR=str(project / "cache"), FLOSS_EXECUTED_DIR=str(project / "executed"),
               FLOSS_THREADS=THREADS, FLOSS_QUICK_PARAMS=str(project / "notebooks" / "quick_params.yaml"),
               IPYTHONDIR=str(project / "home" / "ipython"), MPLCONFIGDIR=str(project / "home" / "mpl"))
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def run(project, *args, **extra_env):
    """``main(args)`` in this process; its exit status and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args), env=project_env(project, **extra_env))
    return SimpleNamespace(rc=rc, out=out.getvalue(), err=err.getvalue(), log=out.getvalue() + err.getvalue())


# -- one quick run of the four notebooks, checked for several properties -------------------------------------------

@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("quick_run"))
    figures = project / "figures" / "quick"  # FLOSS_FIG_DIR/quick: quick figures never go over paper-scale ones
    figures.mkdir(parents=True)
    (figures / "beta.png").write_bytes(b"previous beta figure")
    (figures / "beta.pdf").write_bytes(b"previous beta pdf")
    (project / "executed" / "quick").mkdir(parents=True)
    (project / "executed" / "quick" / "02_beta_fails.ipynb").write_text("previous good run")
    return project, run(project, "--quick")


def test_a_failing_notebook_does_not_stop_the_others_and_exits_1(quick_run):
    project, out = quick_run
    assert out.rc == 1, out.log
    assert "[1/4] 01_alpha_first" in out.out and "[3/4] 03_alpha_last" in out.out, out.log
    for name in ("alpha", "gamma"):
        assert (project / "figures" / "quick" / f"{name}.png").stat().st_size > 100
        assert (project / "figures" / "quick" / f"{name}.pdf").exists()
    assert not list((project / "figures").glob("*.png")), "a quick run wrote beside the paper-scale figures"


def test_a_failing_notebook_leaves_the_previous_figures(quick_run):
    project, _ = quick_run
    figures = project / "figures" / "quick"
    # the failing notebook's half-written figure did not replace the previous one
    assert (figures / "beta.png").read_bytes() == b"previous beta figure"
    assert (figures / "beta.pdf").read_bytes() == b"previous beta pdf"
    assert not (figures / "delta.png").exists()
    assert not list((project / "executed").rglob(".figures-*")), "temporary figure directories left behind"


def test_each_failed_notebook_is_named_on_stderr_with_its_log_and_last_lines(quick_run):
    project, out = quick_run
    executed = project / "executed" / "quick"
    assert "FAILED: 02_beta_fails 04_delta_typo" in out.err, out.log
    for stem in ("02_beta_fails", "04_delta_typo"):
        assert f"log: {executed / stem}.log" in out.err
    assert "| RuntimeError: this notebook fails on purpose" in out.err  # the last log lines
    assert "on purpose" in (executed / "02_beta_fails.log").read_text()
    assert f"partly executed notebook {executed / '02_beta_fails.failed.ipynb'}" in out.err
    assert (executed / "02_beta_fails.failed.ipynb").exists()
    # the last good executed copy stays (here: the one the fixture made before the failing run)
    assert (executed / "02_beta_fails.ipynb").read_text() == "previous good run"
    # an undeclared entry of a notebook's own quick section fails it, naming the parameter
    assert "sizee" in (executed / "04_delta_typo.log").read_text()


def test_quick_mode_passes_all_then_the_own_section_and_skips_undeclared_all_entries(quick_run):
    project, _ = quick_run
    figures = project / "figures" / "quick"
    assert json.loads((figures / "01_alpha_first_numbers.json").read_text()) == {"size": 3, "quick": 1}
    assert json.loads((figures / "03_alpha_last_numbers.json").read_text()) == {"size": 100, "quick": 1}
    assert "undeclared_elsewhere" not in (project / "executed" / "quick" / "01_alpha_first.log").read_text()


def test_the_kernel_runs_this_python(quick_run):
    project, _ = quick_run
    prefix, device = (project / "figures" / "quick" / "kernel.txt").read_text().split("\n")
    assert Path(prefix).resolve() == Path(sys.prefix).resolve() and device == "cpu"


def test_each_notebook_reports_status_and_wall_time_then_a_summary_table(quick_run):
    _, out = quick_run
    assert re.search(r"^\[1/4\] 01_alpha_first \.\.\. ok  \d+\.\d s$", out.out, re.MULTILINE), out.out
    assert re.search(r"^\[2/4\] 02_beta_fails \.\.\. FAILED  \d+\.\d s$", out.out, re.MULTILINE), out.out
    table = out.out[out.out.index("\nnotebook "):].splitlines()[1:]
    assert table[0].split() == ["notebook", "status", "seconds", "files"]
    assert [row.split()[0] for row in table[1:6]] == ["01_alpha_first", "02_beta_fails", "03_alpha_last",
                                                      "04_delta_typo", "total"]
    assert table[1].split()[1:] == ["ok", table[1].split()[2], "4"]  # alpha.png, .pdf, numbers, kernel.txt
    assert table[2].split()[1::2] == ["FAILED", "0"]


# -- the documentation's executed notebooks -------------------------------------------------------------------------

PROGRESS_BODY = figure_body("alpha") + """\
print("42 networks", flush=True)
sys.stderr.write("floss:  50%|#####     | 1/2 [00:01<00:01, 1.00it/s]\\rfloss: 100%|##########| 2/2 [00:02<00:00]\\n")
sys.stderr.write("UserWarning: a warning stays\\n")
from IPython.display import display
display({"application/vnd.jupyter.widget-view+json": {"model_id": "0", "version_major": 2, "version_minor": 0},
         "text/plain": "floss:   0%|          | 0/2"}, raw=True)  # what tqdm.auto shows in a kernel
"""


def test_a_paper_scale_run_writes_a_lean_executed_copy_for_the_documentation(tmp_path):
    project = one_notebook_project(tmp_path, PROGRESS_BODY)
    out = run(project, "01")
    assert out.rc == 0, out.log
    copy = project / "docs" / "executed" / "01_single.ipynb"  # docs/executed beside the notebook directory
    assert f"executed notebooks for the documentation -> {copy.parent}" in out.out
    nb = nbformat.read(copy, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert "42 networks" in text and "UserWarning: a warning stays" in text
    assert "%|" not in text, "progress bars are left out of the documentation's copy"
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs), "the figure shown by the kernel is kept"
    assert not any("execution" in c.metadata or "papermill" in c.metadata for c in nb.cells)
    assert nb.metadata["papermill"]["duration"] > 0 and str(project) not in json.dumps(nb.metadata)


def test_quick_and_failed_runs_leave_the_documentations_executed_copies_alone(project):
    docs = project / "elsewhere"
    docs.mkdir()
    (docs / "02_beta_fails.ipynb").write_text("previous good run")
    assert run(project, "--quick", "01", FLOSS_DOCS_EXECUTED_DIR=str(docs)).rc == 0
    assert run(project, "02", FLOSS_DOCS_EXECUTED_DIR=str(docs)).rc == 1
    assert sorted(p.name for p in docs.iterdir()) == ["02_beta_fails.ipynb"]
    assert (docs / "02_beta_fails.ipynb").read_text() == "previous good run"
    assert not (project / "docs").exists()


# -- selection, parameters and bad input ----------------------------------------------------------------------------

def test_a_name_selects_one_notebook_which_runs_at_paper_scale_with_the_device(project):
    out = run(project, "alpha_f", "--device", "cpu:0")
    assert out.rc == 0, out.log
    assert "[1/1] 01_alpha_first" in out.out and "1 notebook(s), paper scale, device cpu:0" in out.out
    numbers = json.loads((project / "figures" / "01_alpha_first_numbers.json").read_text())
    assert numbers == {"size": 100, "quick": 0}  # paper scale: the notebook's own defaults
    assert (project / "figures" / "kernel.txt").read_text().endswith("\ncpu:0")
    assert not (project / "figures" / "gamma.png").exists()


def test_select_notebooks_by_stem_prefix_name_without_number_or_path(project):
    nb_dir = project / "notebooks"

    def stems(*names):
        return [p.stem for p in select_notebooks(nb_dir, names)]

    assert stems() == ["01_alpha_first", "02_beta_fails", "03_alpha_last", "04_delta_typo"]
    assert stems("03", "01_alpha", "01", "delta") == ["01_alpha_first", "03_alpha_last", "04_delta_typo"]
    assert stems("beta") == stems("02_beta_fails") == stems("elsewhere/02_beta_fails.ipynb") == ["02_beta_fails"]
    for names, message in [(["alpha"], "ambiguous: 01_alpha_first 03_alpha_last"), (["zeta"], "unknown notebook"),
                           ([""], "empty notebook name")]:
        with pytest.raises(UsageError, match=message):
            stems(*names)


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option '--bogus'"),
    (["zeta"], "unknown notebook 'zeta'"),
    (["alpha"], "ambiguous"),
    (["--device"], "--device needs a value"),
    (["--device="], "--device needs a value"),
    (["--device", "cuda-test"], "invalid --device 'cuda-test'"),
])
def test_bad_arguments_are_usage_errors(project, args, message):
    out = run(project, *args)
    assert out.rc == 2 and message in out.err and "Try ./run_all.sh --help" in out.err, out.log
    assert "[1/" not in out.out


@pytest.mark.parametrize("variable, value, message", [
    ("FLOSS_THREADS", "abc", "FLOSS_THREADS must be a positive integer, got 'abc'"),
    ("FLOSS_THREADS", "0", "FLOSS_THREADS must be a positive integer, got '0'"),
    ("FLOSS_THREADS", "-1", "FLOSS_THREADS must be a positive integer, got '-1'"),
    ("FLOSS_QUICK_PARAMS", "missing.yaml", "FLOSS_QUICK_PARAMS: no file 'missing.yaml'"),
    ("FLOSS_NOTEBOOK_DIR", "/nonexistent/notebooks", "notebook directory '/nonexistent/notebooks' does not exist"),
])
def test_bad_environment_is_a_usage_error(project, variable, value, message):
    out = run(project, "--quick", **{variable: value})
    assert out.rc == 2 and message in out.err, out.log
    assert "[1/" not in out.out


def test_quick_never_writes_into_figures(project, monkeypatch):
    monkeypatch.chdir(project)
    out = run(project, "--quick", FLOSS_FIG_DIR="figures")
    assert out.rc == 2 and "--quick must not write into figures/" in out.err, out.log
    assert settings_from_env({}, quick=True, cwd=project).fig_dir == project / "figures_quick"


def test_cuda_without_cuda_is_one_usage_error_before_anything_runs(project, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        out = run(project, "--quick", "--device", device)
        assert out.rc == 2 and out.err.count("CUDA is not available") == 1, out.log
        assert "[1/" not in out.out and not (project / "executed").exists()
    assert run(project, "--list", "--device", "cuda", "01").rc == 0  # listing runs nothing: no CUDA needed


@pytest.mark.parametrize("device, match", [("meta", "meta device holds no data"), ("mps", "not usable here"),
                                           ("xla", "not usable here")])
def test_a_device_that_cannot_hold_tensors_here_is_a_usage_error(device, match):
    from floss_core.repro.settings import UsageError, check_device

    with pytest.raises(UsageError, match=match):
        check_device(device)
    check_device("cpu")


def test_list_shows_each_notebooks_effective_parameters_and_runs_nothing(project):
    out = run(project, "--list", "--quick", "03", "01_alpha", "01", "delta")
    assert out.rc == 0, out.err
    lines = out.out.splitlines()
    assert [line for line in lines if not line.startswith(" ")] == ["01_alpha_first", "03_alpha_last", "04_delta_typo"]
    assert "    size: 3   (quick; default 100)" in lines and "    quick: True   (quick; default False)" in lines
    assert "    seed: 0" in lines and '    device: "cpu"' in lines
    assert not any("undeclared_elsewhere" in line for line in lines)
    assert any("sizee" in line and "does not declare" in line for line in lines)
    out = run(project, "--list", "--device", "cpu:0", "01")
    assert out.out.splitlines() == ["01_alpha_first", "    quick: False",
                                    '    device: "cpu:0"   (--device; default "cpu")', "    seed: 0", "    size: 100"]
    assert not any((project / d).exists() for d in ("figures", "cache", "executed"))


def test_quick_parameters_need_a_section_and_declared_entries():
    table = {"_all": {"quick": True, "other": 1}, "01_a": {"size": 3}, "02_b": {"sizee": 3}}
    declared = {"quick": "False", "size": "100"}
    assert quick_parameters("01_a", table, declared=declared) == {"quick": True, "size": 3}
    assert quick_parameters("01_a", table) == {"quick": True, "other": 1, "size": 3}  # nothing to check against
    with pytest.raises(ValueError, match="sets sizee, which the notebook's parameters cell does not declare"):
        quick_parameters("02_b", table, declared=declared)
    with pytest.raises(ValueError, match="no section '03_c'"):
        quick_parameters("03_c", table, declared=declared)


def test_a_device_is_passed_only_to_notebooks_that_declare_it(tmp_path):
    write_notebook(tmp_path / "01_x.ipynb", "pass", parameters="size = 1")
    resolved = resolve_parameters(tmp_path / "01_x.ipynb", device="cuda")
    assert resolved.values == {} and "declares no 'device' parameter" in resolved.warnings[0]


# -- where outputs go, and what the kernel sees ---------------------------------------------------------------------

def test_output_directories_default_to_the_working_directory(tmp_path):
    (tmp_path / "notebooks").mkdir()
    paper = settings_from_env({}, cwd=tmp_path)
    assert (paper.notebook_dir, paper.fig_dir, paper.cache_dir, paper.executed_dir, paper.quick_params) == (
        tmp_path / "notebooks", tmp_path / "figures", tmp_path / "_cache", tmp_path / "_executed",
        tmp_path / "notebooks" / "quick_params.yaml")
    quick = settings_from_env({}, quick=True, cwd=tmp_path)
    assert (quick.fig_dir, quick.cache_dir, quick.executed_dir) == (
        tmp_path / "figures_quick", tmp_path / "_cache" / "quick", tmp_path / "_executed" / "quick")
    env = {"FLOSS_FIG_DIR": "f", "FLOSS_CACHE_DIR": "/abs/c", "FLOSS_EXECUTED_DIR": "e", "FLOSS_THREADS": "3"}
    moved = settings_from_env(env, quick=True, cwd=tmp_path)
    assert (moved.fig_dir, moved.cache_dir, moved.executed_dir, moved.threads) == (
        tmp_path / "f" / "quick", Path("/abs/c/quick"), tmp_path / "e" / "quick", 3)
    assert settings_from_env(env, cwd=tmp_path).fig_dir == tmp_path / "f"  # paper scale: FLOSS_FIG_DIR itself


def test_the_kernel_sees_the_runner_environment(tmp_path):
    project = one_notebook_project(tmp_path, ENV_BODY)
    out = run(project, "--quick", FLOSS_THREADS="1", TQDM_MININTERVAL=None)
    assert out.rc == 0, out.log + (project / "executed" / "quick" / "01_single.log").read_text()
    seen = json.loads((project / "figures" / "quick" / "env.json").read_text())
    assert seen["FLOSS_NOTEBOOK"] == "01_single" and seen["TQDM_MININTERVAL"] == "10"
    assert {seen[v] for v in ("FLOSS_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")} == {"1"}
    assert seen["FLOSS_CACHE_DIR"] == str(project / "cache" / "quick")
    assert Path(seen["FLOSS_FIG_DIR"]).parent == project / "executed" / "quick"  # a temporary directory there
    assert Path(seen["FLOSS_FIG_DIR"]).name.startswith(".figures-01_single.")
    assert seen["cwd"] == str(project / "notebooks")
    assert Path(seen["PYTHONPATH"].split(os.pathsep)[0]) == REPO  # the checkout the runner imports floss_core from
    assert kernel_environment({"TQDM_MININTERVAL": "2"}, threads=4)["TQDM_MININTERVAL"] == "2"


def test_a_first_run_creates_the_state_directories_and_leaves_no_temp_directories(tmp_path):
    project = one_notebook_project(tmp_path, ENV_BODY)
    home, tmp = tmp_path / "fresh" / ".home", tmp_path / "tmp"
    tmp.mkdir()
    dirs = {"JUPYTER_CONFIG_DIR": home / "jupyter", "IPYTHONDIR": home / "ipython", "MPLCONFIGDIR": home / "mpl",
            "JUPYTER_DATA_DIR": home / "jupyter-data"}
    out = run(project, "--quick", TMPDIR=str(tmp), **{k: str(v) for k, v in dirs.items()})
    log = (project / "executed" / "quick" / "01_single.log").read_text()
    assert out.rc == 0, out.log + log
    assert all(d.is_dir() for d in dirs.values())
    seen = json.loads((project / "figures" / "quick" / "env.json").read_text())
    assert seen["tempdir"] == str(tmp) and seen["mpl_config"] == str(home / "mpl")
    assert "not a writable location" not in log
    assert sorted(p.name for p in tmp.iterdir()) == [], "the kernel left directories in its temp directory"


def test_an_alien_python3_kernelspec_is_replaced_by_this_python(tmp_path, monkeypatch, capsys):
    data = tmp_path / "jupyter-data"
    spec = data / "kernels" / "python3" / "kernel.json"
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({"argv": ["/elsewhere/bin/python3", "-m", "ipykernel_launcher", "-f",
                                         "{connection_file}"], "display_name": "alien", "language": "python"}))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(data))
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")  # the user's kernels first, as outside a virtualenv
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    assert ensure_python3_kernel() is True
    assert json.loads(spec.read_text())["argv"][0] == sys.executable
    assert "registering this Python as kernel python3" in capsys.readouterr().err
    assert ensure_python3_kernel() is False


# -- through ./run_all.sh ------------------------------------------------------------------------------------------

def run_all_env(project):
    env = project_env(project)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # this venv first
    return env


def test_run_all_sh_exits_1_and_names_the_failed_notebooks(project):
    out = subprocess.run([str(REPO / "run_all.sh"), "--quick", "01", "02", "04"], env=run_all_env(project),
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED: 02_beta_fails 04_delta_typo" in out.stderr and "[1/3] 01_alpha_first" in out.stdout
    assert f"log: {project / 'executed' / 'quick' / '02_beta_fails.log'}" in out.stderr
    prefix, _ = (project / "figures" / "quick" / "kernel.txt").read_text().split("\n")
    assert Path(prefix).resolve() == Path(sys.prefix).resolve()  # run_all.sh used the active environment


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_run_all_sh_interrupted_exits_130_and_leaves_no_temp_directories(tmp_path):
    project = one_notebook_project(tmp_path, SLEEP_BODY)
    started = project / "notebooks" / "started"
    # as from a terminal: SIGINT at its default disposition. A background job of a non-interactive shell (e.g.
    # `./run_tests.sh &` in a script) starts with SIGINT ignored, and an ignored SIGINT is inherited through exec,
    # so the runner would never see the Ctrl-C (measured: the test then hung until its timeout)
    sigint_default = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                      "os.execv(sys.argv[1], sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", sigint_default, str(REPO / "run_all.sh"), "--quick"],
                            env=run_all_env(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert started.exists(), proc.communicate(timeout=60)
        time.sleep(0.5)  # the pid is written
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted" in stderr
    assert not list((project / "executed").rglob(".figures-*")), "temporary figure directories left behind"
    assert not (project / "figures" / "quick" / "half.png").exists()
    kernel = int(started.read_text())
    deadline = time.monotonic() + 15
    while _alive(kernel) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(kernel), "the kernel outlived the runner"
