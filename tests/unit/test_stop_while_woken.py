"""A stop that lands just as a stage is woken is never lost.

Python 3.11's ``asyncio.wait_for`` returns normally, swallowing the cancellation,
when the awaited event is set in the same loop turn as the task is cancelled (fixed
in 3.12). Every stage that waits "for work or a timeout" then loops on and the stop
waits out ``stop_timeout`` ("... is slow to stop"). The stages wait with
``asyncio.timeout`` instead; this checks it on a real stage's wait.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.core.config import DicomDestination
from gateway.forward.commitment import CommitmentRequester
from gateway.spool.ledger import Ledger


async def test_a_stop_that_lands_with_a_wake_up_stops_the_commitment_requester(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")  # not opened: waiting needs no ledger
    destination = DicomDestination(
        kind="dicom", name="pacs", ae_title="PACS", host="127.0.0.1", port=104
    )
    requester = CommitmentRequester(ledger, "DERMGATE", destination)
    for _ in range(20):
        requester.wanted.clear()
        waiting = asyncio.create_task(requester._wait(60))
        await asyncio.sleep(0)  # it is waiting now
        requester.notify()  # work arrives...
        waiting.cancel()  # ...in the same turn as the stop
        with pytest.raises(asyncio.CancelledError):
            await waiting
