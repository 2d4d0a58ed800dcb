#!/usr/bin/env bash
# The test command: ./run_tests.sh [pytest args]. Lints with ruff, then runs pytest (every notebook in quick mode too).
set -euo pipefail
cd "$(dirname "$0")"
source ./_env.sh
python -m ruff check .
exec python -m pytest -q "$@"
