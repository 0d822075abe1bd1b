#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs the test suite and executes the notebooks
# at a small setting (ZYLAX_SMALL=1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ZYLAX_SMALL=1 TF_CPP_MIN_LOG_LEVEL=3
exec .venv/bin/python -m pytest -q --nbmake tests notebooks "$@"
