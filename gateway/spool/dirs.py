"""The spool's folders: staging, raw and DICOM, under ``<state_dir>/spool``."""

from __future__ import annotations

from pathlib import Path

from gateway.core.files import fsync_dir

__all__ = ["SpoolDirs"]


class SpoolDirs:
    """The spool's folders under ``<state_dir>/spool``.

    ``staging``: bytes still arriving from a device (never acknowledged);
    ``raw``: durable device captures, named by SOP Instance UID;
    ``dicom``: the Part 10 files built from them.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging = root / "staging"
        self.raw = root / "raw"
        self.dicom = root / "dicom"

    def create(self) -> None:
        """Create the folders (and make their creation durable)."""
        for folder in (self.root, self.staging, self.raw, self.dicom):
            folder.mkdir(parents=True, exist_ok=True)
        fsync_dir(self.root)
        fsync_dir(self.root.parent)
