"""The box's own health as the fleet sees it: CPU temperature, under-voltage and
throttling, SD/eMMC wear; the ``health`` section of the state document.

Where each figure comes from (``ROOT`` is ``/`` on a box; tests give a fake tree):

* model: ``ROOT/proc/device-tree/model`` (``ROOT/sys/firmware/devicetree/base/model``);
  a model starting with "Raspberry Pi" makes the box a Pi. Elsewhere ``pi`` is false
  and the Pi-only figures are null: "not a Pi", never a fault.
* temperature: ``ROOT/sys/class/thermal/thermal_zone0/temp`` (milli-°C); shown
  wherever the kernel reports it, Pi or not.
* under-voltage now: the ``rpi_volt`` hwmon's ``in0_lcrit_alarm`` (live, no
  firmware call); throttling and the "since boot" bits: ``vcgencmd get_throttled``
  (``ROOT/usr/bin/vcgencmd``; it needs ``/dev/vcio``). Bits: 0 under-voltage, 1 ARM
  frequency capped, 2 throttled, 3 soft temperature limit; 16-19 the same since
  boot. The sysfs twin ``/sys/devices/platform/soc/soc:firmware/get_throttled`` is
  deprecated (each read warns in the kernel log) and is not read.
* storage wear: ``ROOT/sys/block/mmcblk0/device/{type,life_time,pre_eol_info}``.
  Only eMMC ≥ 5.0 reports wear (``life_time``: two JEDEC estimates, 0x01 = 0-10 %
  used … 0x0A = 90-100 %, 0x0B = exceeded; ``pre_eol_info``: 0x01 normal, 0x02
  warning, 0x03 urgent); SD cards report none: ``"wear": null`` ("not reported").

The files are read on a worker thread every :data:`INTERVAL` seconds by
:class:`HealthMonitor`, which also raises the ``under_voltage`` alarm while the
supply is too weak now (a Pi then corrupts SD cards and USB devices drop out) and
clears it when the supply recovers. The section::

    "health": {
      "pi": true,                       # a Raspberry Pi; false: "not a Pi"
      "model": "Raspberry Pi 4 Model B Rev 1.4",   # null: not reported
      "cpu_temp_c": 48.3,               # null: not reported
      "under_voltage": false,           # now; null: not known (not a Pi)
      "throttling": {                   # null: not known (no vcgencmd, not a Pi)
        "raw": "0x50000", "under_voltage": false, "freq_capped": false,
        "throttled": false, "soft_temp_limit": false,
        "under_voltage_since_boot": true, "freq_capped_since_boot": false,
        "throttled_since_boot": true, "soft_temp_limit_since_boot": false},
      "storage": {"device": "mmcblk0", "type": "SD",   # null: no SD/eMMC
                  "wear": null},        # eMMC: {"life_used_a": "0-10%",
                                        #  "life_used_b": "0-10%", "pre_eol": "normal"}
      "read_at": "2026-12-06T19:30:00+00:00"
    }
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.core.alarms import UNDER_VOLTAGE
from gateway.core.events import NO_EVENTS, AlarmCleared, AlarmRaised, EventSink

log = logging.getLogger(__name__)

__all__ = ["INTERVAL", "HealthMonitor", "decode_throttled", "read_health"]

#: Seconds between two reads (temperature moves slowly; the alarm may wait this long).
INTERVAL = 30.0
_VCGENCMD_TIMEOUT = 5.0

_BITS = {
    "under_voltage": 0,
    "freq_capped": 1,
    "throttled": 2,
    "soft_temp_limit": 3,
}
_PRE_EOL = {1: "normal", 2: "warning", 3: "urgent"}


def _text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("ascii", "replace").strip("\x00\n ")
    except OSError:
        return None


def _hex(text: str) -> int | None:
    try:
        return int(text, 16)
    except ValueError:
        return None


def decode_throttled(value: int) -> dict[str, Any]:
    """``vcgencmd get_throttled``'s bit field as named flags (now and since boot)."""
    out: dict[str, Any] = {"raw": f"0x{value:x}"}
    for name, bit in _BITS.items():
        out[name] = bool(value >> bit & 1)
    for name, bit in _BITS.items():
        out[f"{name}_since_boot"] = bool(value >> (bit + 16) & 1)
    return out


def _life(code: int | None) -> str | None:
    if code is None or code == 0:
        return None  # 0x00: not defined
    if code == 0x0B:
        return "exceeded"
    if 1 <= code <= 10:
        return f"{(code - 1) * 10}-{code * 10}%"
    return None


