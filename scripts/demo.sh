#!/usr/bin/env bash
# Set up (if needed) and run the DermGate demo: simulated dermatoscope, private
# Orthanc, the gateway. Extra arguments go to `dermgate demo` (e.g. --captures 3).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/dermgate demo "$@"
