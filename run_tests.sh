#!/usr/bin/env bash
# The test command: ./run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")"
source ./_env.sh
exec python -m pytest -q "$@"