def _storage(root: Path) -> dict[str, Any] | None:
    device = root / "sys/block/mmcblk0/device"
    kind = _text(device / "type")
    if kind is None:
        return None
    wear: dict[str, Any] | None = None
    life = _text(device / "life_time")
    eol = _text(device / "pre_eol_info")
    if life is not None or eol is not None:
        codes = [_hex(part) for part in (life or "").split()]
        codes += [None] * (2 - len(codes))
        eol_code = None if eol is None else _hex(eol)
        wear = {
            "life_used_a": _life(codes[0]),
            "life_used_b": _life(codes[1]),
            "pre_eol": _PRE_EOL.get(eol_code or 0),
        }
        if wear == {"life_used_a": None, "life_used_b": None, "pre_eol": None}:
            wear = None  # the files exist but say nothing
    return {"device": "mmcblk0", "type": kind, "wear": wear}


def _lcrit_alarm(root: Path) -> bool | None:
    """The ``rpi_volt`` hwmon's live under-voltage flag (None: no such sensor)."""
    base = root / "sys/class/hwmon"
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return None
    for entry in entries:
        if _text(entry / "name") == "rpi_volt":
            flag = _text(entry / "in0_lcrit_alarm")
            return None if flag is None else flag == "1"
    return None


def _vcgencmd(root: Path) -> dict[str, Any] | None:
    """``vcgencmd get_throttled`` decoded (None: no vcgencmd, or it failed)."""
    command = root / "usr/bin/vcgencmd"
    if not command.exists():
        return None
    try:
        done = subprocess.run(
            [str(command), "get_throttled"],
            capture_output=True,
            timeout=_VCGENCMD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = done.stdout.decode("ascii", "replace").strip()
    if done.returncode != 0 or not text.startswith("throttled="):
        return None  # e.g. no access to /dev/vcio
    value = _hex(text.partition("=")[2])
    return None if value is None else decode_throttled(value)


def _temperature(root: Path) -> float | None:
    text = _text(root / "sys/class/thermal/thermal_zone0/temp")
    if text is None:
        return None
    try:
        return round(int(text) / 1000, 1)
    except ValueError:
        return None


def read_health(root: Path = Path("/")) -> dict[str, Any]:
    """The ``health`` section now (blocking: reads files, may run ``vcgencmd``)."""
    model = _text(root / "proc/device-tree/model") or _text(
        root / "sys/firmware/devicetree/base/model"
    )
    pi = bool(model and model.startswith("Raspberry Pi"))
    throttling = _vcgencmd(root) if pi else None
    live = _lcrit_alarm(root) if pi else None
    under_voltage = live
    if under_voltage is None and throttling is not None:
        under_voltage = bool(throttling["under_voltage"])
    return {
        "pi": pi,
        "model": model or None,
        "cpu_temp_c": _temperature(root),
        "under_voltage": under_voltage,
        "throttling": throttling,
        "storage": _storage(root),
        "read_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


@dataclass
class HealthMonitor:
    """Reads :func:`read_health` every ``interval`` seconds off the event loop; its
    :meth:`section` is the state document's ``health``; raises/clears ``under_voltage``."""

    bus: EventSink = NO_EVENTS
    root: Path = Path("/")
    interval: float = INTERVAL
    reader: Callable[[Path], dict[str, Any]] = read_health
    _last: dict[str, Any] | None = None
    _alarm: bool = False

    def section(self) -> dict[str, Any]:
        """The latest reading (before the first one: everything unknown)."""
        if self._last is not None:
            return self._last
        return {
            "pi": False,
            "model": None,
            "cpu_temp_c": None,
            "under_voltage": None,
            "throttling": None,
            "storage": None,
            "read_at": None,
        }

    async def read_once(self) -> dict[str, Any]:
        """Read now (on a worker thread) and act on the under-voltage flag."""
        reading = await asyncio.to_thread(self.reader, self.root)
        self._last = reading
        low = reading.get("under_voltage") is True
        if low and not self._alarm:
            log.warning("under-voltage: the power supply is too weak (replace it)")
            self.bus.publish(
                AlarmRaised(
                    code=UNDER_VOLTAGE,
                    subject="",
                    message="under-voltage: the power supply is too weak, replace it",
                )
            )
        elif self._alarm and not low:
            log.info("under-voltage is over")
            self.bus.publish(AlarmCleared(code=UNDER_VOLTAGE, subject=""))
        self._alarm = low
        return reading

    async def run(self, ready: Callable[[], None]) -> None:
        """Read now, say ready, then read every ``interval`` seconds until cancelled."""
        await self.read_once()
        ready()
        while True:
            await asyncio.sleep(self.interval)
            await self.read_once()
