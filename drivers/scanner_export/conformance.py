"""The conformance kit's view of the 3D scanner export driver and its simulator
(``dermgate conformance scanner-export``).

Each export (a small textured body: OBJ + MTL + two JPEG textures + manifest) is
one capture on the device's side and four DICOM objects in the PACS: Encapsulated
OBJ, Encapsulated MTL and two VL Photographic textures. The driver's timings are
shortened (settle 0.5 s, scans every 0.2 s) so the battery stays quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from gateway.driver_api import SimulatorAdapter

ENCAPSULATED_OBJ = "1.2.840.10008.5.1.4.1.1.104.4"
ENCAPSULATED_MTL = "1.2.840.10008.5.1.4.1.1.104.5"
VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"


class ScannerExportAdapter(SimulatorAdapter):
    """A TB-3D scanner workstation writing textured exports into a watched folder."""

    objects_per_capture: ClassVar[dict[str, int]] = {
        ENCAPSULATED_OBJ: 1,
        ENCAPSULATED_MTL: 1,
        VL_PHOTOGRAPHIC: 2,
    }
    captures: ClassVar[int] = 2
    not_objects: ClassVar[frozenset[str]] = frozenset({"manifest.json"})
    paced_args: ClassVar[tuple[str, ...]] = ("--interval", "1.5")

    def drop_folder(self, workdir: Path) -> Path:
        """The folder the workstation exports into."""
        return workdir / "exports"

    def prepare(self, workdir: Path) -> None:
        """The export folder exists before the simulator and the gateway start."""
        self.drop_folder(workdir).mkdir(parents=True, exist_ok=True)

    def device_options(self, workdir: Path) -> dict[str, Any]:
        """The watched folder, with short settle, poll and retry times."""
        return {
            "folder": str(self.drop_folder(workdir)),
            "settle_seconds": 0.5,
            "poll_interval": 0.2,
            "retry_interval": 1.0,
        }

    def simulator_args(self, workdir: Path, *, captures: int) -> list[str]:
        """Half-megabyte meshes, 0.3 s apart."""
        return [
            *("--folder", str(self.drop_folder(workdir)), "--scans", str(captures)),
            *("--interval", "0.3", "--mesh-mb", "0.5"),
        ]
