#!/usr/bin/env bash
# Build the documentation site: set up (see bootstrap.sh), install the docs extra, make the
# gallery (docs/make_gallery.py: short real runs, so the figures show the current code), then
# `mkdocs build --strict` (broken links, missing references or a public name without an API
# entry fail the build). Extra arguments go to mkdocs, e.g. `bash scripts/docs.sh -d /tmp/site`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[docs]"
export OPENBLAS_NUM_THREADS=1 NO_MKDOCS_2_WARNING=1
.venv/bin/python docs/make_gallery.py
exec .venv/bin/mkdocs build --strict "$@"
