"""Start-up reconciliation and ledger upgrades: nothing acknowledged is ever lost."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from gateway.core.capture import CaptureOffer, InstanceUIDs
from gateway.core.uids import new_uid
from gateway.spool import ledger as db
from gateway.spool import schema
from gateway.spool.dirs import SpoolDirs
from gateway.spool.reconcile import reconcile
from tests.support.dicom_files import DEVICE


def add(conn: sqlite3.Connection, dirs: SpoolDirs, n: int, *, raw: bool = True) -> tuple[int, str]:
    uids = InstanceUIDs(new_uid(), new_uid(), new_uid())
    raw_name = f"{uids.sop_instance}.raw"
    if raw:
        (dirs.raw / raw_name).write_bytes(b"\xff\xd8capture")
    spool_id = db.insert_capture(
        conn,
        driver="serial-dermatoscope",
        device=DEVICE,
        offer=CaptureOffer(device_capture_id=f"{n:06d}"),
        uids=uids,
        raw_name=raw_name,
        raw_size=9,
        raw_sha256="0" * 64,
    )
    return spool_id, uids.sop_instance


def wrap(conn: sqlite3.Connection, dirs: SpoolDirs, spool_id: int, uid: str, *, file: bool) -> None:
    name = f"{uid}.dcm"
    if file:
        (dirs.dicom / name).write_bytes(b"DICM")
    db.mark_wrapped(
        conn,
        spool_id,
        dicom_name=name,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.77.1.7",
        transfer_syntax_uid="1.2.840.10008.1.2.4.50",
        destinations=["pacs"],
        now=time.time(),
    )


def state_of(conn: sqlite3.Connection, spool_id: int) -> tuple[str, str | None]:
    row = conn.execute("SELECT state, reason FROM captures WHERE id = ?", (spool_id,)).fetchone()
    return str(row[0]), row[1]


def test_reconcile_repairs_without_losing_acknowledged_captures(tmp_path: Path) -> None:
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    conn = db.open_ledger(tmp_path / "ledger.sqlite3")
    fine, _ = add(conn, dirs, 1)
    rewrap, rewrap_uid = add(conn, dirs, 2)
    wrap(conn, dirs, rewrap, rewrap_uid, file=False)
    lost, lost_uid = add(conn, dirs, 3, raw=False)
    wrap(conn, dirs, lost, lost_uid, file=False)
    sent, sent_uid = add(conn, dirs, 4, raw=False)
    wrap(conn, dirs, sent, sent_uid, file=False)
    db.record_sent(conn, sent, "pacs")
    (dirs.staging / "abc.part").write_bytes(b"half")
    (dirs.dicom / f".{rewrap_uid}.dcm.tmp").write_bytes(b"half")
    (dirs.raw / "2.25.1.raw").write_bytes(b"never recorded")

    report = reconcile(conn, dirs)

    assert state_of(conn, fine) == ("CAPTURED", None)
    assert state_of(conn, rewrap) == ("CAPTURED", None), "wrapped again, same UIDs"
    assert state_of(conn, lost) == ("QUARANTINED", "raw capture file missing")
    assert state_of(conn, sent)[0] == "SENT", "already at the PACS: left alone"
    assert list(dirs.staging.iterdir()) == []
    assert not (dirs.dicom / f".{rewrap_uid}.dcm.tmp").exists()
    assert (dirs.root / "orphans" / "2.25.1.raw").read_bytes() == b"never recorded"
    assert (dirs.raw / f"{rewrap_uid}.raw").exists()
    assert report.rewrap == 1
    assert report.quarantined == 1
    assert report.orphans == ["2.25.1.raw"]
    assert not reconcile(conn, dirs).changed(), "a second pass finds nothing to do"
    conn.close()


def test_v1_ledger_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(schema._SCHEMA_V1)
    old.execute("PRAGMA user_version = 1")
    old.execute(
        "INSERT INTO captures (driver, device_serial, device_capture_id, device_json, "
        "offer_json, raw_name, raw_size, raw_sha256, study_uid, series_uid, sop_instance_uid, "
        "state, received_at, updated_at) VALUES ('d', 's', '1', ?, ?, 'r', 1, 'x', '1.2', '1.3', "
        "'1.4', 'SENT', 't', 't')",
        (db.device_to_json(DEVICE), db.offer_to_json(CaptureOffer("1"))),
    )
    old.execute(
        "INSERT INTO deliveries (capture_id, destination, state, next_attempt_at) "
        "VALUES (1, 'pacs', 'SENT', 0)"
    )
    old.close()

    conn = db.open_ledger(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
    row = conn.execute("SELECT sent_epoch, commit_txn, commit_failures FROM deliveries").fetchone()
    assert row[0] is not None, "sent instances get a sent time so retention can apply"
    assert row[1] is None
    assert row[2] == 0
    assert db.get_capture(conn, 1) is not None
    conn.close()


def test_a_ledger_from_a_newer_dermgate_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    newer = sqlite3.connect(path)
    newer.execute("PRAGMA user_version = 99")
    newer.close()
    with pytest.raises(db.LedgerVersionError, match="newer than this DermGate"):
        db.open_ledger(path)


def test_v4_failures_get_their_error_codes_when_the_ledger_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    old = sqlite3.connect(path, isolation_level=None)
    for step in (1, 2, 3, 4):
        old.executescript(schema._MIGRATIONS[step])
    old.execute("PRAGMA user_version = 4")
    for n in (1, 2, 3):
        old.execute(
            "INSERT INTO captures (driver, device_serial, device_capture_id, device_json, "
            "offer_json, raw_name, raw_size, raw_sha256, study_uid, series_uid, "
            "sop_instance_uid, state, received_at, updated_at) VALUES ('d', 's', ?, ?, ?, 'r', "
            "1, 'x', '1.2', '1.3', ?, 'WRAPPED', 't', 't')",
            (str(n), db.device_to_json(DEVICE), db.offer_to_json(CaptureOffer(str(n))), f"1.{n}"),
        )
    for n, error in (
        (1, "C-STORE status 0xA700"),
        (2, "association rejected by PACS@pacs:104"),
        (3, schema.RETRY_NOTE),
    ):
        old.execute(
            "INSERT INTO deliveries (capture_id, destination, state, next_attempt_at, "
            "last_error) VALUES (?, 'pacs', 'PENDING', 0, ?)",
            (n, error),
        )
    old.close()

    conn = db.open_ledger(path)
    rows = conn.execute(
        "SELECT capture_id, error_code, error_status FROM deliveries ORDER BY capture_id"
    ).fetchall()
    assert [tuple(r) for r in rows] == [
        (1, "store_failed", 0xA700),
        (2, "association_rejected", None),
        (3, None, None),
    ]
    assert schema.schema_version(conn) == db.SCHEMA_VERSION
    conn.close()
