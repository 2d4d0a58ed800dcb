"""Sphinx configuration of the documentation site: ./build_docs.sh (docs/book.py) stages the pages and the executed
notebooks and runs sphinx-build with this file (``-c docs``); MyST-NB shows the notebooks as stored, never executing
them."""
import importlib.util
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the API reference documents this checkout's floss_core

project = "floss_core"
copyright = "the floss_core authors, MIT License"
author = "the floss_core authors"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "sphinx.ext.viewcode"]
root_doc = "index"
highlight_language = "text"  # literal blocks (the docstrings) are plain text; fenced code names its language
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header"]  # notebooks start at "# Figure N", pages may skip levels

nb_execution_mode = "off"  # executed copies come from ./run_all.sh (paper scale) or run_all.sh --quick
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_preserve_defaults = True  # signatures show `config=FlossConfig()`, not the expanded dataclass
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = False



def _plain_docstring(app, what, name, obj, options, lines):
    """floss_core's docstrings are plain text laid out for a terminal (aligned argument lists, shapes, formulas):
    the first paragraph is shown as text, the rest as it is written, in a literal block."""
    if not lines:
        return
    end = lines.index("") if "" in lines else len(lines)
    head = [line.replace("|", "\\|") for line in lines[:end]]
    body = [line for line in lines[end:]]
    while body and not body[0].strip():
        body.pop(0)
    lines[:] = head + (["", "::", ""] + ["    " + line for line in body] if body else [])


# MathJax served with the site, so that its formulas render without a network: MathJax 3's tex-chtml.js and its
# fonts, from the sphinx-mathjax-offline package (the docs extra). Without it, Sphinx's default (a CDN) is used.
_spec = importlib.util.find_spec("sphinx-mathjax-offline")
MATHJAX = Path(_spec.origin).parent / "static" / "mathjax" if _spec and _spec.origin else None
if MATHJAX is not None:
    mathjax_path = "mathjax/tex-chtml.js"


def _copy_mathjax(app, exc):
    if exc is not None or MATHJAX is None:
        return
    target = Path(app.outdir) / "_static" / "mathjax"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(MATHJAX / "tex-chtml.js", target / "tex-chtml.js")
    fonts = Path("output") / "chtml" / "fonts" / "woff-v2"
    shutil.copytree(MATHJAX / fonts, target / fonts, dirs_exist_ok=True)


def setup(app):
    app.connect("autodoc-process-docstring", _plain_docstring)
    app.connect("build-finished", _copy_mathjax)


html_theme = "furo"
html_title = "floss_core"
html_static_path = []
