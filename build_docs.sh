#!/usr/bin/env bash
# Build the documentation site into _build/html, offline: the docs/ pages, every notebook with its outputs (the
# paper-scale copies in docs/executed/, else quick-mode runs, labelled) and the API reference. See docs/book.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck disable=SC1091
source ./_env.sh
if ! python -c "import sphinx, myst_nb, furo" >/dev/null 2>&1; then
    echo "[docs] pip install -e .[docs]" >&2
    python -m pip install -q -e ".[docs]" >&2
fi
exec python docs/book.py "$@"
