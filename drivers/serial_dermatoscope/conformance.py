"""The conformance kit's view of the serial dermatoscope driver and its simulator
(``dermgate conformance serial-dermatoscope``).

The simulator (a DS-100 on a pty) takes the kit's fault flags: ``--unplug-mid-transfer``
(the pty closes half-way through the first offer), ``--garbage`` (random bytes and
stray frame delimiters inside the first offer) and ``--reoffer`` (capture 1 offered
again after everything was ACKed). Its report names each acknowledged capture as an
object with ``capture_id`` and ``sha256``, which the kit reads too. Images are
640×480 (~170 kB).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from gateway.driver_api import SimulatorAdapter

DERMOSCOPIC_PHOTOGRAPHY = "1.2.840.10008.5.1.4.1.1.77.1.7"


class SerialDermatoscopeAdapter(SimulatorAdapter):
    """A DS-100 dermatoscope: one Dermoscopic Photography object per capture."""

    objects_per_capture: ClassVar[dict[str, int]] = {DERMOSCOPIC_PHOTOGRAPHY: 1}
    #: Intake's word for a partial capture thrown away (never acknowledged).
    unplug_evidence: ClassVar[str | None] = " discarded: "
    paced_args: ClassVar[tuple[str, ...]] = ("--interval", "1.5")

    @staticmethod
    def link(workdir: Path) -> Path:
        """Where the simulator links its pty (the device's port)."""
        return workdir / "ttyDERM0"

    def device_options(self, workdir: Path) -> dict[str, Any]:
        """The pty link as the port, with a short stall timeout and reconnect wait."""
        return {"port": str(self.link(workdir)), "stall_timeout": 5, "reconnect_max": 1}

    def simulator_args(self, workdir: Path, *, captures: int) -> list[str]:
        """Small images, 0.2 s apart, quick retries of an unacknowledged offer."""
        return [
            *("--link", str(self.link(workdir)), "--captures", str(captures)),
            *("--interval", "0.2", "--width", "640", "--height", "480"),
            *("--ack-timeout", "5", "--retry-delay", "0.3"),
        ]

    def device_present(self, workdir: Path) -> bool:
        """The pty link exists (even while its target is gone)."""
        return os.path.lexists(self.link(workdir))
