"""A Raspberry Pi's health files in a folder: the tree :func:`gateway.status.pi_health.read_health`
reads on a box, built in tmp (the same files, paths and formats as on a Pi 4 with
Bookworm)."""

from __future__ import annotations

import stat
from pathlib import Path

PI4 = "Raspberry Pi 4 Model B Rev 1.4"


def put(root: Path, relative: str, text: str | bytes) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def pi_tree(root: Path, *, throttled: str | None = "0x0", lcrit: str | None = "0") -> Path:
    """What a Pi 4 on Bookworm shows (device tree model ends with a NUL)."""
    put(root, "proc/device-tree/model", PI4.encode() + b"\x00")
    put(root, "sys/class/thermal/thermal_zone0/temp", "48312\n")
    put(root, "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    put(root, "sys/class/hwmon/hwmon0/name", "cpu_thermal\n")
    if lcrit is not None:
        put(root, "sys/class/hwmon/hwmon1/name", "rpi_volt\n")
        put(root, "sys/class/hwmon/hwmon1/in0_lcrit_alarm", lcrit + "\n")
    put(root, "sys/block/mmcblk0/device/type", "SD\n")
    put(root, "sys/block/mmcblk0/device/cid", "035344534331364780a1b2c3d4013e00\n")
    if throttled is not None:
        # vcgencmd's own output format; the real tool talks to /dev/vcio.
        put(root, "usr/bin/vcgencmd", f"#!/bin/sh\necho throttled={throttled}\n")
        tool = root / "usr/bin/vcgencmd"
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return root
