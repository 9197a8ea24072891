"""Conformance adapter for the USB confocal microscope (RCM-1 over the emulated pyusb backend).

The simulator serves the device on a Unix socket; the driver reaches it through
``usb_backend = "emulated:SOCKET"``, the same ``usb.core.find`` path as with libusb.
Stacks are small (5 frames of 64×64, 8-bit) and the bulk stream is capped at
100 kB/s, so one stack takes ~0.2 s on the wire: an unplug or a gateway kill lands
inside a transfer, not between them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from tests.conformance.kit import DeviceAdapter, SimulatorReport

CONFOCAL_MICROSCOPY = "1.2.840.10008.5.1.4.1.1.77.1.8"


class UsbConfocalAdapter(DeviceAdapter):
    """An RCM-1 recording z-stacks: one Confocal Microscopy object per stack."""

    driver: ClassVar[str] = "usb-confocal"
    objects_per_capture: ClassVar[dict[str, int]] = {CONFOCAL_MICROSCOPY: 1}
    #: Intake's word for a partial capture thrown away (never acknowledged).
    unplug_evidence: ClassVar[str | None] = " discarded: "

    @staticmethod
    def socket(workdir: Path) -> Path:
        """The Unix socket the emulated USB backend talks to."""
        return workdir / "rcm1.sock"

    def device_toml(self, workdir: Path) -> str:
        return f"""
[[devices]]
driver = "usb-confocal"
name = "dev"
usb_backend = "emulated:{self.socket(workdir)}"
stall_timeout = 5
reconnect_max = 1
"""

    def simulator_args(self, workdir: Path, *, captures: int) -> list[str]:
        return [
            "--socket",
            str(self.socket(workdir)),
            "--stacks",
            str(captures),
            "--frames",
            "5",
            "--size",
            "64x64",
            "--rate",
            "0.1",
            "--ack-timeout",
            "5",
            "--retry-delay",
            "0.3",
        ]

    def device_present(self, workdir: Path) -> bool:
        return self.socket(workdir).exists()

    def read_report(self, data: Any) -> SimulatorReport:
        """The kit report, with each stack's SHA-256 from the simulator's ``stacks``."""
        report = super().read_report(data)
        stacks = data.get("stacks", {}) if isinstance(data, dict) else {}
        digests = {
            str(stack_id): str(info["sha256"])
            for stack_id, info in stacks.items()
            if isinstance(info, dict) and isinstance(info.get("sha256"), str)
        }
        return dataclasses.replace(report, sha256={**digests, **report.sha256})
