"""The figure notebooks run in quick mode and follow the conventions (run_all.sh itself: tests/test_runner.py).

Every notebooks/[0-9][0-9]_*.ipynb is executed with papermill and the quick parameters of
notebooks/quick_params.yaml (resolved by the functions run_all.sh uses), with its figures and cache in pytest's
tmp_path. It must run, write at least one figure as PNG and PDF, and record finite key numbers
(floss_core.repro.plotting.record).
"""
import json
import math
import os
import time
import warnings
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")
nbformat = pytest.importorskip("nbformat")

from floss_core.repro.runner import declared_parameters, load_quick_params, notebook_parameters

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
QUICK_PARAMS = REPO / "notebooks" / "quick_params.yaml"
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
        warnings.warn(f"{notebook.stem} took {seconds:.0f} s in quick mode (target < {QUICK_SECONDS} s)")
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


# -- floss_core.repro.plotting, which every notebook uses ---------------------------------------------------------

def test_plotting_save_record_and_median_band(tmp_path, monkeypatch):
    import matplotlib
    import numpy as np
    import torch

    from floss_core.repro import plotting

    monkeypatch.setenv("FLOSS_FIG_DIR", str(tmp_path / "env_dir"))
    monkeypatch.setenv("FLOSS_NOTEBOOK", "07_demo")
    plotting.setup()
    assert matplotlib.get_backend().lower() == "agg"
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    y = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, float("nan")], [2.0, 3.0, 5.0]])  # (E, L), a failed network
    line = plotting.median_band(ax, [0, 1, 2], y)
    assert np.allclose(line.get_ydata(), [2.0, 3.0, 4.0])  # NaN ignored
    line = plotting.median_band(ax, [0, 1, 2], y.T, axis=1)
    assert np.allclose(line.get_ydata(), [2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="points per network"):
        plotting.median_band(ax, [0, 1], y)
    plotting.caption(fig, {"seed": 0, "k": 16})
    paths = plotting.save(fig, "demo")
    assert [p.name for p in paths] == ["demo.png", "demo.pdf"] and all(p.stat().st_size > 0 for p in paths)
    assert paths[0].parent == tmp_path / "env_dir"
    assert plotting.save(fig, "demo", out_dir=tmp_path / "explicit")[0].parent == tmp_path / "explicit"
    plt.close(fig)

    path = plotting.record({"a": torch.tensor(0.5), "b": np.float32(2.0), "c": 3, "d": [1.0, torch.tensor(2)]})
    assert path == tmp_path / "env_dir" / "07_demo_numbers.json"
    assert json.loads(path.read_text()) == {"a": 0.5, "b": 2.0, "c": 3, "d": [1.0, 2]}
    with pytest.warns(RuntimeWarning, match="not finite"):
        plotting.record({"bad": float("nan")}, name="nan_case")
    with pytest.raises(TypeError):
        plotting.record({"text": "not a number"})
    with pytest.raises(ValueError):
        plotting.record({})
