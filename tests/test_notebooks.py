"""The figure notebooks run in quick mode and follow the conventions (run_all.sh itself: tests/test_runner.py).

Every notebooks/[0-9][0-9]_*.ipynb is executed with papermill and the quick parameters of
notebooks/quick_params.yaml (resolved by the functions run_all.sh uses), with its figures and cache in pytest's
tmp_path. It must run, write at least one figure as PNG and PDF, and record finite key numbers
(floss_core.repro.plotting.record). Every notebook is a jupytext pair: its percent-format notebooks/NN_name.py (the
source) and the .ipynb made from it by `jupytext --sync` hold the same cells (see notebooks/_template.md).
"""
import ast
import json
import math
import os
import time
import warnings
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")
nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")

from floss_core.repro.runner import declared_parameters, load_quick_params, notebook_parameters

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
QUICK_PARAMS = REPO / "notebooks" / "quick_params.yaml"
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
    assert pngs, f"{notebook.stem} saved no figure (use floss_core.repro.plotting.save)"
    for png in pngs:
        assert png.stat().st_size > 0 and png.with_suffix(".pdf").exists(), f"{png.name} has no PDF twin"
    numbers = fig_dir / f"{notebook.stem}_numbers.json"
    assert numbers.exists(), f"{notebook.stem} did not call floss_core.repro.plotting.record(...)"
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
    table = load_quick_params(QUICK_PARAMS)
    stems = {p.stem for p in NOTEBOOKS}
    unknown = set(table) - stems - {"_all"}
    assert not unknown, f"{QUICK_PARAMS.name} has sections for notebooks that do not exist: {sorted(unknown)}"
    missing = stems - set(table)
    assert not missing, f"{QUICK_PARAMS.name} has no section for {sorted(missing)} (they would run at paper scale)"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_quick_params_are_declared_by_the_notebook(notebook):
    notebook_parameters(notebook, quick=True)  # raises on a missing section or an undeclared parameter
