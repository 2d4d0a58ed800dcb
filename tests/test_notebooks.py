"""The figure notebooks run in quick mode, and run_all.sh runs, selects and isolates notebooks as documented.

Every notebooks/[0-9][0-9]_*.ipynb is executed with papermill and the quick parameters of
notebooks/quick_params.yaml (the loader run_all.sh uses), with its figures and cache in pytest's tmp_path. It must
run, write at least one figure as PNG and PDF, and record finite key numbers (floss_core.plotting.record).
Every notebook is a jupytext pair: its percent-format notebooks/NN_name.py (the source) and the .ipynb made from it
by `jupytext --sync` hold the same cells (see notebooks/_template.md).
The run_all.sh tests use throwaway notebooks written into tmp_path (FLOSS_NOTEBOOK_DIR points there).
"""
import ast
import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")
nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")

from floss_core.notebook_params import QUICK_PARAMS, declared_parameters, load_quick_params, notebook_parameters  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOURCES = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))  # their jupytext percent-format sources
QUICK_SECONDS = 60  # target per notebook in quick mode (a warning, not a failure: CI machines vary)


def kernel_env(monkeypatch, tmp_path, stem):
    """The environment papermill's kernel inherits: outputs in tmp_path, this checkout importable, few threads."""
    threads = os.environ.get("FLOSS_TEST_THREADS", "1")
    monkeypatch.setenv("FLOSS_FIG_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("FLOSS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FLOSS_NOTEBOOK", stem)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, threads)
    return tmp_path / "figures"


def assert_finite_numbers(path):
    numbers = json.loads(path.read_text())
    assert isinstance(numbers, dict) and numbers, f"{path.name} records no numbers"
    for key, value in numbers.items():
        values = value if isinstance(value, list) else [value]
        assert values, f"{path.name}: {key} is an empty list"
        for v in values:
            assert isinstance(v, (int, float)) and not isinstance(v, bool), f"{path.name}: {key} = {v!r}"
            assert math.isfinite(v), f"{path.name}: {key} = {v} is not finite"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(notebook, tmp_path, monkeypatch):
    fig_dir = kernel_env(monkeypatch, tmp_path, notebook.stem)
    params = notebook_parameters(notebook, quick=True)  # fails fast without a quick section
    start = time.perf_counter()
    papermill.execute_notebook(str(notebook), str(tmp_path / notebook.name), parameters=params, kernel_name="python3",
                               cwd=str(notebook.parent), progress_bar=False)
    seconds = time.perf_counter() - start
    if seconds > QUICK_SECONDS:
        warnings.warn(f"{notebook.stem} took {seconds:.0f} s in quick mode (target < {QUICK_SECONDS} s)",
                      stacklevel=2)
    pngs = sorted(fig_dir.glob("*.png"))
    assert pngs, f"{notebook.stem} saved no figure (use floss_core.plotting.save)"
    for png in pngs:
        assert png.stat().st_size > 0 and png.with_suffix(".pdf").exists(), f"{png.name} has no PDF twin"
    numbers = fig_dir / f"{notebook.stem}_numbers.json"
    assert numbers.exists(), f"{notebook.stem} did not call floss_core.plotting.record(...)"
    assert_finite_numbers(numbers)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_follows_the_conventions(notebook):
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, \
                f"{notebook.name} is committed with outputs (clear them: Kernel > Restart & Clear Outputs)"
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{notebook.name} needs exactly one cell tagged 'parameters'"
    declared = declared_parameters(notebook)
    missing = {"quick", "device", "seed"} - set(declared)
    assert not missing, f"{notebook.name}'s parameters cell does not declare {sorted(missing)}"


def test_every_notebook_is_a_jupytext_pair():
    assert SOURCES, "no notebooks/NN_name.py sources"
    assert [p.stem for p in SOURCES] == [p.stem for p in NOTEBOOKS], \
        "every notebooks/NN_name.py needs its .ipynb and the reverse: run `jupytext --sync notebooks/NN_name.py`"


def cells_of(nb):
    return [(c.cell_type, c.source, sorted(c.metadata.get("tags", []))) for c in nb.cells]


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_pair_is_in_sync(source):
    """The .ipynb holds exactly the cells of the .py (sources, cell types, the parameters tag), so what runs
    (the .ipynb) is what is reviewed (the .py)."""
    text = jupytext.read(source, fmt="py:percent")
    assert text.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", \
        f"{source.name}'s header must pair it: jupytext: formats: ipynb,py:percent"
    assert text.metadata.get("kernelspec", {}).get("name") == "python3", f"{source.name} needs kernelspec python3"
    notebook = source.with_suffix(".ipynb")
    nb = nbformat.read(notebook, as_version=4)
    assert cells_of(nb) == cells_of(text), \
        f"{notebook.name} is out of sync with {source.name}: run `jupytext --sync notebooks/{source.name}`"
    ids = [c.get("id") for c in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids), f"{notebook.name} needs unique cell ids (jupytext --sync)"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_opens_with_its_claim_and_ends_with_what_we_found(notebook):
    nb = nbformat.read(notebook, as_version=4)
    first, last = nb.cells[0], nb.cells[-1]
    assert first.cell_type == "markdown", f"{notebook.name} must open with a markdown cell (its claim)"
    for part in ("**Claim", "**What to look for.**", "**Runtime.**"):
        assert part in first.source, f"{notebook.name}'s first cell lacks {part!r}"
    assert last.cell_type == "markdown" and last.source.startswith("## What we found"), \
        f"{notebook.name} must end with a markdown cell '## What we found'"


def parameters_cell(notebook):
    nb = nbformat.read(notebook, as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    return cell.source


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_parameters_are_plain_and_seen_by_papermill(notebook):
    """Every name the parameters cell assigns is a plain literal (scalars, strings, lists, dicts) that papermill
    can override; papermill skips a line with a second '=' (e.g. in its comment), so that one could not be."""
    tree = ast.parse(parameters_cell(notebook))
    assigned = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), \
            f"{notebook.name}: the parameters cell holds only `name = value` lines, got {ast.unparse(node)!r}"
        assigned[node.targets[0].id] = ast.literal_eval(node.value)  # raises for anything but a plain literal
    declared = declared_parameters(notebook)
    unseen = sorted(set(assigned) - set(declared))
    assert not unseen, f"{notebook.name}: papermill does not see {unseen} (no '=' in a parameter line's comment)"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_quick_dicts_restate_the_notebooks_changes(notebook):
    """A dict parameter is replaced whole in quick mode, so its quick value must set every key the notebook's
    does (else quick mode would silently return that setting to the author's default)."""
    defaults = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(parameters_cell(notebook)).body}
    quick = notebook_parameters(notebook, quick=True)
    for name, value in quick.items():
        if isinstance(defaults.get(name), dict):
            assert isinstance(value, dict), f"quick_params.yaml: {notebook.stem}.{name} must be a dict"
            missing = sorted(set(defaults[name]) - set(value))
            assert not missing, (f"quick_params.yaml: {notebook.stem}.{name} replaces the notebook's {defaults[name]} "
                                 f"but does not set {missing}")


