"""Disk space: the free-space reserve that keeps the spool safe on a full disk.

Below the reserve, new captures are refused at the device (NAK DISK_FULL) and an
alarm is raised; nothing already acknowledged is ever evicted to make room. When
space comes back (a purge ran, the PACS confirmed and copies were deleted, someone
freed the disk), intake resumes by itself at the next offer.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from gateway.status import events

log = logging.getLogger(__name__)

MIB = 1024 * 1024


class SpaceGuard:
    """Decides whether a new capture of a given size may be accepted."""

    def __init__(self, folder: Path, reserve_bytes: int) -> None:
        self.folder = folder
        self.reserve_bytes = reserve_bytes
        self.alarm = False

    def free_bytes(self) -> int:
        """Free bytes on the spool's filesystem."""
        return shutil.disk_usage(self.folder).free

    def admits(self, incoming: int | None) -> bool:
        """True if a capture of ``incoming`` bytes fits above the reserve.

        The capture needs room twice (the raw file and its DICOM file); an unknown
        size is counted as zero (the write path still refuses on ENOSPC).
        """
        need = 2 * (incoming or 0)
        free = self.free_bytes()
        ok = free - need >= self.reserve_bytes
        if ok == self.alarm:  # state changes: log once each way
            if ok:
                log.warning(
                    "disk space is back (%d MiB free): accepting captures again", free // MIB
                )
                events.emit("alarm_cleared", code="disk_full", subject="")
            else:
                log.error(
                    "DISK FULL: %d MiB free, reserve is %d MiB; refusing new captures "
                    "(devices keep them); nothing in the spool is deleted to make room",
                    free // MIB,
                    self.reserve_bytes // MIB,
                )
                events.emit(
                    "alarm_raised",
                    code="disk_full",
                    subject="",
                    message="disk below its free-space reserve: new captures are refused",
                )
            self.alarm = not ok
        return ok
