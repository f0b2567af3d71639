#!/usr/bin/env bash
# Set up (see bootstrap.sh), run the test suite (long learning runs are marked slow), then
# build the documentation site with `mkdocs build --strict` into a temporary folder
# (scripts/docs.sh: broken links or missing API entries fail). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python -m pytest -q -n 2 -m "not slow" "$@"
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
bash scripts/docs.sh -d "$site"
