"""The documentation: the site that ./build_docs.sh builds offline, the text of the pages and notebooks, LICENSE and
CITATION.cff.

The site is built once per module from quick-executed notebooks (an empty directory stands in for docs/executed/,
so every notebook runs in quick mode, its cache in tmp), then read as a reader's browser would: every notebook
page has the figures its code drew and its verdict, the index the table of verdicts, the API reference the public
functions, and every local link and image resolves.
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parent.parent
STEMS = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FIGURE_STEMS = [stem for stem in STEMS if stem[:2] in ("01", "02", "03", "04", "05", "06")]
THREADS = os.environ.get("FLOSS_TEST_THREADS", "1")
QUICK_LABEL = "Quick-mode smoke run, not the paper-scale result."
# Words about who wrote or measured something, or the process that made it: the text speaks of the project only.


PROCESS_WORDS = re.compile(r"\bwe hoped\b|\bwe aimed\b|\bearlier run|\bearlier full run|lost before|before commit"
                           r"|\bsession|\bthe helper\b|\bour first\b|\bthrowaway\b|\bbefore the run\b"
                           r"|\bafter the run\b|PAPER\.md|\bshared/", re.I)


def load_book_module():
    spec = importlib.util.spec_from_file_location("floss_docs_book", REPO / "docs" / "book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    pytest.importorskip("furo")
    pytest.importorskip("papermill")
    root = tmp_path_factory.mktemp("site")
    (root / "no-paper-scale").mkdir()
    env = dict(os.environ, FLOSS_CACHE_DIR=str(root / "cache"), FLOSS_THREADS=THREADS,
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    start = time.perf_counter()
    done = subprocess.run([str(REPO / "build_docs.sh"), "--out", str(root / "html"), "--work", str(root / "work"),
                           "--executed", str(root / "no-paper-scale")], cwd=root, env=env, capture_output=True,
                          text=True, timeout=1500, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    print(f"site built in {time.perf_counter() - start:.0f} s")
    return SimpleNamespace(html=root / "html", work=root / "work", log=done.stdout + done.stderr)


def text_of(html: str) -> str:
    """The visible text of an HTML page, roughly: tags dropped, whitespace collapsed."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#8217;", "'").replace("&quot;", '"')


@pytest.mark.parametrize("stem", STEMS)
def test_every_notebook_page_shows_its_figures_and_its_verdict(site, stem):
    page = site.html / "notebooks" / f"{stem}.html"
    html = page.read_text()
    outputs = re.findall(r'<div class="cell_output docutils container">(.*?)</div>\s*</div>', html, re.S)
    images = [src for out in outputs for src in re.findall(r'<img[^>]+src="([^"]+\.png)"', out)]
    assert images, f"{stem}'s page shows no figure drawn by its code"
    for src in images:
        assert (page.parent / src).resolve().is_file(), f"{stem}: missing image {src}"
    text = text_of(html)
    assert QUICK_LABEL in text, "a quick-executed page must say so"
    assert "What we found" in text
    if stem in FIGURE_STEMS:
        verdict = text[text.index("What we found"):]
        assert re.search(r"\b(reproduced|partly)\b", verdict, re.I), f"{stem}: no verdict under 'What we found'"


def test_the_index_has_the_table_of_verdicts_linking_each_figure_notebook(site):
    html = (site.html / "index.html").read_text()
    for stem in FIGURE_STEMS:
        row = re.search(r"<tr[^>]*>(?:(?!</tr>).)*" + f'href="notebooks/{stem}.html"' + r".*?</tr>", html, re.S)
        assert row, f"the index has no row linking notebooks/{stem}.html"
        assert re.search(r"<strong>(reproduced|partly|not reproduced)</strong>", row.group(0))


def test_the_api_reference_documents_lyapunov_spectrum_floss_and_train(site):
    html = (site.html / "api.html").read_text()
    for name, phrase in (("lyapunov_spectrum", "Lyapunov exponents"), ("floss", "flossing steps"),
                         ("train", "Train every network")):
        match = re.search(f'id="floss_core.{name}"(.*?)</dd>', html, re.S)
        assert match, f"floss_core.{name} is not documented"
        assert phrase in text_of(match.group(1)), f"floss_core.{name}'s docstring is missing"


