#!/usr/bin/env bash
# Set up (see bootstrap.sh), then run the test suite (long learning runs are marked slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest -q -n 2 -m "not slow" "$@"
