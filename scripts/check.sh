#!/usr/bin/env bash
# Static checks, the same locally and in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "check: ruff format"
.venv/bin/ruff format --check gateway drivers tests bench
echo "check: ruff lint"
.venv/bin/ruff check gateway drivers tests bench
echo "check: mypy --strict"
.venv/bin/mypy --strict gateway drivers
