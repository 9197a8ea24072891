"""A destination that refuses a capture holds back only its own delivery; a derived
object is what that destination's commitment asks about; the purge takes the derived
file with the capture. A real ledger and real spool folders."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.core.capture import CaptureOffer, InstanceUIDs, PatientContext
from gateway.core.config import SpoolSettings
from gateway.core.errors import DeliveryError, DeliveryErrorCode
from gateway.core.uids import new_uid
from gateway.spool import admin
from gateway.spool import commitments as cdb
from gateway.spool import ledger as db
from gateway.spool.deliveries import record_substitute
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from gateway.spool.purge import Purger
from tests.support.dicom_files import DEVICE

CONFOCAL = "1.2.840.10008.5.1.4.1.1.77.1.8"
BYTE_SC = "1.2.840.10008.5.1.4.1.1.7.2"
REFUSAL = DeliveryError(
    DeliveryErrorCode.NOT_ACCEPTED,
    "the PACS does not accept Confocal Microscopy Image Storage; set fallback or ask the "
    f"PACS administrator to accept {CONFOCAL}",
)


@pytest.fixture
def spool(tmp_path: Path) -> tuple[sqlite3.Connection, SpoolDirs, int]:
    """One wrapped confocal capture with deliveries to ``pacs`` and ``archive``."""
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    conn = db.open_ledger(tmp_path / "ledger.sqlite3")
    uids = InstanceUIDs(new_uid(), new_uid(), new_uid())
    raw, dicom = f"{uids.sop_instance}.raw", f"{uids.sop_instance}.dcm"
    (dirs.raw / raw).write_bytes(b"raw")
    (dirs.dicom / dicom).write_bytes(b"DICM")
    spool_id = db.insert_capture(
        conn,
        driver="d",
        device=DEVICE,
        offer=CaptureOffer("1", patient=PatientContext(patient_name="", patient_id="P-1")),
        uids=uids,
        raw_name=raw,
        raw_size=3,
        raw_sha256="0" * 64,
    )
    db.mark_wrapped(
        conn,
        spool_id,
        dicom_name=dicom,
        sop_class_uid=CONFOCAL,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        destinations=["archive", "pacs"],
        now=0,
    )
    return conn, dirs, spool_id


def _state(conn: sqlite3.Connection, spool_id: int) -> tuple[str, str | None]:
    row = conn.execute("SELECT state, reason FROM captures WHERE id = ?", (spool_id,)).fetchone()
    return row[0], row[1]


def _deliveries(conn: sqlite3.Connection, spool_id: int) -> dict[str, str]:
    rows = conn.execute(
        "SELECT destination, state FROM deliveries WHERE capture_id = ?", (spool_id,)
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def test_a_refusal_leaves_the_other_destination_due_then_quarantines(
    spool: tuple[sqlite3.Connection, SpoolDirs, int],
) -> None:
    conn, dirs, spool_id = spool
    db.record_refused(conn, spool_id, "pacs", REFUSAL)
    assert _state(conn, spool_id) == ("WRAPPED", f"pacs refused it: {REFUSAL.detail}")
    assert [d.spool_id for d in db.due_deliveries(conn, "archive", 1.0, 10)] == [spool_id]
    assert db.due_deliveries(conn, "pacs", 1.0, 10) == []

    db.record_sent(conn, spool_id, "archive", now=2.0)
    assert _state(conn, spool_id)[0] == "SENT", "waiting for the archive's commitment"
    cdb.confirm_by_retention(conn, "archive", 10.0)
    assert _deliveries(conn, spool_id) == {"archive": "COMMITTED", "pacs": "FAILED"}
    assert _state(conn, spool_id) == ("QUARANTINED", f"pacs refused it: {REFUSAL.detail}")

    done = admin.retry_capture(conn, dirs, spool_id, ["archive", "pacs"], now=5.0)
    assert done.reset_deliveries == ["pacs"]
    assert _deliveries(conn, spool_id) == {"archive": "COMMITTED", "pacs": "PENDING"}
    assert _state(conn, spool_id) == ("WRAPPED", None)


def test_retry_works_while_another_destination_is_still_pending(
    spool: tuple[sqlite3.Connection, SpoolDirs, int],
) -> None:
    conn, dirs, spool_id = spool
    record_substitute(conn, spool_id, "pacs", BYTE_SC, "2.25.1", 1.0)
    db.record_refused(conn, spool_id, "pacs", REFUSAL)  # the copy's class refused too
    done = admin.retry_capture(conn, dirs, spool_id, ["archive", "pacs"], now=5.0)
    assert done.state.value == "WRAPPED"
    (due,) = db.due_deliveries(conn, "pacs", 6.0, 10)
    assert due.sent_sop_class_uid is None, "the class is negotiated again"


def test_commitment_asks_about_the_derived_instance_and_the_purge_deletes_it(
    tmp_path: Path, spool: tuple[sqlite3.Connection, SpoolDirs, int]
) -> None:
    conn, dirs, spool_id = spool
    dicom_name = conn.execute(
        "SELECT dicom_name FROM captures WHERE id = ?", (spool_id,)
    ).fetchone()[0]
    (dirs.derived / dicom_name).write_bytes(b"DICM")
    record_substitute(conn, spool_id, "pacs", BYTE_SC, "2.25.77", 1.0)
    (due,) = db.due_deliveries(conn, "pacs", 2.0, 10)
    assert (due.sent_sop_class_uid, due.sent_sop_instance_uid) == (BYTE_SC, "2.25.77")
    db.record_sent(conn, spool_id, "pacs", now=3.0)
    db.record_sent(conn, spool_id, "archive", now=3.0)
    asked = {c.sop_instance_uid: c.sop_class_uid for c in cdb.uncommitted(conn, "pacs", 10)}
    assert asked == {"2.25.77": BYTE_SC}
    assert next(iter(cdb.uncommitted(conn, "archive", 10))).sop_class_uid == CONFOCAL
    cdb.confirm_by_retention(conn, "pacs", 10.0)
    cdb.confirm_by_retention(conn, "archive", 10.0)
    assert _state(conn, spool_id)[0] == "COMMITTED"
    conn.close()

    async def purge() -> int:
        ledger = Ledger(tmp_path / "ledger.sqlite3")
        ledger.start()
        try:
            settings = SpoolSettings(keep_days=1, purge_high_watermark=100, purge_low_watermark=100)
            return await Purger(ledger, dirs, settings).purge_once(
                datetime.now(UTC) + timedelta(days=3)
            )
        finally:
            ledger.close()

    assert asyncio.run(purge()) == 1
    assert not (dirs.derived / dicom_name).exists()
    assert not (dirs.dicom / dicom_name).exists()
