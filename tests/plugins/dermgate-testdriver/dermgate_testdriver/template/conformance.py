"""How ``dermgate conformance test-template`` drives the TC-1 simulator.

The kit needs four answers from a driver, and this adapter gives them: the
``[[devices]]`` options that point the driver at a simulated device living under
``workdir``; the simulator's arguments; the DICOM objects one saved photo becomes;
and when the simulated device is there (its socket exists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from gateway.driver_api import SimulatorAdapter

#: A camera's JPEG becomes one VL Photographic Image.
VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"


class TemplateAdapter(SimulatorAdapter):
    """The TC-1 camera: one VL Photographic Image per photo."""

    objects_per_capture: ClassVar[dict[str, int]] = {VL_PHOTOGRAPHIC: 1}
    #: Intake's word for a partial capture thrown away: the unplug check looks for it.
    unplug_evidence: ClassVar[str | None] = " discarded: "
    #: Photos 1.5 s apart for the restart check (the gateway is killed mid-stream).
    paced_args: ClassVar[tuple[str, ...]] = ("--interval", "1.5")

    @staticmethod
    def socket(workdir: Path) -> Path:
        """Where the simulated camera listens."""
        return workdir / "tc1.sock"

    def device_options(self, workdir: Path) -> dict[str, Any]:
        """The camera's socket; short waits keep the checks quick."""
        return {"socket": str(self.socket(workdir)), "stall_timeout": 5, "reconnect_max": 1}

    def simulator_args(self, workdir: Path, *, captures: int) -> list[str]:
        """Photos 0.2 s apart; an unanswered offer is made again after 5 s."""
        return [
            *("--socket", str(self.socket(workdir)), "--captures", str(captures)),
            *("--interval", "0.2", "--ack-timeout", "5", "--retry-delay", "0.3"),
        ]

    def device_present(self, workdir: Path) -> bool:
        """The simulated camera is listening."""
        return self.socket(workdir).exists()
