"""Start-up reconciliation: make the spool's files and the ledger agree again.

Runs once, before any stage starts, after a crash or power cut. Each rule keeps
every acknowledged capture; nothing a device was told "saved" is ever deleted.

======================================  =============================================
What is found                           What is done, and why it is safe
======================================  =============================================
file in ``staging/``                    deleted: never acknowledged (ACK comes only
                                        after the rename into ``raw/`` and the ledger
                                        commit), so the device still holds it
half-written ``.*.tmp`` in ``dicom/``   deleted: the DICOM file is rebuilt from the
                                        raw capture with the same UIDs
raw or DICOM file with no ledger row    moved to ``orphans/``: the row commit never
                                        happened, so it was not acknowledged; kept for
                                        inspection rather than deleted
WRAPPED row whose DICOM file is gone    back to CAPTURED: wrapped again from the raw
                                        file, same UIDs
HELD/CAPTURED/WRAPPED/SENT row whose    QUARANTINED "raw capture file missing" when
raw and DICOM files are both gone       nothing is left to send (shown, not hidden)
======================================  =============================================
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass, field

from gateway.core.files import fsync_dir
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import transaction, utc_now_text
from gateway.spool.states import CaptureState

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    """What reconciliation changed (all zero after a clean stop)."""

    staging_removed: int = 0
    temp_removed: int = 0
    orphans: list[str] = field(default_factory=list)
    rewrap: int = 0
    quarantined: int = 0

    def changed(self) -> bool:
        """True if anything had to be repaired."""
        return bool(
            self.staging_removed
            or self.temp_removed
            or self.orphans
            or self.rewrap
            or self.quarantined
        )


def reconcile(conn: sqlite3.Connection, dirs: SpoolDirs) -> ReconcileReport:
    """Apply the rules above (blocking; on the ledger thread, before anything runs)."""
    report = ReconcileReport()
    for path in dirs.staging.iterdir():
        path.unlink()
        report.staging_removed += 1
    for path in dirs.dicom.glob(".*.tmp"):
        path.unlink()
        report.temp_removed += 1
    if report.staging_removed:
        fsync_dir(dirs.staging)
    if report.temp_removed:
        fsync_dir(dirs.dicom)

    rows = conn.execute(
        "SELECT id, state, raw_name, dicom_name FROM captures WHERE state IN (?, ?, ?, ?, ?)",
        (
            CaptureState.HELD,
            CaptureState.CAPTURED,
            CaptureState.WRAPPED,
            CaptureState.SENT,
            CaptureState.QUARANTINED,
        ),
    ).fetchall()
    known_raw = {str(r) for (r,) in conn.execute("SELECT raw_name FROM captures")}
    known_dicom = {
        str(r)
        for (r,) in conn.execute("SELECT dicom_name FROM captures WHERE dicom_name IS NOT NULL")
    }
    now = utc_now_text()
    with transaction(conn):
        for spool_id, state, raw_name, dicom_name in rows:
            # An empty raw_name: the device's bytes live only inside the DICOM file.
            raw_ok = bool(raw_name) and (dirs.raw / raw_name).exists()
            dicom_ok = dicom_name is not None and (dirs.dicom / dicom_name).exists()
            if state == CaptureState.QUARANTINED:
                continue
            if state == CaptureState.WRAPPED and not dicom_ok and raw_ok:
                conn.execute(
                    "UPDATE captures SET state = ?, dicom_name = NULL, updated_at = ? WHERE id = ?",
                    (CaptureState.CAPTURED, now, spool_id),
                )
                report.rewrap += 1
            elif not raw_ok and not dicom_ok and state != CaptureState.SENT:
                conn.execute(
                    "UPDATE captures SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
                    (CaptureState.QUARANTINED, "raw capture file missing", now, spool_id),
                )
                report.quarantined += 1

    orphans = dirs.root / "orphans"
    for folder, known in ((dirs.raw, known_raw), (dirs.dicom, known_dicom)):
        for path in folder.iterdir():
            if path.name in known or path.name.startswith("."):
                continue
            orphans.mkdir(exist_ok=True)
            os.replace(path, orphans / path.name)
            report.orphans.append(path.name)
        if report.orphans:
            fsync_dir(folder)
    if report.orphans:
        fsync_dir(orphans)
    if report.changed():
        log.warning(
            "spool reconciled after an unclean stop: %d staging file(s) removed, %d temporary "
            "file(s) removed, %d unrecorded file(s) moved to orphans/, %d capture(s) to wrap "
            "again, %d quarantined (files missing)",
            report.staging_removed,
            report.temp_removed,
            len(report.orphans),
            report.rewrap,
            report.quarantined,
        )
    return report
