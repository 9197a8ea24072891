#!/usr/bin/env bash
# Set up everything DermGate needs on Debian 12 / Raspberry Pi OS Bookworm:
# Debian packages (apt-get, only when missing), a virtualenv in .venv, and the
# project installed into it. Usage: scripts/setup.sh [--test]
#   --test  also install the test and lint tools (pytest, hypothesis, dciodvfy, mypy, ruff)
#           and the test-only driver plugins (tests/plugins/dermgate-testdriver)
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"

# Debian packages: Orthanc (the demo's and the tests' PACS), Mosquitto (the demo's
# and the tests' MQTT broker), DCMTK (benchmark anchors), Python's venv support, a C
# compiler and the kernel headers (python-evdev, for barcode scanners, is built from
# source by pip); with
# --test also Chromium and a font for the browser tests (never a downloaded browser),
# systemd's tools to check the box's unit file (systemd-analyze verify), iproute2
# (a test adds an address to lo), and Prometheus's promtool (checks /metrics and the alert
# rules in docs/monitoring/; the tests never start a Prometheus server, but on a machine
# with systemd Debian's package enables its own: `systemctl disable --now prometheus`).
packages=(python3 python3-venv python3-dev gcc linux-libc-dev orthanc orthanc-dicomweb dcmtk mosquitto
  mosquitto-clients)
[[ "${1:-}" == "--test" ]] && packages+=(chromium fonts-dejavu-core systemd iproute2 prometheus)
# libfaketime: a service whose clock reads 1970 (the clock_not_synchronised alarm test).
[[ "${1:-}" == "--test" ]] && packages+=(faketime)
missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: DermGate needs Python 3.11 or newer ($python is $("$python" -V 2>&1))" >&2
  exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
if [[ -n "$extras" ]]; then
  # Test-only driver plugins in their own package (tests/plugins/): found through the
  # dermgate.drivers entry-point group exactly like a vendor's driver package.
  .venv/bin/python -m pip install -q -e tests/plugins/dermgate-testdriver
fi
