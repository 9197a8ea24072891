"""When the commitment requester asks: per forwarded batch, not after an idle delay.

A real ledger (SQLite on disk) holds the deliveries; the requester's batching step
is run against it as the running service runs it, with a ``commitment_batch_delay``
far longer than the test, so a batch asked about in time did not sit it out.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.core.capture import CaptureOffer, InstanceUIDs
from gateway.core.config import DicomDestination
from gateway.core.uids import new_uid
from gateway.forward.commitment import CommitmentRequester
from gateway.spool import commitments as cdb
from gateway.spool import ledger as db
from gateway.spool.deliveries import record_sent
from gateway.spool.ledger import Ledger
from tests.support.dicom_files import DEVICE

LONG = 600.0


def _wrapped(path: Path, count: int) -> list[int]:
    """``count`` WRAPPED captures due for "pacs"."""
    conn = db.open_ledger(path)
    ids = []
    for n in range(count):
        uids = InstanceUIDs(new_uid(), new_uid(), new_uid())
        spool_id = db.insert_capture(
            conn,
            driver="d",
            device=DEVICE,
            offer=CaptureOffer(f"{n}"),
            uids=uids,
            raw_name=f"{uids.sop_instance}.raw",
            raw_size=3,
            raw_sha256="0" * 64,
        )
        db.mark_wrapped(
            conn,
            spool_id,
            dicom_name=f"{uids.sop_instance}.dcm",
            sop_class_uid="1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.4.50",
            destinations=["pacs"],
            now=0,
        )
        ids.append(spool_id)
    conn.close()
    return ids


def _requester(ledger: Ledger) -> CommitmentRequester:
    destination = DicomDestination(
        kind="dicom",
        name="pacs",
        ae_title="PACS",
        host="127.0.0.1",
        port=104,
        commitment_batch_delay=LONG,
    )
    return CommitmentRequester(ledger, "DERMGATE", destination)


async def test_a_batch_nothing_more_is_due_for_is_asked_about_at_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ids = _wrapped(path, 2)
    ledger = Ledger(path)
    ledger.start()
    try:
        for spool_id in ids:
            await ledger.call(record_sent, spool_id, "pacs")
        requester = _requester(ledger)
        batch = await ledger.call(cdb.uncommitted, "pacs", 50)
        async with asyncio.timeout(30):  # far below commitment_batch_delay
            batch = await requester._fuller(batch)
        assert sorted(c.spool_id for c in batch) == ids
    finally:
        await asyncio.to_thread(ledger.close)


async def test_the_batch_waits_for_an_instance_still_being_sent_and_takes_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    first, second = _wrapped(path, 2)
    ledger = Ledger(path)
    ledger.start()
    try:
        await ledger.call(record_sent, first, "pacs")
        requester = _requester(ledger)
        batch = await ledger.call(cdb.uncommitted, "pacs", 50)
        fuller = asyncio.create_task(requester._fuller(batch))
        await asyncio.sleep(0.5)
        assert not fuller.done(), "asked while an instance was still due to be sent"
        await ledger.call(record_sent, second, "pacs")  # the forwarder stores it...
        requester.notify()  # ...and says so
        async with asyncio.timeout(30):
            batch = await fuller
        assert sorted(c.spool_id for c in batch) == [first, second], "one request for both"
    finally:
        await asyncio.to_thread(ledger.close)
