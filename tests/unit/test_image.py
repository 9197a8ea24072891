"""What ``image/`` installs on a box is consistent with the service it runs.

A Pi cannot be booted here, so these check the files themselves: the unit passes
systemd's own checker, its stop timeout leaves the service's forced stop room to
happen first, and every USB device a first-party driver serves has a udev rule that
lets the service user open it.
"""

from __future__ import annotations

import re

from drivers.usb_confocal.driver import UsbConfocalDriver
from gateway.core.config import SupervisionSettings
from gateway.devices.contract import UsbMatch
from gateway.devices.registry import find_driver, installed_ids
from gateway.status.web.gate import DEFAULT_MAX_CONNECTIONS
from tests.support.paths import REPO_ROOT

IMAGE = REPO_ROOT / "image"


def _unit_value(key: str) -> str:
    values = [
        line.split("=", 1)[1].strip()
        for line in (IMAGE / "dermgate.service").read_text(encoding="utf-8").splitlines()
        if line.startswith(f"{key}=")
    ]
    assert len(values) == 1, f"{key} is set {len(values)} times in the unit"
    return values[0]


def test_unit_leaves_the_service_time_to_stop_by_itself() -> None:
    """systemd kills after TimeoutStopSec; the service's own deadline must come first,
    so a stuck stop is logged with its stacks instead of ending in a bare SIGKILL."""
    timeout_stop = float(_unit_value("TimeoutStopSec"))
    longest = SupervisionSettings.model_fields["stop_timeout"].metadata
    ceiling = next(m.le for m in longest if getattr(m, "le", None) is not None)
    assert ceiling + 5 <= timeout_stop
    assert SupervisionSettings().stop_timeout < ceiling
    assert _unit_value("KillSignal") == "SIGTERM"


def test_every_first_party_usb_device_has_a_udev_rule() -> None:
    rules = (IMAGE / "60-dermgate.rules").read_text(encoding="utf-8")
    allowed = {
        (int(vid, 16), int(pid, 16))
        for vid, pid in re.findall(
            r'ATTR\{idVendor\}=="([0-9a-f]{4})", ATTR\{idProduct\}=="([0-9a-f]{4})", '
            r'MODE="0660", GROUP="plugdev"',
            rules,
        )
    }
    first_party = [n for n in installed_ids() if find_driver(n).__module__.startswith("drivers.")]
    usb = [
        (name, m)
        for name in first_party
        for m in find_driver(name).matchers
        if isinstance(m, UsbMatch)
    ]
    assert usb, "no first-party driver declares a USB device"
    assert any(m in UsbConfocalDriver.matchers for _, m in usb)
    for name, match in usb:
        assert (match.vendor_id, match.product_id) in allowed, (
            f"driver {name}: no udev rule lets group plugdev open "
            f"{match.vendor_id:04x}:{match.product_id:04x}"
        )
    assert "plugdev" in _unit_value("SupplementaryGroups").split()


def test_unit_gives_the_page_and_the_rest_their_descriptors() -> None:
    """The page takes at most a quarter of the soft limit (and 256 at most): the unit's
    limit leaves the devices, spool, SQLite and the listener at least 3,000."""
    soft = int(_unit_value("LimitNOFILE").split(":")[0])
    page = min(DEFAULT_MAX_CONNECTIONS, soft // 4)
    assert soft - page >= 3000


def test_the_box_waits_for_time_sync_at_boot_but_not_for_ever() -> None:
    """No real-time clock on a Pi: the unit is ordered after time-sync.target, the
    installer enables systemd-time-wait-sync (which holds that target back until the
    clock is set) and bounds it with a drop-in, so a box without network still starts."""
    assert "time-sync.target" in _unit_value("After").split()
    # Ordered after it, not pulling it in (systemd.special(7)): time-wait-sync does.
    assert "time-sync.target" not in _unit_value("Wants").split()
    install = (IMAGE / "install.sh").read_text(encoding="utf-8")
    assert "systemctl enable systemd-time-wait-sync.service" in install
    assert "sysinit.target.wants/systemd-time-wait-sync.service" in install  # image build
    assert "systemd-time-wait-sync.service.d/dermgate.conf" in install
    dropin = (IMAGE / "time-wait-sync.conf").read_text(encoding="utf-8").splitlines()
    timeout = [line.split("=", 1)[1] for line in dropin if line.startswith("TimeoutStartSec=")]
    assert len(timeout) == 1, dropin
    assert 0 < int(timeout[0]) <= 300, timeout
