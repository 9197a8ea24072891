#!/usr/bin/env bash
# Turn a stock Raspberry Pi OS (Bookworm) or Debian 12 into a DermGate box.
# Run as root from a checkout of the repository: image/install.sh
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"

apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  python3 python3-venv libusb-1.0-0 libudev1 \
  gcc python3-dev linux-libc-dev  # python-evdev (keyboard-wedge barcode scanners) is built

id dermgate >/dev/null 2>&1 || useradd --system --home-dir /var/lib/dermgate \
  --shell /usr/sbin/nologin --groups dialout,plugdev dermgate

install -d -m 0755 /opt/dermgate /etc/dermgate
[[ -x /opt/dermgate/venv/bin/python ]] || python3 -m venv /opt/dermgate/venv
/opt/dermgate/venv/bin/python -m pip install -q --upgrade pip
/opt/dermgate/venv/bin/python -m pip install -q "$src"
install -m 0644 "$src/README.md" /opt/dermgate/README.md

if [[ ! -e /etc/dermgate/dermgate.toml ]]; then
  install -m 0640 -g dermgate "$src/image/dermgate.toml.example" /etc/dermgate/dermgate.toml
  echo "install: edit /etc/dermgate/dermgate.toml (PACS address, devices), then:"
  echo "         systemctl restart dermgate"
fi
install -m 0644 "$src/image/dermgate.service" /etc/systemd/system/dermgate.service
install -m 0644 "$src/image/dermgate.tmpfiles" /usr/lib/tmpfiles.d/dermgate.conf
# No real-time clock on a Pi: wait (at most 2 min) for time sync before DermGate starts.
install -d -m 0755 /etc/systemd/system/systemd-time-wait-sync.service.d
install -m 0644 "$src/image/time-wait-sync.conf" \
  /etc/systemd/system/systemd-time-wait-sync.service.d/dermgate.conf
install -m 0644 "$src/image/60-dermgate.rules" /etc/udev/rules.d/60-dermgate.rules
# Drop folders of the 3D scanner and the camera (point the devices' exports here).
install -d -m 0770 -o dermgate -g dermgate /srv/dermgate /srv/dermgate/scanner /srv/dermgate/photos

if [[ -d /run/systemd/system ]]; then
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/dermgate.conf
  udevadm control --reload-rules && udevadm trigger --subsystem-match=usb || true
  systemctl daemon-reload
  systemctl enable systemd-time-wait-sync.service
  systemctl enable --now dermgate
else
  install -d -m 0750 -o dermgate -g dermgate /var/lib/dermgate
  echo "install: systemd is not running here; the unit is installed and enabled at next boot"
  ln -sf /etc/systemd/system/dermgate.service \
    /etc/systemd/system/multi-user.target.wants/dermgate.service
  install -d -m 0755 /etc/systemd/system/sysinit.target.wants
  ln -sf /lib/systemd/system/systemd-time-wait-sync.service \
    /etc/systemd/system/sysinit.target.wants/systemd-time-wait-sync.service
fi
