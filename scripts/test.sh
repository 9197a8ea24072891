#!/usr/bin/env bash
# Set up (if needed) and run every check and test: ruff format, ruff lint,
# mypy --strict, then pytest (real Orthanc, real dciodvfy, simulated devices).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
scripts/check.sh
exec .venv/bin/python -m pytest "$@"
