#!/usr/bin/env bash
# Set up (see bootstrap.sh), then train and evaluate BC-HG vs NAIVE-PGD on Four-Rooms.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python examples/demo.py "$@"