def test_quick_params_cover_exactly_the_notebooks():
    table = load_quick_params()
    stems = {p.stem for p in NOTEBOOKS}
    unknown = set(table) - stems - {"_all"}
    assert not unknown, f"{QUICK_PARAMS.name} has sections for notebooks that do not exist: {sorted(unknown)}"
    missing = stems - set(table)
    assert not missing, f"{QUICK_PARAMS.name} has no section for {sorted(missing)} (they would run at paper scale)"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_quick_params_are_declared_by_the_notebook(notebook):
    notebook_parameters(notebook, quick=True)  # raises on a missing section or an undeclared parameter


# -- run_all.sh on throwaway notebooks ------------------------------------------------------------------------------

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


@pytest.fixture
def project(tmp_path):
    """Four notebooks (02 fails after writing its figure, 04 has a typo in its quick parameters) and the quick
    parameter file."""
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    write_notebook(nb_dir / "01_alpha_first.ipynb", figure_body("alpha"))
    write_notebook(nb_dir / "02_beta_fails.ipynb", figure_body("beta", fail=True))
    write_notebook(nb_dir / "03_alpha_last.ipynb", figure_body("gamma"))
    write_notebook(nb_dir / "04_delta_typo.ipynb", figure_body("delta"))
    (nb_dir / "quick_params.yaml").write_text("_all:\n  quick: true\n  undeclared_elsewhere: 1\n"
                                              "01_alpha_first:\n  size: 3\n02_beta_fails: {}\n"
                                              "03_alpha_last: {}\n04_delta_typo:\n  sizee: 3\n")
    return tmp_path


