"""Disk space: the free-space reserve that keeps the spool safe on a full disk.

Below the reserve, new captures are refused at the device (NAK DISK_FULL) and an
alarm is raised; nothing already acknowledged is ever evicted to make room. When
space comes back (a purge ran, the PACS confirmed and copies were deleted, someone
freed the disk), intake resumes by itself at the next offer.

The alarm says what the disk *is*, never what a device claims: a capture whose
announced size does not fit above the reserve, on a disk that is not below it, is
refused for itself alone ("not enough space for this capture", NAK DISK_FULL so
the device keeps it and offers it again once purging made room) and raises no
alarm. Otherwise a device announcing an absurd length could raise the global
DISK FULL alarm, and make it flap, while the disk has plenty of room. Sizes over
``[spool] max_capture_mb`` never get here: intake refuses them as TOO_LARGE.

The ledger keeps part of the reserve as a preallocated file (see
:mod:`gateway.spool.reserve`), counted here as free. The space watch (stage
``space``) follows the disk every few seconds, whether or not captures are
offered: the alarm is also up while the ledger cannot write or has used its reserve,
and clears once the reserve is made again (the disk has room for it twice over).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.core.alarms import DISK_FULL
from gateway.core.capture import CaptureRefused, RefusalReason
from gateway.core.events import NO_EVENTS, AlarmCleared, AlarmRaised, EventSink

if TYPE_CHECKING:
    from gateway.spool.ledger import Ledger

log = logging.getLogger(__name__)

#: Seconds between two looks at the disk by the space watch.
WATCH_INTERVAL = 2.0

MIB = 1024 * 1024
#: ``[spool] max_capture_mb``'s default, in bytes: the largest capture intake takes.


def too_large(limit: int, size: int | None = None) -> CaptureRefused:
    """The refusal of a capture over ``limit`` bytes (``size`` when it was announced)."""
    what = f"{size} bytes announced" if size is not None else "more bytes sent"
    return CaptureRefused(
        RefusalReason.TOO_LARGE,
        f"capture too large: {what}, the limit is {limit // MIB} MiB ([spool] max_capture_mb)",
    )


class SpaceGuard:
    """Decides whether a new capture of a given size may be accepted."""

    def __init__(
        self,
        folder: Path,
        reserve_bytes: int,
        ledger: Ledger | None = None,
        bus: EventSink = NO_EVENTS,
    ) -> None:
        self.folder = folder
        self._bus = bus
        self.reserve_bytes = reserve_bytes
        self.ledger = ledger
        self.alarm = False

    def free_bytes(self) -> int:
        """Free bytes on the spool's filesystem (the ledger's reserve counted as free)."""
        free = shutil.disk_usage(self.folder).free
        reserve = self.ledger.reserve if self.ledger is not None else None
        return free + (reserve.held_bytes() if reserve is not None else 0)

    async def watch(self, ready: Callable[[], None]) -> None:
        """The ``space`` stage: follow the disk (and remake the ledger's reserve)."""
        ready()
        while True:
            await asyncio.to_thread(self.tend)
            await asyncio.sleep(WATCH_INTERVAL)

    def tend(self) -> None:
        """One look at the disk (blocking): remake the reserve if room, follow the alarm."""
        reserve = self.ledger.reserve if self.ledger is not None else None
        if (
            reserve is not None
            and not reserve.held
            and shutil.disk_usage(self.folder).free >= 2 * reserve.size
            and reserve.make()
        ):
            log.info("the ledger's reserve is in place again")
        self._follow(self.free_bytes())

    def check(self, incoming: int | None) -> None:
        """Raise :class:`CaptureRefused` (DISK_FULL) unless ``incoming`` bytes fit.

        The ``disk_full`` alarm follows the disk alone (free space below the
        reserve). A capture needs room twice (the raw file and its DICOM file); an
        unknown size is counted as zero (the write path still refuses on ENOSPC).
        """
        free = self.free_bytes()
        self._follow(free)
        if self.alarm:
            raise CaptureRefused(RefusalReason.DISK_FULL, "spool below its free-space reserve")
        need = 2 * (incoming or 0)
        if free - need < self.reserve_bytes:
            raise CaptureRefused(
                RefusalReason.DISK_FULL,
                f"not enough space for this capture: it needs {-(-need // MIB)} MiB, "
                f"{(free - self.reserve_bytes) // MIB} MiB are free above the reserve",
            )

    def _follow(self, free: int) -> None:
        """Raise or clear the alarm when the disk crosses the reserve (logged once)."""
        below = free < self.reserve_bytes or (self.ledger is not None and self.ledger.full)
        if below == self.alarm:
            return
        if below:
            log.error(
                "DISK FULL: %d MiB free, reserve is %d MiB; refusing new captures "
                "(devices keep them); nothing in the spool is deleted to make room",
                free // MIB,
                self.reserve_bytes // MIB,
            )
            self._bus.publish(
                AlarmRaised(
                    code=DISK_FULL,
                    subject="",
                    message="disk below its free-space reserve: new captures are refused",
                )
            )
        else:
            log.warning("disk space is back (%d MiB free): accepting captures again", free // MIB)
            self._bus.publish(AlarmCleared(code=DISK_FULL, subject=""))
        self.alarm = below
