#!/usr/bin/env bash
# Static checks, the same locally and in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
paths=(gateway drivers tests scripts/config_reference.py)
[[ -d bench ]] && paths+=(bench)
echo "check: ruff format"
.venv/bin/ruff format --check "${paths[@]}"
echo "check: ruff lint"
.venv/bin/ruff check "${paths[@]}"
echo "check: mypy --strict"
.venv/bin/mypy --strict gateway drivers scripts/config_reference.py
echo "check: README's configuration reference matches the config models"
.venv/bin/python scripts/config_reference.py --check
echo "check: import contracts (lint-imports: layers, drivers see only gateway.driver_api, no cycles)"
.venv/bin/lint-imports --no-logo --no-cache