def run_all(project, *args, quick_params=True):
    env = dict(os.environ, FLOSS_NOTEBOOK_DIR=str(project / "notebooks"), FLOSS_FIG_DIR=str(project / "figures"),
               FLOSS_CACHE_DIR=str(project / "cache"), FLOSS_EXECUTED_DIR=str(project / "executed"),
               FLOSS_THREADS=os.environ.get("FLOSS_TEST_THREADS", "1"))
    if quick_params:
        env["FLOSS_QUICK_PARAMS"] = str(project / "notebooks" / "quick_params.yaml")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # this venv first
    return subprocess.run([str(REPO / "run_all.sh"), *args], env=env, capture_output=True, text=True, timeout=600)


def test_run_all_isolates_a_failing_notebook(project):
    figures = project / "figures"
    figures.mkdir()
    (figures / "beta.png").write_bytes(b"previous beta figure")
    (figures / "beta.pdf").write_bytes(b"previous beta pdf")
    out = run_all(project, "--quick")
    log = out.stdout + out.stderr
    assert out.returncode == 1, log
    assert "FAILED: 02_beta_fails 04_delta_typo" in out.stderr, log
    assert "[1/4] 01_alpha_first" in out.stdout and "[3/4] 03_alpha_last" in out.stdout, log
    assert "sizee" in (project / "executed" / "quick" / "04_delta_typo.log").read_text()
    assert not (figures / "delta.png").exists()
    # the failing notebook's half-written figure did not replace the previous one; the others ran
    assert (figures / "beta.png").read_bytes() == b"previous beta figure"
    assert (figures / "beta.pdf").read_bytes() == b"previous beta pdf"
    for name in ("alpha", "gamma"):
        assert (figures / f"{name}.png").stat().st_size > 100 and (figures / f"{name}.pdf").exists()
    assert not list((project / "executed").rglob(".figures-*")), "temporary figure directories left behind"
    # quick parameters: the notebook's own section and `_all`, undeclared `_all` entries skipped
    assert json.loads((figures / "01_alpha_first_numbers.json").read_text()) == {"size": 3, "quick": 1}
    assert json.loads((figures / "03_alpha_last_numbers.json").read_text()) == {"size": 100, "quick": 1}
    # the kernel runs in this environment (the venv), and executed notebooks and logs are kept
    prefix, device = (figures / "kernel.txt").read_text().split("\n")
    assert Path(prefix).resolve() == Path(sys.prefix).resolve() and device == "cpu"
    assert (project / "executed" / "quick" / "02_beta_fails.ipynb").exists()
    assert "on purpose" in (project / "executed" / "quick" / "02_beta_fails.log").read_text()


def test_run_all_selects_by_name_and_passes_the_device(project):
    out = run_all(project, "alpha_f", "--device", "cuda-test")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[1/1] 01_alpha_first" in out.stdout
    numbers = json.loads((project / "figures" / "01_alpha_first_numbers.json").read_text())
    assert numbers == {"size": 100, "quick": 0}  # paper scale: the notebook's own defaults
    assert (project / "figures" / "kernel.txt").read_text().endswith("\ncuda-test")
    assert not (project / "figures" / "gamma.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option"),
    (["zeta"], "unknown notebook"),
    (["alpha"], "ambiguous"),
    (["--device"], "needs a value"),
])
def test_run_all_rejects_bad_arguments(project, args, message):
    out = run_all(project, *args)
    assert out.returncode == 2 and message in out.stderr, out.stdout + out.stderr
    assert "[1/" not in out.stdout


def test_run_all_list_resolves_prefixes_and_shows_parameters(project):
    out = run_all(project, "--list", "--quick", "03", "01_alpha", "01", "delta")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line for line in lines if not line.startswith(" ")] == ["01_alpha_first", "03_alpha_last", "04_delta_typo"]
    assert "    size: 3" in lines and "    quick: true" in lines
    assert not any("undeclared_elsewhere" in line for line in lines)
    assert any("sizee" in line and "does not declare" in line for line in lines)
