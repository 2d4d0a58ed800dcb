#!/usr/bin/env bash
# Run the figure notebooks with papermill and collect their figures: floss_core/repro/runner.py; see --help.
cd "$(dirname "${BASH_SOURCE[0]}")" || exit 2
# shellcheck disable=SC1091
source ./_env.sh
exec python3 -m floss_core.repro.runner "$@"
