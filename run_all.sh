#!/usr/bin/env bash
# Run the figure notebooks with papermill and collect their figures. See ./run_all.sh --help.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    cat <<'EOF'
Usage: ./run_all.sh [--quick] [--device DEV] [--list] [NAME ...]

Execute the figure notebooks notebooks/[0-9][0-9]_*.ipynb with papermill, in order, and collect their figures.

  (no NAME)      run every notebook
  NAME ...       run only these: a stem (02_fig1_flossing), a unique prefix of it (02, 02_fig1) or of the
                 stem without its number (fig1); a path to the .ipynb works too
  --quick        smoke-test scale: pass each notebook the small parameters of notebooks/quick_params.yaml
                 (its `_all` section, then its own section); figures go to figures_quick/, the cache to
                 _cache/quick/, executed notebooks to _executed/quick/, so full-scale outputs are never touched
  --device DEV   pass device=DEV (e.g. cuda) to every notebook
  --list         print the selected notebooks and the parameters each would get, run nothing
  -h, --help     this text

Without --quick, notebooks run at paper scale (the defaults of their `parameters` cell), write figures into
figures/, executed copies into _executed/ and caches into _cache/. A notebook's figures are written into a
temporary directory and moved into place only if the notebook succeeds, so a failing notebook leaves the previous
figures intact. After a failure the remaining notebooks still run; the exit status is 1 and every failed
notebook is named (its log: _executed/[quick/]NAME.log; the partly executed notebook next to it).

Environment:
  FLOSS_THREADS        threads for torch / OpenMP / MKL (default: all cores, nproc)
  FLOSS_FIG_DIR        figure directory (default figures/, or figures_quick/ with --quick)
  FLOSS_CACHE_DIR      cache directory (default _cache/; --quick uses its subdirectory quick/)
  FLOSS_EXECUTED_DIR   executed notebooks and logs (default _executed/; --quick uses quick/ inside it)
  FLOSS_NOTEBOOK_DIR   where the notebooks are (default notebooks/; the tests point it at throwaway notebooks)
  FLOSS_QUICK_PARAMS   quick parameter file (default notebooks/quick_params.yaml)
Each notebook also sees FLOSS_NOTEBOOK=<its stem> (floss_core.plotting.record names its numbers file after it).

Exit status: 0 all succeeded, 1 some notebook failed, 2 usage error (unknown option or notebook name).
EOF
}

die_usage() { echo "run_all.sh: $*" >&2; echo "Try ./run_all.sh --help" >&2; exit 2; }

quick=0 list=0 device="" names=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --quick) quick=1 ;;
        --list) list=1 ;;
        --device) [ $# -ge 2 ] && [ -n "$2" ] || die_usage "--device needs a value"; device="$2"; shift ;;
        --device=*) device="${1#--device=}"; [ -n "$device" ] || die_usage "--device needs a value" ;;
        --) shift; names+=("$@"); break ;;
        -*) die_usage "unknown option '$1'" ;;
        *) names+=("$1") ;;
    esac
    shift
done

# -- the notebooks and the selection ----------------------------------------------------------------------------
nb_dir="${FLOSS_NOTEBOOK_DIR:-$root/notebooks}"
[ -d "$nb_dir" ] || die_usage "notebook directory '$nb_dir' does not exist"
nb_dir="$(cd "$nb_dir" && pwd)"
stems=()
while IFS= read -r f; do stems+=("$(basename "$f" .ipynb)"); done \
    < <(cd "$nb_dir" && LC_ALL=C ls -1d [0-9][0-9]_*.ipynb 2>/dev/null)
