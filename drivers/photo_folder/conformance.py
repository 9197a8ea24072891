"""The conformance kit's view of the photo folder driver and its simulator
(``dermgate conformance photo-folder``).

One photo is one capture and one VL Photographic Image. Photos are 640×480 and the
driver's timings shortened (settle 0.3 s, polls every 0.2 s) so the battery stays
quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from gateway.driver_api import SimulatorAdapter

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"


class PhotoFolderAdapter(SimulatorAdapter):
    """A clinical camera whose photos land in a watched folder."""

    objects_per_capture: ClassVar[dict[str, int]] = {VL_PHOTOGRAPHIC: 1}
    paced_args: ClassVar[tuple[str, ...]] = ("--interval", "1.5")

    def drop_folder(self, workdir: Path) -> Path:
        """The folder the camera's photos are copied into."""
        return workdir / "photos"

    def prepare(self, workdir: Path) -> None:
        """The drop folder exists before the simulator and the gateway start."""
        self.drop_folder(workdir).mkdir(parents=True, exist_ok=True)

    def device_options(self, workdir: Path) -> dict[str, Any]:
        """The watched folder, with short settle and poll times."""
        return {
            "folder": str(self.drop_folder(workdir)),
            "settle_seconds": 0.3,
            "poll_interval": 0.2,
        }

    def simulator_args(self, workdir: Path, *, captures: int) -> list[str]:
        """Small photos, 0.3 s apart."""
        return [
            *("--folder", str(self.drop_folder(workdir)), "--photos", str(captures)),
            *("--interval", "0.3", "--width", "640", "--height", "480"),
        ]
