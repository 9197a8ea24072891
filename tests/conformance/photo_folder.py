"""Conformance adapter for the clinical photo folder (a camera card copied into a folder).

One photo is one capture and one VL Photographic Image. Photos are 640×480 and the
driver's timings shortened (settle 0.3 s, polls every 0.2 s) so the battery stays
quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from tests.conformance.kit import DeviceAdapter

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"


class PhotoFolderAdapter(DeviceAdapter):
    """A clinical camera whose photos land in a watched folder."""

    driver: ClassVar[str] = "photo-folder"
    objects_per_capture: ClassVar[dict[str, int]] = {VL_PHOTOGRAPHIC: 1}

    paced_args: ClassVar[tuple[str, ...]] = ("--interval", "1.5")

    def drop_folder(self, workdir: Path) -> Path:
        return workdir / "photos"

    def prepare(self, workdir: Path) -> None:
        self.drop_folder(workdir).mkdir(parents=True, exist_ok=True)

    def device_toml(self, workdir: Path) -> str:
        return f"""
[[devices]]
driver = "photo-folder"
name = "dev"
folder = "{self.drop_folder(workdir)}"
settle_seconds = 0.3
poll_interval = 0.2
"""

    def simulator_args(self, workdir: Path, *, captures: int) -> list[str]:
        return [
            "--folder",
            str(self.drop_folder(workdir)),
            "--photos",
            str(captures),
            "--interval",
            "0.3",
            "--width",
            "640",
            "--height",
            "480",
        ]
