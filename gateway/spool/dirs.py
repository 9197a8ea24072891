"""The spool's folders: staging, raw and DICOM, under ``<state_dir>/spool``."""

from __future__ import annotations

from pathlib import Path

from gateway.core.files import fsync_dir

__all__ = ["SpoolDirs"]


class SpoolDirs:
    """The spool's folders under ``<state_dir>/spool``.

    ``staging``: bytes still arriving from a device (never acknowledged);
    ``raw``: durable device captures, named by SOP Instance UID;
    ``dicom``: the Part 10 files built from them;
    ``derived``: derived objects of a compatible class (``fallback = "compatible"``),
    one per capture, named as its DICOM file; deleted with the capture.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging = root / "staging"
        self.raw = root / "raw"
        self.dicom = root / "dicom"
        self.derived = root / "derived"

    def create(self) -> None:
        """Create the folders (and make their creation durable)."""
        for folder in (self.root, self.staging, self.raw, self.dicom, self.derived):
            folder.mkdir(parents=True, exist_ok=True)
        fsync_dir(self.root)
        fsync_dir(self.root.parent)
