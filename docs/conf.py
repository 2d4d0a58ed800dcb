"""Sphinx configuration of the documentation site: ./build_docs.sh (docs/book.py) stages the pages and the executed
notebooks and runs sphinx-build with this file (``-c docs``); MyST-NB shows the notebooks as stored, never executing
them."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the API reference documents this checkout's floss_core

project = "floss_core"
copyright = "the floss_core authors, MIT License"
author = "the floss_core authors"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "sphinx.ext.viewcode"]
root_doc = "index"
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


def setup(app):
    app.connect("autodoc-process-docstring", _plain_docstring)


html_theme = "furo"
html_title = "floss_core"
html_static_path = []