def test_every_local_link_and_image_of_the_site_resolves(site):
    pages = sorted(site.html.rglob("*.html"))
    assert len(pages) >= len(STEMS) + 10
    for page in pages:
        html = page.read_text()
        assert "file://" not in html and str(REPO) not in html, f"{page.name} points into the build machine"
        for target in re.findall(r'(?:href|src)="([^"#?]+)', html):
            if not re.match(r"[a-z]+:", target):
                assert (page.parent / target).exists(), f"{page.relative_to(site.html)}: broken link {target}"


def test_a_paper_scale_copy_replaces_the_quick_run_and_says_when_it_ran(site, tmp_path):
    book = load_book_module()
    paper = tmp_path / "executed"
    paper.mkdir()
    executed = site.work / "executed" / "quick" / f"{STEMS[0]}.ipynb"
    shutil.copy(executed, paper / executed.name)  # standing in for ./run_all.sh's copy
    copies = book.choose_copies(paper, site.work, execute=False)
    assert copies[STEMS[0]] == ("paper", paper / executed.name)
    assert {scale for stem, (scale, _) in copies.items() if stem != STEMS[0]} == {"quick"}
    import nbformat

    staged = tmp_path / "page.ipynb"
    book.stage_notebook(STEMS[0], "paper", paper / executed.name, staged)
    note = nbformat.read(staged, as_version=4).cells[1].source
    assert note.startswith("*Executed at paper scale by `./run_all.sh` on 20") and QUICK_LABEL not in note


def test_the_runner_writes_the_executed_copies_where_the_book_reads_them():
    from floss_core.repro.runner import docs_executed_dir

    settings = SimpleNamespace(notebook_dir=REPO / "notebooks")
    book = load_book_module()
    assert docs_executed_dir({}, settings) == book.DOCS / "executed" == REPO / "docs" / "executed"


# -- the text ---------------------------------------------------------------------------------------------------------

def documentation_files():
    return [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md")),
            *sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))]


@pytest.mark.parametrize("path", documentation_files(),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_the_text_speaks_of_the_project_only(path):
    text = path.read_text()
    if path.suffix == ".py":  # a notebook: its markdown cells and comments
        text = "\n".join(line for line in text.splitlines() if "#" in line)
    found = sorted({m.group(0) for m in PROCESS_WORDS.finditer(text)})
    assert not found, f"{path.relative_to(REPO)} speaks of how it was made: {found}"


def test_each_notebook_states_the_runtime_of_the_runtimes_table():
    """The first time in seconds of a notebook's "Runtime." paragraph is its paper-scale runtime: the one the
    runtimes table of docs/running.md gives (a notebook states one runtime, not several runs' times)."""
    rows = re.findall(r"^\| `(\d\d_\w+)` \|.*\| ([^|]+) \|$", (REPO / "docs" / "running.md").read_text(), re.M)
    table = {stem: runtime.strip() for stem, runtime in rows}
    assert set(table) <= set(STEMS) and {"00_tutorial", "03_fig3_preflossing"} <= set(table)
    checked = 0
    for stem in sorted(table):
        source = (REPO / "notebooks" / f"{stem}.py").read_text()
        runtime = source[source.index("**Runtime.**"):].split("\n#\n")[0]
        stated = re.findall(r"\b(\d+(?:\.\d+)?) s\b", runtime)
        if stated:
            assert f"{stated[0]} s" == table[stem], f"{stem} states {stated[0]} s, the runtimes table {table[stem]}"
            checked += 1
    assert checked >= 6


def pyproject(key):
    """A top-level string of pyproject.toml's [project] table (tomllib is Python 3.11+)."""
    return re.search(rf'^{key} = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


def test_license_is_mit_as_pyproject_declares():
    assert pyproject("license") == "MIT"
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "WITHOUT WARRANTY OF ANY KIND" in text


def test_citation_cff_cites_this_software_and_the_paper():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["message"] and cff["title"]
    assert cff["version"] == pyproject("version") and cff["license"] == pyproject("license")
    assert cff["authors"] and all("name" in a or "family-names" in a for a in cff["authors"])
    (paper,) = [ref for ref in cff["references"] if "Gradient Flossing" in ref["title"]]
    assert paper["year"] == 2023 and paper["authors"] == [{"family-names": "Engelken", "given-names": "Rainer"}]
    assert paper["type"] in ("conference-paper", "article") and "2312.17306" in str(paper)


def test_license_and_citation_are_tracked():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "LICENSE", "CITATION.cff"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    assert sorted(tracked) == ["CITATION.cff", "LICENSE"]
