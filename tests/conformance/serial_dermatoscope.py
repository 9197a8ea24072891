"""Conformance adapter for the serial dermatoscope (DS-100 on a pty).

The simulator takes the kit's fault flags: ``--unplug-mid-transfer`` (the pty closes
half-way through the first offer), ``--garbage`` (random bytes and stray frame
delimiters inside the first offer) and ``--reoffer`` (capture 1 offered again after
everything was ACKed). Its report names each acknowledged capture as an object with
``capture_id`` and ``sha256``, which the kit reads too. Images are 640×480 (~170 kB).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from tests.conformance.kit import DeviceAdapter, lexists

DERMOSCOPIC_PHOTOGRAPHY = "1.2.840.10008.5.1.4.1.1.77.1.7"


class SerialDermatoscopeAdapter(DeviceAdapter):
    """A DS-100 dermatoscope: one Dermoscopic Photography object per capture."""

    driver: ClassVar[str] = "serial-dermatoscope"
    objects_per_capture: ClassVar[dict[str, int]] = {DERMOSCOPIC_PHOTOGRAPHY: 1}
    #: Intake's word for a partial capture thrown away (never acknowledged).
    unplug_evidence: ClassVar[str | None] = " discarded: "

    @staticmethod
    def link(workdir: Path) -> Path:
        """Where the simulator links its pty (the device's port)."""
        return workdir / "ttyDERM0"

    def device_toml(self, workdir: Path) -> str:
        return f"""
[[devices]]
driver = "serial-dermatoscope"
name = "dev"
port = "{self.link(workdir)}"
stall_timeout = 5
reconnect_max = 1
"""

    paced_args: ClassVar[tuple[str, ...]] = ("--interval", "1.5")

    def simulator_args(self, workdir: Path, *, captures: int) -> list[str]:
        return [
            "--link",
            str(self.link(workdir)),
            "--captures",
            str(captures),
            "--interval",
            "0.2",
            "--width",
            "640",
            "--height",
            "480",
            "--ack-timeout",
            "5",
            "--retry-delay",
            "0.3",
        ]

    def device_present(self, workdir: Path) -> bool:
        return lexists(self.link(workdir))