[ ${#stems[@]} -gt 0 ] || die_usage "no notebooks [0-9][0-9]_*.ipynb in $nb_dir"

resolve() {  # NAME -> the one stem it names (exit 2 when none or several)
    local name="${1##*/}" s matches=()
    name="${name%.ipynb}"
    [ -n "$name" ] || die_usage "empty notebook name"
    for s in "${stems[@]}"; do [ "$s" = "$name" ] && { echo "$s"; return; }; done
    for s in "${stems[@]}"; do
        case "$s" in "$name"*|[0-9][0-9]_"$name"*) matches+=("$s") ;; esac
    done
    [ ${#matches[@]} -eq 1 ] && { echo "${matches[0]}"; return; }
    [ ${#matches[@]} -eq 0 ] && die_usage "unknown notebook '$1' (notebooks: ${stems[*]})"
    die_usage "notebook name '$1' is ambiguous: ${matches[*]}"
}

selected=()
if [ ${#names[@]} -eq 0 ]; then
    selected=("${stems[@]}")
else
    chosen=" "
    for n in "${names[@]}"; do
        s="$(resolve "$n")" || exit 2
        chosen+="$s "
    done
    for s in "${stems[@]}"; do [[ "$chosen" == *" $s "* ]] && selected+=("$s"); done
fi

# -- output directories (absolute: the kernels run in the notebook directory) -----------------------------------
absdir() { mkdir -p "$1" && (cd "$1" && pwd); }
if [ "$quick" = 1 ]; then
    fig_dir="${FLOSS_FIG_DIR:-$root/figures_quick}"
    cache_dir="${FLOSS_CACHE_DIR:-$root/_cache}/quick"
    exec_dir="${FLOSS_EXECUTED_DIR:-$root/_executed}/quick"
else
    fig_dir="${FLOSS_FIG_DIR:-$root/figures}"
    cache_dir="${FLOSS_CACHE_DIR:-$root/_cache}"
    exec_dir="${FLOSS_EXECUTED_DIR:-$root/_executed}"
fi
fig_dir="$(absdir "$fig_dir")" && cache_dir="$(absdir "$cache_dir")" && exec_dir="$(absdir "$exec_dir")" \
    || { echo "run_all.sh: cannot create the output directories" >&2; exit 2; }
if [ "$quick" = 1 ] && [ -d "$root/figures" ] && [ "$fig_dir" = "$(cd "$root/figures" && pwd)" ]; then
    die_usage "--quick must not write into figures/ (unset FLOSS_FIG_DIR)"
fi
quick_params="${FLOSS_QUICK_PARAMS:-}"
if [ -n "$quick_params" ]; then
    [ -f "$quick_params" ] || die_usage "FLOSS_QUICK_PARAMS: no file '$quick_params'"
    quick_params="$(cd "$(dirname "$quick_params")" && pwd)/$(basename "$quick_params")"
fi

# -- environment ----------------------------------------------------------------------------------------------------
cd "$root" || exit 2
# shellcheck disable=SC1091
source "$root/_env.sh"
set -uo pipefail
# The kernels import floss_core from this checkout whatever their working directory.
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
threads="${FLOSS_THREADS:-$(nproc 2>/dev/null || echo 1)}"
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
# Progress bars write into the executed notebook: one update per 10 s instead of ten per second.
export TQDM_MININTERVAL="${TQDM_MININTERVAL:-10}"

param_args=()
[ "$quick" = 1 ] && param_args+=(--quick)
[ -n "$device" ] && param_args+=(--device "$device")
[ -n "$quick_params" ] && param_args+=(--params-file "$quick_params")

# The parameters of every selected notebook, in one process (DIR/<stem>.yaml, or DIR/<stem>.error).
params_dir="$exec_dir/.params.$$"
rm -rf "$params_dir" && mkdir -p "$params_dir"
trap 'rm -rf "$params_dir"' EXIT
paths=()
for s in "${selected[@]}"; do paths+=("$nb_dir/$s.ipynb"); done
python3 -m floss_core.notebook_params "${param_args[@]}" --out-dir "$params_dir" "${paths[@]}" \
    || [ -n "$(ls "$params_dir")" ] || { echo "run_all.sh: could not read the notebooks' parameters" >&2; exit 1; }

if [ "$list" = 1 ]; then
    for s in "${selected[@]}"; do
        echo "$s"
        cat "$params_dir/$s.yaml" "$params_dir/$s.error" 2>/dev/null | sed 's/^/    /'
    done
    exit 0
fi

# papermill's `-k python3` must start this interpreter: jupyter_client replaces a kernelspec's bare
# "python"/"python3" by the running interpreter, but a python3 kernelspec with an absolute path to another Python
# would not; then register this one under $JUPYTER_DATA_DIR (inside the repo, see _env.sh).
if ! python3 - <<'EOF'
import os, sys
from jupyter_client.kernelspec import KernelSpecManager
exe = KernelSpecManager().get_kernel_spec("python3").argv[0]
bare = {"python", f"python{sys.version_info[0]}", "python%i.%i" % sys.version_info[:2]}
same_env = os.path.dirname(os.path.abspath(exe)) == os.path.dirname(os.path.abspath(sys.executable))
sys.exit(0 if exe in bare or (os.path.isabs(exe) and same_env) else 1)
EOF
then
    echo "[env] registering this Python as kernel python3 in $JUPYTER_DATA_DIR" >&2
    python3 -m ipykernel install --user --name python3 >/dev/null || exit 1
fi

# -- run ------------------------------------------------------------------------------------------------------------
now() { echo "${EPOCHREALTIME:-$(date +%s.%N)}"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

mode="paper scale"; [ "$quick" = 1 ] && mode="quick"
echo "run_all.sh: ${#selected[@]} notebook(s), $mode${device:+, device $device}, $threads thread(s)"
echo "  figures -> $fig_dir"
echo "  executed notebooks and logs -> $exec_dir"

tmp_fig=""
trap 'rm -rf "$tmp_fig"; echo; echo "run_all.sh: interrupted" >&2; exit 130' INT TERM
trap 'rm -rf "$tmp_fig" "$params_dir"' EXIT

failed=() rows=() i=0 t_all="$(now)"
for stem in "${selected[@]}"; do
    i=$((i + 1))
    printf '[%d/%d] %s ... ' "$i" "${#selected[@]}" "$stem"
    nb="$nb_dir/$stem.ipynb" log="$exec_dir/$stem.log" params="$exec_dir/$stem.params.yaml"
    tmp_fig="$exec_dir/.figures-$stem.$$"
    rm -rf "$tmp_fig" "$params" "$exec_dir/$stem.ipynb" && mkdir -p "$tmp_fig"
    cat "$params_dir/$stem.error" >"$log" 2>/dev/null || : >"$log"
    t0="$(now)"
    if cp "$params_dir/$stem.yaml" "$params" 2>/dev/null \
        && FLOSS_FIG_DIR="$tmp_fig" FLOSS_CACHE_DIR="$cache_dir" FLOSS_NOTEBOOK="$stem" \
            python3 -m papermill "$nb" "$exec_dir/$stem.ipynb" -k python3 -f "$params" --cwd "$nb_dir" \
            --no-progress-bar >>"$log" 2>&1; then
        status=ok
        n_files=$(find "$tmp_fig" -type f | wc -l)
        (cd "$tmp_fig" && find . -type f -print0) | while IFS= read -r -d '' f; do
            mkdir -p "$fig_dir/$(dirname "$f")" && mv -f "$tmp_fig/$f" "$fig_dir/$f"
        done
        [ "$n_files" -eq 0 ] && status="ok (no figures)"
    else
        status=FAILED n_files=0
        failed+=("$stem")
    fi
    rm -rf "$tmp_fig"
    t="$(elapsed "$t0" "$(now)")"
    echo "$status  ${t} s"
    if [ "$status" = FAILED ]; then
        echo "    log: $log (last lines below)"
        tail -n 15 "$log" | sed 's/^/    | /'
    fi
    rows+=("$(printf '%-32s %-16s %8s %6s' "$stem" "$status" "$t" "$n_files")")
done
tmp_fig=""

echo
printf '%-32s %-16s %8s %6s\n' notebook status seconds files
for r in "${rows[@]}"; do echo "$r"; done
printf '%-32s %-16s %8s\n' total "" "$(elapsed "$t_all" "$(now)")"

if [ ${#failed[@]} -gt 0 ]; then
    echo "run_all.sh: ${#failed[@]} of ${#selected[@]} notebook(s) FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "run_all.sh: all ${#selected[@]} notebook(s) succeeded; figures in $fig_dir"
