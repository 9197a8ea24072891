"""Purge: deleting local copies that the PACS has confirmed, and only those.

A capture's files (raw device file and DICOM file) are deleted only when it is
COMMITTED: the PACS confirmed it by Storage Commitment, or, for a destination that
cannot commit, it has been SENT for the configured retention. Then, oldest first:

* when the spool's filesystem is fuller than ``purge_high_watermark`` percent,
  until it is below ``purge_low_watermark``;
* and whatever the space, once a copy is older than ``keep_days``: every confirmed
  copy by its own age (arrival time), in whatever order they arrived.

Space pressure goes by spool id (the order of arrival, which no clock can upset).
An arrival time in the future (the box's clock was wrong when the capture came) is
set to the moment purge sees it: the copy then ages like any other and goes
``keep_days`` later, instead of holding its patient data for as long as the clock
was ahead.

Purging runs on its own schedule and is never triggered by a new capture: a full
disk refuses new captures instead (see :mod:`gateway.spool.space`). Files are
deleted before the row says PURGED, so a crash in between leaves a COMMITTED row
whose files are partly gone, which the next purge finishes. A PURGED row no longer
holds the patient fields a device supplied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.core.config import SpoolSettings
from gateway.core.files import fsync_dir
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger, transaction, utc_now_text
from gateway.spool.states import CaptureState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PurgeCandidate:
    """A confirmed capture whose local copies may go."""

    id: int
    raw_name: str
    dicom_name: str | None
    received_at: str


def candidates(conn: sqlite3.Connection, limit: int) -> list[PurgeCandidate]:
    """COMMITTED captures, oldest first (spool order)."""
    rows = conn.execute(
        "SELECT id, raw_name, dicom_name, received_at FROM captures WHERE state = ? "
        "ORDER BY id LIMIT ?",
        (CaptureState.COMMITTED, limit),
    ).fetchall()
    return [PurgeCandidate(r[0], r[1], r[2], r[3]) for r in rows]


def old_candidates(conn: sqlite3.Connection, cutoff: str, limit: int) -> list[PurgeCandidate]:
    """COMMITTED captures that arrived before ``cutoff``, each by its own age."""
    rows = conn.execute(
        "SELECT id, raw_name, dicom_name, received_at FROM captures WHERE state = ? "
        "AND received_at < ? ORDER BY id LIMIT ?",
        (CaptureState.COMMITTED, cutoff, limit),
    ).fetchall()
    return [PurgeCandidate(r[0], r[1], r[2], r[3]) for r in rows]


def clamp_future_arrivals(conn: sqlite3.Connection, now: str) -> int:
    """Confirmed captures stamped after ``now`` (a clock that was ahead) arrive now."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE captures SET received_at = ? WHERE state = ? AND received_at > ?",
            (now, CaptureState.COMMITTED, now),
        )
    return cur.rowcount


def mark_purged(conn: sqlite3.Connection, spool_id: int) -> None:
    """COMMITTED → PURGED (the files are already deleted).

    The patient fields a device supplied, and the session context the capture was
    bound to, go with the files: the row keeps only its UIDs, device, states and
    times, which is what a technician needs afterwards.
    """
    with transaction(conn):
        conn.execute(
            "UPDATE captures SET state = ?, patient_json = NULL, context_json = NULL, "
            "updated_at = ? "
            "WHERE id = ? AND state = ?",
            (CaptureState.PURGED, utc_now_text(), spool_id, CaptureState.COMMITTED),
        )


def forget_purged_patients(conn: sqlite3.Connection) -> int:
    """Clear the patient fields of rows purged before purging did so itself."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE captures SET patient_json = NULL, context_json = NULL WHERE state = ? "
            "AND (patient_json IS NOT NULL OR context_json IS NOT NULL)",
            (CaptureState.PURGED,),
        )
    return cur.rowcount


def used_percent(dirs: SpoolDirs) -> float:
    """How full the spool's filesystem is."""
    usage = shutil.disk_usage(dirs.root)
    return 100.0 * (usage.total - usage.free) / usage.total


class Purger:
    """Deletes confirmed local copies by watermark and age."""

    def __init__(self, ledger: Ledger, dirs: SpoolDirs, settings: SpoolSettings) -> None:
        self._ledger = ledger
        self._dirs = dirs
        self._settings = settings

    async def run(self, ready: Callable[[], None]) -> None:
        """Purge periodically until cancelled."""
        await self._ledger.call(forget_purged_patients)
        ready()
        while True:
            await self.purge_once(datetime.now(UTC))
            await asyncio.sleep(self._settings.purge_interval)

    async def _purge(self, candidate: PurgeCandidate) -> None:
        await asyncio.to_thread(self._delete_files, candidate)
        await self._ledger.call(mark_purged, candidate.id)

    def _delete_files(self, candidate: PurgeCandidate) -> None:
        if candidate.raw_name:
            with contextlib.suppress(FileNotFoundError):
                (self._dirs.raw / candidate.raw_name).unlink()
        if candidate.dicom_name:
            with contextlib.suppress(FileNotFoundError):
                (self._dirs.dicom / candidate.dicom_name).unlink()
            with contextlib.suppress(FileNotFoundError):
                (self._dirs.derived / candidate.dicom_name).unlink()
        fsync_dir(self._dirs.raw)
        fsync_dir(self._dirs.dicom)
        if self._dirs.derived.is_dir():
            fsync_dir(self._dirs.derived)

    async def purge_once(self, now: datetime) -> int:
        """One pass; returns how many captures were purged."""
        s = self._settings
        now_text = now.astimezone(UTC).isoformat(timespec="milliseconds")
        clamped = await self._ledger.call(clamp_future_arrivals, now_text)
        if clamped:
            log.warning(
                "%d confirmed capture(s) were dated in the future (a clock was wrong): "
                "their age counts from now",
                clamped,
            )
        cutoff = (now - timedelta(days=s.keep_days)).astimezone(UTC).isoformat()
        purged = 0
        for candidate in await self._ledger.call(old_candidates, cutoff, 10_000):
            await self._purge(candidate)
            purged += 1
        used = await asyncio.to_thread(used_percent, self._dirs)
        if used > s.purge_high_watermark:
            for candidate in await self._ledger.call(candidates, 10_000):
                if used <= s.purge_low_watermark:
                    break  # oldest first (spool order): down to the low watermark
                await self._purge(candidate)
                purged += 1
                used = await asyncio.to_thread(used_percent, self._dirs)
        if purged:
            log.info(
                "purged the local copies of %d confirmed capture(s); spool filesystem %.0f%% used",
                purged,
                await asyncio.to_thread(used_percent, self._dirs),
            )
        return purged
