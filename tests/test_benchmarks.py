"""The device benchmark (benchmarks/gpu_figures.py) still runs every figure notebook's computation.

It executes cells of the committed notebooks outside jupyter, so a notebook change (a new import, a new summary
layout) can break it without breaking the notebooks; this runs it in quick mode on the CPU.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parent.parent


def test_gpu_figures_benchmark_runs_every_figure_in_quick_mode(tmp_path):
    out = tmp_path / "figures.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_figures.py"), "--quick", "--device", "cpu",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    done = {line["figure"]: line for line in lines if line["event"] == "figure"}
    assert sorted(done) == ["01", "03", "05", "06"]
    for fig, line in done.items():
        assert line["numbers"], f"figure {fig} recorded no key numbers"
        assert line["compute_seconds"] and all(s >= 0 for s in line["compute_seconds"]), line
    assert not [line for line in lines if line["event"] == "unfinished"]
