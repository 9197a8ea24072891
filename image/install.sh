#!/usr/bin/env bash
# Turn a stock Raspberry Pi OS (Bookworm) or Debian 12 into a DermGate box, or update
# one, from a signed release bundle (scripts/make-bundle.sh), offline:
#
#   sudo ./install.sh [--allowed-signers FILE] [--no-apt]          in an unpacked bundle
#   sudo image/install.sh BUNDLE.tar [--allowed-signers FILE] [--no-apt]
#
# The release is staged and applied by the bundle's own dermgate-update, the same way
# as every later update (/opt/dermgate/releases/<version>, the current symlink). The
# first install needs the release signer's public key: --allowed-signers FILE (one line
# `release@dermgate namespaces="dermgate-release" ssh-ed25519 AAAA…`); it is kept in
# /etc/dermgate/allowed_signers. --no-apt skips the Debian packages (image builds
# that install them themselves, or boxes without internet that have them already).
set -euo pipefail
umask 022

bundle="" signers="" apt=1
while (($#)); do
  case "$1" in
    --allowed-signers) signers="$2"; shift 2 ;;
    --no-apt) apt=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "install: unknown option $1" >&2; exit 2 ;;
    *) bundle="$1"; shift ;;
  esac
done
[[ -n "$bundle" ]] || bundle="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [[ -f "$bundle" ]]; then
  tar -xf "$bundle" -C "$work" --no-same-owner --no-same-permissions
  bundle="$(echo "$work"/dermgate-*)"
fi
[[ -f "$bundle/manifest.json" ]] || {
  echo "install: $bundle is not a release bundle (make one with scripts/make-bundle.sh)" >&2
  exit 2
}

if ((apt)); then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    python3 python3-venv libusb-1.0-0 libudev1 openssh-client
fi

install -d -m 0755 /opt/dermgate /etc/dermgate
if [[ -n "$signers" ]]; then
  install -m 0644 "$signers" /etc/dermgate/allowed_signers
fi
[[ -f /etc/dermgate/allowed_signers ]] || {
  echo "install: no /etc/dermgate/allowed_signers: give --allowed-signers FILE" >&2
  exit 2
}
# The updater comes from the bundle: check the signature and its hash before running it.
ssh-keygen -Y verify -f /etc/dermgate/allowed_signers -I release@dermgate \
  -n dermgate-release -s "$bundle/manifest.json.sig" < "$bundle/manifest.json" >/dev/null
read -r version expected < <(python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))
print(m["version"], m["files"]["dermgate-update.pyz"])' "$bundle/manifest.json")
echo "$expected  $bundle/dermgate-update.pyz" | sha256sum --check --quiet
install -m 0755 "$bundle/dermgate-update.pyz" /usr/local/sbin/dermgate-update

id dermgate >/dev/null 2>&1 || useradd --system --home-dir /var/lib/dermgate \
  --shell /usr/sbin/nologin --groups dialout,plugdev dermgate

dermgate-update stage "$bundle"
release="/opt/dermgate/releases/$version"  # verified copies from here on
install -m 0644 "$release/README.md" /opt/dermgate/README.md

first=0
if [[ ! -e /etc/dermgate/dermgate.toml ]]; then
  first=1
  install -m 0640 -g dermgate "$release/image/dermgate.toml.example" /etc/dermgate/dermgate.toml
  echo "install: edit /etc/dermgate/dermgate.toml (PACS address, devices), then:"
  echo "         systemctl restart dermgate"
fi
for unit in dermgate.service dermgate-rollback.service dermgate-update-boot.service; do
  install -D -m 0644 "$release/image/$unit" "/etc/systemd/system/$unit"
done
install -D -m 0644 "$release/image/dermgate.tmpfiles" /usr/lib/tmpfiles.d/dermgate.conf
# No real-time clock on a Pi: wait (at most 2 min) for time sync before DermGate starts.
install -D -m 0644 "$release/image/time-wait-sync.conf" \
  /etc/systemd/system/systemd-time-wait-sync.service.d/dermgate.conf
install -D -m 0644 "$release/image/60-dermgate.rules" /etc/udev/rules.d/60-dermgate.rules
# Drop folders of the 3D scanner and the camera (point the devices' exports here).
install -d -m 0770 -o dermgate -g dermgate /srv/dermgate /srv/dermgate/scanner /srv/dermgate/photos

if [[ -d /run/systemd/system ]]; then
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/dermgate.conf
  udevadm control --reload-rules && udevadm trigger --subsystem-match=usb || true
  systemctl daemon-reload
  systemctl enable systemd-time-wait-sync.service
  systemctl enable dermgate.service dermgate-update-boot.service
  if ((first)) || ! systemctl is-active --quiet dermgate; then
    dermgate-update apply "$version" --no-restart
    systemctl restart dermgate
  else
    dermgate-update apply "$version"  # waits until idle, restarts, health gate
  fi
else
  install -d -m 0750 -o dermgate -g dermgate /var/lib/dermgate
  dermgate-update apply "$version" --no-restart
  echo "install: systemd is not running here; the units are installed and enabled at next boot"
  for unit in dermgate.service dermgate-update-boot.service; do
    install -d /etc/systemd/system/multi-user.target.wants
    ln -sf "/etc/systemd/system/$unit" "/etc/systemd/system/multi-user.target.wants/$unit"
  done
  install -d -m 0755 /etc/systemd/system/sysinit.target.wants
  ln -sf /lib/systemd/system/systemd-time-wait-sync.service \
    /etc/systemd/system/sysinit.target.wants/systemd-time-wait-sync.service
fi
