"""Driver-chosen UIDs at intake: a UID already taken never costs a saved capture.

Drivers may choose their captures' UIDs (``offer.uids``, derived from content so a
re-offer gives the same objects). A spooled file is named after its SOP Instance
UID, so two captures carrying the same UIDs would share a file name: a second
capture (another device, a buggy plugin, or the same export taken by two folder
drivers at once) must never replace the first one's file. It is refused with a
clear reason, or, when it *is* the same capture, acknowledged as a duplicate,
and the first capture's file stays byte for byte.

The intake here is the real one, on a real spool and ledger in a temporary folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core.capture import (
    CaptureOffer,
    CaptureRefused,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    InstanceUIDs,
    RefusalReason,
)
from gateway.core.uids import new_uid
from gateway.intake import Intake
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[Intake]:
    """The real intake on a fresh spool."""
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.start()
    yield Intake(ledger, dirs, lambda: None)
    ledger.close()


def scanner(serial: str) -> DeviceIdentity:
    """A body scanner as a folder driver would name it."""
    return DeviceIdentity("Acme", "Scan3D", serial, ("1.0",), DeviceClass.BODY_SCANNER)


def offer(capture_id: str, uids: InstanceUIDs, data: bytes) -> CaptureOffer:
    """An STL capture with driver-chosen UIDs."""
    return CaptureOffer(
        device_capture_id=capture_id,
        length=len(data),
        content_type=ContentType.STL,
        uids=uids,
    )


def spooled_files(intake: Intake) -> dict[str, bytes]:
    """Every file of each ledger row (raw or DICOM), by spool id."""
    conn = sqlite3.connect(intake.ledger.path)
    try:
        rows = conn.execute("SELECT id, raw_name, dicom_name FROM captures").fetchall()
    finally:
        conn.close()
    found = {}
    for spool_id, raw_name, dicom_name in rows:
        path = intake.dirs.raw / raw_name if raw_name else intake.dirs.dicom / dicom_name
        found[str(spool_id)] = path.read_bytes()
    return found


async def deliver(
    intake: Intake, identity: DeviceIdentity, capture: CaptureOffer, data: bytes
) -> bool:
    """Offer, stream and commit one capture; True if new, False if a duplicate."""
    sink = await intake.begin("scanner-export", identity, capture)
    await sink.write(data)
    receipt = await sink.commit(length=len(data), sha256=hashlib.sha256(data).hexdigest())
    return not receipt.duplicate


async def test_same_uids_from_another_capture_are_refused_and_the_first_is_kept(
    intake: Intake,
) -> None:
    uids = InstanceUIDs(new_uid(), new_uid(), new_uid())
    first, second = b"solid first\n" * 100, b"solid second\n" * 100
    assert await deliver(intake, scanner("A-1"), offer("cap-1", uids, first), first)

    with pytest.raises(CaptureRefused) as refused:
        await deliver(intake, scanner("B-2"), offer("cap-9", uids, second), second)

    assert refused.value.reason is RefusalReason.CONFLICT
    assert list(spooled_files(intake).values()) == [first]
    assert not any(intake.dirs.staging.iterdir())


async def test_same_capture_committed_twice_at_once_keeps_its_file(intake: Intake) -> None:
    """Two folder drivers take the same export at the same time (copied to both)."""
    uids = InstanceUIDs(new_uid(), new_uid(), new_uid())
    data = b"facet normal 0 0 1\n" * 5000
    capture = offer("cap-1", uids, data)
    sinks = [await intake.begin("scanner-export", scanner("A-1"), capture) for _ in range(2)]
    for sink in sinks:
        await sink.write(data)
    digest = hashlib.sha256(data).hexdigest()
    receipts = await asyncio.gather(
        *(sink.commit(length=len(data), sha256=digest) for sink in sinks)
    )

    assert sorted(r.duplicate for r in receipts) == [False, True]
    assert list(spooled_files(intake).values()) == [data]


async def test_leftover_of_an_interrupted_commit_does_not_block_the_capture(
    intake: Intake,
) -> None:
    """A commit cancelled between its rename and its ledger row (the driver restarted
    in that instant) leaves an unrecorded file under the capture's name; it was never
    acknowledged, so the re-offer replaces it instead of being refused until the next
    start-up's reconciliation."""
    uids = InstanceUIDs(new_uid(), new_uid(), new_uid())
    data = b"solid body\n" * 100
    (intake.dirs.raw / f"{uids.sop_instance}.raw").write_bytes(data)

    assert await deliver(intake, scanner("A-1"), offer("cap-1", uids, data), data)

    assert list(spooled_files(intake).values()) == [data]
