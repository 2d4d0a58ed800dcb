# Sourced by run_tests.sh and run_all.sh: use the active environment if it already imports floss_core and the
# tools, else create/reuse ./.venv with `pip install torch==2.13.0 -e ".[dev]"` (torch pinned here, where the
# environment is made; the package itself asks only for torch>=2.4).
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! (cd / && python3 -c "import floss_core, pytest, papermill, jupytext, scipy, ruff") >/dev/null 2>&1; then
    if [ ! -x "$_root/.venv/bin/python" ]; then
        echo "[env] creating $_root/.venv" >&2
        python3 -m venv "$_root/.venv"
    fi
    # shellcheck disable=SC1091
    source "$_root/.venv/bin/activate"
    if ! (cd / && python -c "import floss_core, pytest, papermill, jupytext, scipy, ruff") >/dev/null 2>&1; then
        echo "[env] pip install -e .[dev] (torch==2.13.0)" >&2
        python -m pip install -q --upgrade pip >&2
        python -m pip install -q "torch==2.13.0" -e "$_root[dev]" >&2
    fi
fi
# Keep Jupyter / IPython / matplotlib state inside the repo, not in $HOME. The directories must exist: else
# IPython warns "not a writable location" and a kernel leaves a directory in the system temp.
export JUPYTER_CONFIG_DIR="$_root/.home/jupyter" IPYTHONDIR="$_root/.home/ipython" MPLCONFIGDIR="$_root/.home/mpl"
export JUPYTER_DATA_DIR="$_root/.home/jupyter-data" MPLBACKEND=Agg
mkdir -p "$JUPYTER_CONFIG_DIR" "$IPYTHONDIR" "$MPLCONFIGDIR" "$JUPYTER_DATA_DIR"
