"""One association carries a run of batches and is released once nothing is due.

The real forwarder, C-STORE sender (pynetdicom) and ledger run in-process against a
real pynetdicom storage SCP (:class:`tests.support.peers.MisbehavingPacs`), which
counts the A-ASSOCIATE requests, A-RELEASEs and A-ABORTs it sees.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import evt
from pynetdicom.sop_class import DermoscopicPhotographyImageStorage

from gateway.core.config import DicomDestination
from gateway.core.uids import new_uid
from gateway.forward.cstore import CStoreSender, StoreRequest, Verdict
from gateway.forward.forwarder import Forwarder
from gateway.spool.ledger import Ledger
from tests.support.dicom_files import make_dicom
from tests.support.dicomweb import add_wrapped, wait_until
from tests.support.peers import JPEG_BASELINE, MisbehavingPacs
from tests.support.spool import Spool


class Seen:
    """What the SCP saw of the associations (its handlers run on its threads)."""

    def __init__(self, pacs: MisbehavingPacs) -> None:
        self.requested = 0
        self.released = 0
        self.aborted = 0
        pacs.server.bind(evt.EVT_REQUESTED, lambda _: self._count("requested"))
        pacs.server.bind(evt.EVT_RELEASED, lambda _: self._count("released"))
        pacs.server.bind(evt.EVT_ABORTED, lambda _: self._count("aborted"))

    def _count(self, what: str) -> None:
        setattr(self, what, getattr(self, what) + 1)


def _destination(pacs: MisbehavingPacs, **keys: Any) -> DicomDestination:
    settings: dict[str, Any] = {
        "name": "pacs",
        "kind": "dicom",
        "ae_title": "MISBEHAVE",
        "host": "127.0.0.1",
        "port": pacs.port,
        "associations": 1,
        "batch_size": 2,
        "storage_commitment": False,
        "retry_initial": 0.1,
        "retry_max": 0.5,
    }
    return DicomDestination.model_validate(settings | keys)


@pytest.fixture
async def forwarding(spool: Spool, pacs: MisbehavingPacs) -> AsyncIterator[Forwarder]:
    """A forwarder to the scripted PACS in batches of 2, not yet running."""
    pacs.start()
    ledger = Ledger(spool.dirs.root.parent / "ledger.sqlite3")
    ledger.start()
    try:
        yield Forwarder(ledger, spool.dirs, "DERMGATE", _destination(pacs))
    finally:
        ledger.close()


async def test_one_association_carries_every_batch_due_and_is_released_when_idle(
    spool: Spool, pacs: MisbehavingPacs, forwarding: Forwarder
) -> None:
    seen = Seen(pacs)
    study = new_uid()
    ids = [add_wrapped(spool, study)[0] for _ in range(6)]  # three batches of 2
    task = asyncio.create_task(forwarding.run(lambda: None))
    try:
        await wait_until(
            lambda: all(spool.capture(i)["state"] == "SENT" for i in ids), 30, "delivery"
        )
        await wait_until(lambda: seen.released == 1, 10, "release once nothing is due")
        assert len(pacs.received) == 6
        assert seen.requested == 1, "one A-ASSOCIATE for the three batches"
        # Something new due later: a new association, released again when done.
        later = add_wrapped(spool, study)[0]
        forwarding.notify()
        await wait_until(lambda: spool.capture(later)["state"] == "SENT", 30, "delivery")
        await wait_until(lambda: seen.released == 2, 10, "release once nothing is due")
        assert seen.requested == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert seen.aborted == 0, "released, never aborted"


async def test_stopping_releases_the_association_kept_open(
    spool: Spool, pacs: MisbehavingPacs, forwarding: Forwarder
) -> None:
    seen = Seen(pacs)
    pacs.server.unbind(evt.EVT_C_STORE, pacs.handle_store)
    entered = threading.Event()
    go_on = threading.Event()

    def slow_store(event: Any) -> Any:
        entered.set()
        go_on.wait(10)
        return pacs.handle_store(event)

    pacs.server.bind(evt.EVT_C_STORE, slow_store)
    study = new_uid()
    ids = [add_wrapped(spool, study)[0] for _ in range(4)]
    task = asyncio.create_task(forwarding.run(lambda: None))
    await asyncio.to_thread(entered.wait, 10)
    task.cancel()  # stop while a batch is in flight
    go_on.set()
    await asyncio.gather(task, return_exceptions=True)
    await wait_until(lambda: seen.released == 1, 10, "released at stop")
    assert seen.aborted == 0
    assert seen.requested == 1
    states = [spool.capture(i)["state"] for i in ids]
    assert states.count("SENT") == 1, "the instance in flight finished, no other began"


def test_a_sender_without_keep_open_releases_after_each_batch(
    tmp_path: Path, pacs: MisbehavingPacs
) -> None:
    pacs.start()
    seen = Seen(pacs)
    sender = CStoreSender("DERMGATE", _destination(pacs))
    files = [make_dicom(tmp_path, i)[0] for i in range(2)]
    for i, path in enumerate(files):
        request = StoreRequest(i, path, str(DermoscopicPhotographyImageStorage), JPEG_BASELINE)
        (outcome,) = sender.send_batch([request], threading.Event())
        assert outcome.verdict is Verdict.SUCCESS
    assert sender.kept is None
    assert seen.requested == 2
    assert seen.released == 2
