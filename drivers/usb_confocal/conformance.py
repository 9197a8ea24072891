"""The conformance kit's view of the USB confocal driver and its simulator
(``dermgate conformance usb-confocal``).

The simulator serves the RCM-1 on a Unix socket; the driver reaches it through
``usb_backend = "emulated:SOCKET"``, the same ``usb.core.find`` path as with libusb.
Stacks are small (5 frames of 64×64, 8-bit) and the bulk stream is capped at
100 kB/s, so one stack takes ~0.2 s on the wire: an unplug or a gateway kill lands
inside a transfer, not between them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from gateway.driver_api import SimulatorAdapter, SimulatorReport

CONFOCAL_MICROSCOPY = "1.2.840.10008.5.1.4.1.1.77.1.8"


class UsbConfocalAdapter(SimulatorAdapter):
    """An RCM-1 recording z-stacks: one Confocal Microscopy object per stack."""

    objects_per_capture: ClassVar[dict[str, int]] = {CONFOCAL_MICROSCOPY: 1}
    #: Intake's word for a partial capture thrown away (never acknowledged).
    unplug_evidence: ClassVar[str | None] = " discarded: "

    @staticmethod
    def socket(workdir: Path) -> Path:
        """The Unix socket the emulated USB backend talks to."""
        return workdir / "rcm1.sock"

    def device_options(self, workdir: Path) -> dict[str, Any]:
        """The emulated backend on the simulator's socket, with short timeouts."""
        return {
            "usb_backend": f"emulated:{self.socket(workdir)}",
            "stall_timeout": 5,
            "reconnect_max": 1,
        }

    def simulator_args(self, workdir: Path, *, captures: int) -> list[str]:
        """Small stacks on a slow bulk stream, quick retries of an unacknowledged one."""
        return [
            *("--socket", str(self.socket(workdir)), "--stacks", str(captures)),
            *("--frames", "5", "--size", "64x64", "--rate", "0.1"),
            *("--ack-timeout", "5", "--retry-delay", "0.3"),
        ]

    def device_present(self, workdir: Path) -> bool:
        """The simulator's socket exists."""
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
