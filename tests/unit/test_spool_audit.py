"""Patient data on the box: every look is audited, purged rows forget the patient,
and the ledger and spool files are not readable by everyone (the audit of
``dermgate spool`` itself is in ``tests/e2e/test_spool_audit.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.core.capture import CaptureOffer, ContentType, DeviceClass, DeviceIdentity
from gateway.core.config import SpoolSettings
from gateway.core.files import atomic_writer
from gateway.intake import Intake
from gateway.spool import ledger as db
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from gateway.spool.purge import Purger, forget_purged_patients
from gateway.spool.states import CaptureState
from tests.support.spool import PATIENT, SECRETS, Spool


def test_purge_removes_the_patient_from_the_ledger_row(spool: Spool) -> None:
    spool_id, uid = spool.add(supplied=PATIENT)
    db.record_sent(spool.conn, spool_id, "pacs")
    spool.conn.execute(
        "UPDATE deliveries SET state = 'COMMITTED' WHERE capture_id = ?", (spool_id,)
    )
    spool.conn.execute("UPDATE captures SET state = 'COMMITTED' WHERE id = ?", (spool_id,))
    before = spool.capture(spool_id)
    assert before["patient_json"] is not None

    async def purge() -> int:
        ledger = Ledger(spool.dirs.root.parent / "ledger.sqlite3")
        await asyncio.to_thread(ledger.start)
        try:
            purger = Purger(ledger, spool.dirs, SpoolSettings(keep_days=1))
            return await purger.purge_once(datetime.now(UTC) + timedelta(days=2))
        finally:
            await asyncio.to_thread(ledger.close)

    assert asyncio.run(purge()) == 1
    after = spool.capture(spool_id)
    assert after["state"] == "PURGED"
    assert after["patient_json"] is None
    for column in ("sop_instance_uid", "study_uid", "series_uid", "sop_class_uid", "dicom_name"):
        assert after[column] == before[column]
    assert after["sop_instance_uid"] == uid
    conn_text = "\n".join(str(v) for v in tuple(after))
    for secret in SECRETS:
        assert secret not in conn_text


def test_rows_purged_before_keep_no_patient_after_the_next_start(spool: Spool) -> None:
    spool_id, _ = spool.add(supplied=PATIENT)
    spool.conn.execute("UPDATE captures SET state = 'PURGED' WHERE id = ?", (spool_id,))
    assert forget_purged_patients(spool.conn) == 1  # what the purge stage does as it starts
    assert spool.capture(spool_id)["patient_json"] is None


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Run with umask 0, as a careless unit file or shell might."""
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ledger_is_created_0600_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "state" / "ledger.sqlite3"
    conn = db.open_ledger(path)
    try:
        assert mode(path) == 0o600
        for sidecar in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert mode(sidecar) == 0o600, sidecar
    finally:
        conn.close()

    older = tmp_path / "older.sqlite3"  # written by an older DermGate, 0644
    db.open_ledger(older).close()
    older.chmod(0o644)
    db.open_ledger(older).close()
    assert mode(older) == 0o600


def test_spool_files_are_written_0640_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    written = dirs.dicom / "x.dcm"
    with atomic_writer(written) as out:  # how the wrapping stage writes DICOM files
        out.write(b"DICM")
    assert mode(written) == 0o640

    async def capture() -> Path:
        ledger = Ledger(tmp_path / "ledger.sqlite3")
        await asyncio.to_thread(ledger.start)
        try:
            intake = Intake(ledger, dirs, lambda: None)
            data = b"solid body\n" * 100
            device = DeviceIdentity("Acme", "Scan3D", "S1", ("1.0",), DeviceClass.BODY_SCANNER)
            offer = CaptureOffer("c1", length=len(data), content_type=ContentType.STL)
            sink = await intake.begin("scanner-export", device, offer)
            await sink.write(data)
            await sink.commit(length=len(data), sha256=hashlib.sha256(data).hexdigest())
            [entry] = await ledger.call(db.captures_in_state, CaptureState.CAPTURED)
            return dirs.raw / entry.raw_name
        finally:
            await asyncio.to_thread(ledger.close)

    raw = asyncio.run(capture())
    assert mode(raw) == 0o640
    assert mode(tmp_path / "ledger.sqlite3") == 0o600
