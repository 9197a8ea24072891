#!/usr/bin/env bash
# Set up (if needed) and run every check and test: ruff format, ruff lint,
# mypy --strict, then pytest (real Orthanc, real dciodvfy, simulated devices).
#   scripts/test.sh            everything: tests/unit, tests/e2e, tests/conformance (CI)
#   scripts/test.sh --fast     the checks, then tests/unit only (in-process, under a minute)
# Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
args=()
for arg in "$@"; do
  if [[ "$arg" == "--fast" ]]; then fast=1; else args+=("$arg"); fi
done
scripts/setup.sh --test
scripts/check.sh
if (( fast )); then
  exec .venv/bin/python -m pytest tests/unit "${args[@]}"
fi
exec .venv/bin/python -m pytest "${args[@]}"
