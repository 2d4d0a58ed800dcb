"""Time the figure computations (notebooks 01, 03, 05, 06) on a device, without papermill, cache or plotting.

For each figure notebook this reads, straight from the committed ``notebooks/NN_*.ipynb`` (plain JSON: no nbformat,
papermill or jupyter needed), the cell tagged ``parameters`` (paper-scale defaults) and the cell after it (the call
into ``floss_core.experiments``), and executes them with ``device`` from ``--device`` and, with ``--quick``, the
small sizes of ``notebooks/quick_params.yaml`` (needs pyyaml). ``cached`` is replaced by a stub that always
computes (timed with ``torch.cuda.synchronize()`` on CUDA) and returns what ``cached`` would. The import statements
of the code cells above the parameters cell run first (so matplotlib and ``floss_core.repro.plotting`` are imported,
though nothing is plotted). Notebooks 02 and 04
reuse the results of 01 and 03, so they are not timed; 00 (the tutorial) is not one computation and is skipped.

After every computation one JSON line is appended to ``--out``: a "compute" line per cached call (figure 6 has one
per architecture), then a "figure" line with the figure's total seconds and a few of its key numbers. A "start"
line precedes each figure, so a run cut off by a timeout shows what was running and since when ("unfinished" is
written on SIGTERM/Ctrl-C). Every line carries the device name and the torch version.

    PYTHONPATH=. python benchmarks/gpu_figures.py --device cuda --out gpu_figures.jsonl          # paper scale
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gpu_figures.py --quick --device cpu --out /tmp/q.jsonl

Progress bars (tqdm, on stderr) are on by default at paper scale (``--no-progress`` turns them off).
"""
import argparse
import ast
import functools
import inspect
import json
import signal
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from floss_core import experiments  # noqa: E402
from floss_core.repro.cache import _dataclass_as_dict, _plain  # noqa: E402 - what `cached` returns, as plain data

NOTEBOOKS = {"01": "01_fig1_flossing", "03": "03_fig3_preflossing", "05": "05_fig5_complexity",
             "06": "06_fig6_architectures"}


def notebook_cells(stem):
    """(the import statements of the code cells above the `parameters` cell, the source of that cell, the source of
    the code cell after it) of notebooks/<stem>.ipynb."""
    cells = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]
    src = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells]
    i = next(i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    j = next(j for j in range(i + 1, len(cells)) if cells[j]["cell_type"] == "code")
    imports = [ast.get_source_segment(text, node) for c, text in zip(cells[:i], src[:i]) if c["cell_type"] == "code"
               for node in ast.parse(text).body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(imports), src[i], src[j]


def key_numbers(fig, ns):
    """A few result numbers per figure, from the namespace the notebook's call cell left."""
    if fig == "01":
        res, sel = ns["res"], ns["res"]["gains"] == max(ns["gains"])
        out = {"lambda1_before_gmax": float(res["spectrum_before"][sel, 0].median())}
        for (k, target), after in zip(res["runs"], res["spectrum_after"]):
            out[f"max_abs_dev_gmax_k{k}_target{target}"] = float((after[sel][:, :k] - target).abs().max(1)
                                                                  .values.median())
        return out
    if fig == "03":
        return {f"{t}_{c}_successes": s["success"][c].sum(1).tolist()
                for t, s in ns["summary"].items() for c in s["success"]}
    if fig == "05":
        return {f"final_acc_{name}": [round(float(a.median()), 3) for a in f] for name, f in ns["final"].items()}
    if fig == "06":
        return {f"{cell}_{c}_successes": ok.sum(-1).tolist()  # (D,): successes over the seeds per delay
                for cell, t in ns["table"].items() for c, ok in t["success"].items()}
    return {}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="sizes of notebooks/quick_params.yaml")
    ap.add_argument("--order", default="01,05,06,03", help="figures to run, in order (from 01,03,05,06)")
    ap.add_argument("--out", required=True, help="JSON-lines file to append to")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bars")
    args = ap.parse_args()
    figs = args.order.split(",")
    unknown = [f for f in figs if f not in NOTEBOOKS]
    if unknown:
        ap.error(f"unknown figure(s) {unknown}; choose from {list(NOTEBOOKS)}")
    cuda = args.device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    common = {"device": torch.cuda.get_device_name() if cuda else args.device, "torch": torch.__version__,
              "quick": args.quick}

    def log(**line):
        line = {**line, **common}
        with open(args.out, "a") as f:
            f.write(json.dumps(line, default=_dataclass_as_dict) + "\n")  # a sweep config: its fields
        print("[gpu_figures]", json.dumps(line, default=_dataclass_as_dict), flush=True)

    # Warm up the device (context, cuBLAS, cuSOLVER) so that the first figure is not charged for it.
    t0 = time.perf_counter()
    a = torch.randn(8, 64, 64, device=args.device)
    torch.linalg.qr(a @ a)[0].sum().item()
    sync()
    log(event="warmup", seconds=round(time.perf_counter() - t0, 3))

    # SIGTERM (e.g. from `timeout`) -> SystemExit, so the running figure is logged as unfinished.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    for fig in figs:
        stem = NOTEBOOKS[fig]
        imports_src, params_src, call_src = notebook_cells(stem)
        ns = {}
        exec(imports_src, ns)  # what the call cell uses (e.g. functools.partial)
        imported = set(ns)
        exec(params_src, ns)
        declared = {k for k in ns if k not in imported and not k.startswith("__")}
        if args.quick:
            from floss_core.repro.runner import quick_parameters
            ns.update(quick_parameters(stem, ROOT / "notebooks" / "quick_params.yaml", declared=declared))
        ns["device"] = args.device
        computes = []

        def cached(name, params, compute):  # the notebook's cache call, always computed and timed
            start = time.perf_counter()
            result = compute()
            sync()
            seconds = time.perf_counter() - start
            computes.append(seconds)
            log(event="compute", figure=fig, name=name, seconds=round(seconds, 3),
                params={k: v for k, v in params.items() if k != "device"})
            return _plain(result)

        def with_progress(fn):
            @functools.wraps(fn)
            def call(*a, **kw):
                return fn(*a, **{**kw, "progress": args.progress and not args.quick})
            return call

        ns["experiments"] = types.SimpleNamespace(**{  # the module, with the progress bars set by --progress
            name: with_progress(fn) if callable(fn) and "progress" in inspect.signature(fn).parameters else fn
            for name, fn in vars(experiments).items() if not name.startswith("_")})
        ns["cached"] = cached
        log(event="start", figure=fig, notebook=stem)
        start = time.perf_counter()
        try:
            exec(call_src, ns)
            sync()
        except BaseException as err:
            log(event="unfinished", figure=fig, seconds=round(time.perf_counter() - start, 3),
                computes_done=len(computes), error=f"{type(err).__name__}: {err}")
            raise
        log(event="figure", figure=fig, seconds=round(time.perf_counter() - start, 3),
            compute_seconds=[round(s, 3) for s in computes], numbers=key_numbers(fig, ns))


if __name__ == "__main__":
    main()
