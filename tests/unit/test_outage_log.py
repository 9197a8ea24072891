"""What the forwarder tells the operator about an outage: once, and with true counts.

The real forwarder, C-STORE sender and ledger run in-process; the PACS is a real
pynetdicom SCP (:class:`tests.support.peers.MisbehavingPacs`) that is not started
yet (nothing listens on its port: unreachable) or rejects every association.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from gateway.core.config import DicomDestination
from gateway.forward.forwarder import Forwarder
from gateway.spool.ledger import Ledger
from tests.support.dicomweb import wait_until
from tests.support.peers import MisbehavingPacs
from tests.support.spool import Spool


@asynccontextmanager
async def forwarding(spool: Spool, pacs: MisbehavingPacs, **keys: Any) -> AsyncIterator[None]:
    """Run a forwarder to ``pacs`` (destination "pacs") over the spool's ledger."""
    settings: dict[str, Any] = {
        "name": "pacs",
        "kind": "dicom",
        "ae_title": "MISBEHAVE",
        "host": "127.0.0.1",
        "port": pacs.port,
        "associations": 1,
        "storage_commitment": False,
        "connect_timeout": 2,
    }
    ledger = Ledger(spool.dirs.root.parent / "ledger.sqlite3")
    ledger.start()
    forwarder = Forwarder(
        ledger, spool.dirs, "DERMGATE", DicomDestination.model_validate(settings | keys)
    )
    task = asyncio.create_task(forwarder.run(lambda: None))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        ledger.close()


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def attempts(spool: Spool, spool_id: int) -> Callable[[], int]:
    return lambda: int(spool.delivery(spool_id)["attempts"])


async def test_link_restored_counts_the_deliveries_never_tried(
    spool: Spool, pacs: MisbehavingPacs, caplog: pytest.LogCaptureFixture
) -> None:
    """One delivery fails and opens the circuit; two were never tried. All three wait."""
    ids = [spool.add()[0] for _ in range(3)]
    caplog.set_level(logging.INFO, logger="gateway.forward")
    async with forwarding(
        spool, pacs, batch_size=1, breaker_threshold=1, retry_initial=30.0, retry_max=60.0
    ):
        await wait_until(lambda: any("circuit open" in m for m in caplog.messages), 30, "open")
        assert sorted(spool.delivery(i)["attempts"] for i in ids) == [0, 0, 1]
        pacs.start()  # the PACS comes back; the next C-ECHO (~1 s) answers
        await wait_until(
            lambda: all(spool.capture(i)["state"] == "SENT" for i in ids), 30, "delivery"
        )
    restored = [m for m in messages(caplog, logging.INFO) if "link restored" in m]
    assert restored == [
        "destination pacs answers C-ECHO again: link restored, 3 pending delivery(ies) due now"
    ]


async def test_failed_half_open_trials_do_not_announce_the_circuit_again(
    spool: Spool, pacs: MisbehavingPacs, caplog: pytest.LogCaptureFixture
) -> None:
    """The PACS rejects everything; every 5th probe is a trial that fails (attempt +1)."""
    pacs.start(echo=False)
    pacs.reject_associations(True)
    spool_id = spool.add()[0]
    caplog.set_level(logging.INFO, logger="gateway.forward")
    async with forwarding(spool, pacs, breaker_threshold=1, retry_initial=0.1, retry_max=0.3):
        await wait_until(lambda: attempts(spool, spool_id)() >= 3, 60, "two half-open trials")
    warnings = messages(caplog, logging.WARNING)
    assert sum("circuit open" in m for m in warnings) == 1, warnings
    assert sum("unavailable" in m for m in warnings) == 1, "the state change is logged once"
    assert not [m for m in messages(caplog, logging.INFO) if m.startswith("sent ")], (
        "a batch that reached nothing logs no summary"
    )
