"""The hash of floss_core's computing code, taken once when the package is imported.

``floss_core.repro.cache`` keys every stored result by it: a result is reused only by the code that computed it.
Taken at import, it describes the code this process runs even if a file is edited later (a stored result is then
keyed by the code that made it, not by the edited file). Only the code that computes results counts: ``repro/``
(caching, plotting, the notebook runner) does not, so a change of a plot recomputes nothing; nor do files in
hidden directories (editor or Jupyter checkpoint copies).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["PACKAGE", "source_hash", "AT_IMPORT"]

PACKAGE = Path(__file__).resolve().parent
_NOT_COMPUTING = ("repro",)  # subpackages that cache, plot and run results but never change them


def source_hash(package: Path = PACKAGE) -> str:
    """sha256 (hex) of the ``*.py`` files under ``package`` that compute results (sorted paths and contents)."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel.parts[0] in _NOT_COMPUTING or any(part.startswith(".") for part in rel.parts):
            continue
        h.update(rel.as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


AT_IMPORT = source_hash()
