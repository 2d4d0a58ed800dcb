"""README.md is a front page that cannot rot: short, the verdicts up front, and every Python block runs as written.

The ```python blocks run in order, in one fresh Python process (as a reader pastes them into one session), from an
empty directory; what each prints must be the ```text block that follows it in the README, line for line. The
examples are chosen so that these digits hold on any x86 CPU (stable networks in float64, or numbers printed at a
precision that roundoff cannot reach), which the README says where it matters.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SEPARATOR = "--- end of README block ---"
VERDICTS = ("**reproduced**", "**partly**", "**not reproduced**")


def blocks():
    """[(language, text)] of the README's fenced blocks, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(README.read_text())]


def python_blocks_with_outputs():
    """[(code, expected output)]: every python block and the text block right after it."""
    found = blocks()
    pairs = []
    for i, (language, code) in enumerate(found):
        if language == "python":
            after = found[i + 1] if i + 1 < len(found) else ("", None)
            assert after[0] == "text", f"README python block {len(pairs) + 1} needs a ```text block with its output"
            pairs.append((code, after[1]))
    return pairs


def test_readme_is_a_front_page_of_at_most_250_lines():
    assert len(README.read_text().splitlines()) <= 250


def test_the_verdicts_of_figures_1_to_6_are_within_the_first_80_lines():
    head = README.read_text().splitlines()[:80]
    rows = [line for line in head if re.match(r"\| [1-6] \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == [str(n) for n in range(1, 7)]
    for row in rows:
        assert any(verdict in row for verdict in VERDICTS), f"no verdict in {row!r}"
        assert re.search(r"\]\(notebooks/0[1-6]_\w+\.ipynb\)", row), f"no link to the notebook in {row!r}"
        assert (REPO / re.search(r"\]\((notebooks/[^)]+)\)", row).group(1)).exists()


def test_install_and_the_quick_run_come_before_the_paper_scale_run():
    text = README.read_text()
    assert "pip install ." in text and "environment.yml" in text
    runs = [line.split("#")[0].split() for line in text.splitlines() if line.startswith("./run_all.sh")]
    assert runs[0] == ["./run_all.sh", "--quick"] and ["./run_all.sh"] in runs


def test_readme_points_only_at_files_in_the_repository():
    text = README.read_text()
    assert "PAPER.md" not in text and "shared/" not in text
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+:", target):
            assert (REPO / target).exists(), f"README links to {target}, which is not in the repository"


def test_every_python_block_runs_in_a_fresh_process_and_prints_what_the_readme_says(tmp_path):
    pairs = python_blocks_with_outputs()
    assert len(pairs) >= 3
    driver = tmp_path / "readme_blocks.py"
    driver.write_text("namespace = {'__name__': '__main__'}\n" + "".join(
        f"exec(compile({code!r}, 'README block {i}', 'exec'), namespace)\nprint({SEPARATOR!r}, flush=True)\n"
        for i, (code, _) in enumerate(pairs, 1)))
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    # The printed digits do not depend on the thread count (float64); one thread keeps the run short on a busy CI
    # machine, as in the other tests (FLOSS_TEST_THREADS).
    threads = os.environ.get("FLOSS_TEST_THREADS", "1")
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    done = subprocess.run([sys.executable, str(driver)], cwd=empty, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = done.stdout.split(SEPARATOR + "\n")[:-1]
    assert len(outputs) == len(pairs), done.stdout
    for i, ((_, expected), printed) in enumerate(zip(pairs, outputs), 1):
        lines = [line.rstrip() for line in printed.splitlines()]
        assert lines == [line.rstrip() for line in expected.splitlines()], f"README block {i} printed:\n{printed}"
    assert list(empty.iterdir()) == [], "the README's examples write no files"
