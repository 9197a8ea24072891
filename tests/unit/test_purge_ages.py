"""Age purging takes every confirmed copy by its own age, whatever a wrong clock did.

A real ledger, real spooled files and the real purge stage: one capture stamped two
years ahead (the box's clock was wrong once) sits first in spool order, before
several confirmed copies older than ``keep_days``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.core.capture import CaptureOffer, InstanceUIDs, PatientContext
from gateway.core.config import SpoolSettings
from gateway.core.uids import new_uid
from gateway.spool import commitments as cdb
from gateway.spool import ledger as db
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from gateway.spool.purge import Purger
from tests.support.dicom_files import DEVICE
from tests.support.state import ledger_rows

PATIENT = PatientContext(patient_name="Doe^Jane", patient_id="P-0042")


def _committed(path: Path, dirs: SpoolDirs, received: list[datetime]) -> None:
    """Confirmed captures (with their files and a device-supplied patient), in order."""
    conn = db.open_ledger(path)
    for n, stamp in enumerate(received):
        uids = InstanceUIDs(new_uid(), new_uid(), new_uid())
        raw, dicom = f"{uids.sop_instance}.raw", f"{uids.sop_instance}.dcm"
        (dirs.raw / raw).write_bytes(b"raw")
        (dirs.dicom / dicom).write_bytes(b"DICM")
        spool_id = db.insert_capture(
            conn,
            driver="d",
            device=DEVICE,
            offer=CaptureOffer(f"{n}", patient=PATIENT),
            uids=uids,
            raw_name=raw,
            raw_size=3,
            raw_sha256="0" * 64,
        )
        db.mark_wrapped(
            conn,
            spool_id,
            dicom_name=dicom,
            sop_class_uid="1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.4.50",
            destinations=["pacs"],
            now=0,
        )
        db.record_sent(conn, spool_id, "pacs", now=1.0)
        conn.execute(
            "UPDATE captures SET received_at = ? WHERE id = ?",
            (stamp.isoformat(timespec="milliseconds"), spool_id),
        )
    cdb.confirm_by_retention(conn, "pacs", 10.0)
    conn.close()


def _purge(path: Path, dirs: SpoolDirs, settings: SpoolSettings, now: datetime) -> int:
    async def run() -> int:
        ledger = Ledger(path)
        ledger.start()
        try:
            return await Purger(ledger, dirs, settings).purge_once(now)
        finally:
            ledger.close()

    return asyncio.run(run())


def test_a_capture_dated_in_the_future_does_not_keep_older_copies_past_keep_days(
    tmp_path: Path,
) -> None:
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    ledger_path = tmp_path / "ledger.sqlite3"
    now = datetime.now(UTC)
    future = now + timedelta(days=730)
    old = [now - timedelta(days=40 + n) for n in range(4)]
    _committed(ledger_path, dirs, [future, *old, now - timedelta(days=1)])
    settings = SpoolSettings(keep_days=30, purge_high_watermark=100, purge_low_watermark=100)

    assert _purge(ledger_path, dirs, settings, now) == 4
    rows = ledger_rows(tmp_path)
    assert [r["state"] for r in rows] == ["COMMITTED"] + ["PURGED"] * 4 + ["COMMITTED"]
    for row in rows:
        on_disk = (dirs.raw / row["raw_name"]).exists() or (dirs.dicom / row["dicom_name"]).exists()
        assert on_disk == (row["state"] == "COMMITTED")
        assert (row["patient_json"] is None) == (row["state"] == "PURGED")
    # The future date is clamped to the moment it was seen: the copy then ages like
    # any other and goes keep_days later (not two years and keep_days later).
    clamped = datetime.fromisoformat(rows[0]["received_at"])
    assert now - timedelta(seconds=1) <= clamped <= now + timedelta(seconds=1)
    assert _purge(ledger_path, dirs, settings, now + timedelta(days=28)) == 0
    assert _purge(ledger_path, dirs, settings, now + timedelta(days=31)) == 2
    rows = ledger_rows(tmp_path)
    assert [r["state"] for r in rows] == ["PURGED"] * 6
    assert all(r["patient_json"] is None for r in rows)
