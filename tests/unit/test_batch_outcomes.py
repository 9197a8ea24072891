"""A batch's delivery outcomes: one ledger transaction, one INFO summary line.

The real forwarder, C-STORE sender (pynetdicom) and ledger run in-process against a
real pynetdicom storage SCP (:class:`tests.support.peers.MisbehavingPacs`). The
ledger's statements are watched through its own seam (``Ledger.call`` installs an
SQLite trace callback on the ledger thread's connection), so the test counts the
transactions that marked deliveries SENT, not how long anything took.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.core.config import DicomDestination
from gateway.core.uids import new_uid
from gateway.forward.forwarder import Forwarder
from gateway.spool.ledger import Ledger
from tests.support.dicomweb import add_wrapped, wait_until
from tests.support.peers import MisbehavingPacs
from tests.support.spool import Spool

_MARK_SENT = "UPDATE deliveries SET state = 'SENT'"


def _destination(pacs: MisbehavingPacs, **keys: Any) -> DicomDestination:
    settings: dict[str, Any] = {
        "name": "pacs",
        "kind": "dicom",
        "ae_title": "MISBEHAVE",
        "host": "127.0.0.1",
        "port": pacs.port,
        "associations": 1,
        "storage_commitment": False,
        "retry_initial": 0.1,
        "retry_max": 0.5,
    }
    return DicomDestination.model_validate(settings | keys)


class Transactions:
    """The ledger's transactions, as lists of the statements each ran."""

    def __init__(self) -> None:
        self.done: list[list[str]] = []
        self._open: list[str] | None = None

    def trace(self, statement: str) -> None:
        """SQLite's trace callback (on the ledger thread)."""
        if statement.startswith("BEGIN"):
            self._open = []
        elif statement == "COMMIT" and self._open is not None:
            self.done.append(self._open)
            self._open = None
        elif self._open is not None:
            self._open.append(statement)

    def marking_sent(self) -> list[int]:
        """For each committed transaction that marked deliveries SENT: how many."""
        counts = [sum(s.startswith(_MARK_SENT) for s in txn) for txn in self.done]
        return [n for n in counts if n]


async def _traced(ledger: Ledger) -> Transactions:
    seen = Transactions()

    def install(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(seen.trace)  # expanded SQL: parameters inlined

    await ledger.call(install)
    return seen


@pytest.fixture
async def forwarding(spool: Spool, pacs: MisbehavingPacs) -> AsyncIterator[Forwarder]:
    """A forwarder to the scripted PACS ("pacs"), not yet running."""
    pacs.start()
    ledger = Ledger(spool.dirs.root.parent / "ledger.sqlite3")
    ledger.start()
    forwarder = Forwarder(ledger, spool.dirs, "DERMGATE", _destination(pacs))
    forwarder.record_linger = 600.0  # the group ends with the batch, however slow the box
    try:
        yield forwarder
    finally:
        ledger.close()


async def _run_until_sent(forwarder: Forwarder, spool: Spool, ids: list[int]) -> None:
    task = asyncio.create_task(forwarder.run(lambda: None))
    try:
        await wait_until(
            lambda: all(spool.capture(i)["state"] == "SENT" for i in ids), 30, "delivery"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_batch_is_recorded_in_one_ledger_transaction(
    spool: Spool, pacs: MisbehavingPacs, forwarding: Forwarder
) -> None:
    study = new_uid()
    added = [add_wrapped(spool, study) for _ in range(6)]
    ids = [spool_id for spool_id, _, _ in added]
    seen = await _traced(forwarding._ledger)
    await _run_until_sent(forwarding, spool, ids)
    assert sorted(pacs.received) == sorted(uid for _, uid, _ in added), "each stored once"
    assert seen.marking_sent() == [6], "six SENT in one transaction (one commit, one fsync)"
    assert all(spool.delivery(i)["attempts"] == 1 for i in ids)


async def test_outcomes_of_one_batch_mix_sent_and_retry_in_the_same_transaction(
    spool: Spool, pacs: MisbehavingPacs, forwarding: Forwarder
) -> None:
    pacs.script = [0x0000, 0xA700, 0x0000]  # out of resources for the second only
    study = new_uid()
    ids = [add_wrapped(spool, study)[0] for _ in range(3)]
    seen = await _traced(forwarding._ledger)
    await _run_until_sent(forwarding, spool, ids)
    first = next(txn for txn in seen.done if any(s.startswith(_MARK_SENT) for s in txn))
    assert sum(s.startswith(_MARK_SENT) for s in first) == 2
    assert any("attempts = attempts + 1, last_error = 'C-STORE status 0xA700'" in s for s in first)
    assert sorted(spool.delivery(i)["attempts"] for i in ids) == [1, 1, 2]


async def test_one_info_summary_per_batch_and_per_capture_lines_at_debug(
    spool: Spool,
    pacs: MisbehavingPacs,
    forwarding: Forwarder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    study = new_uid()
    ids = [add_wrapped(spool, study)[0] for _ in range(4)]
    caplog.set_level(logging.DEBUG, logger="gateway.forward")
    await _run_until_sent(forwarding, spool, ids)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert not [m for m in info if "delivered to" in m], "no INFO line per instance"
    summaries = [m for m in info if m.startswith("sent ")]
    assert len(summaries) == 1, info
    assert summaries[0].startswith("sent 4 instance(s) to pacs in ")
    assert summaries[0].endswith(" s, 0 waiting")
    for spool_id in ids:
        assert f"spool id {spool_id} delivered to pacs (C-STORE status 0x0000)" in debug


async def test_a_slow_batch_records_what_is_stored_without_waiting_for_the_rest(
    spool: Spool, pacs: MisbehavingPacs, forwarding: Forwarder
) -> None:
    """The PACS answers the first instance at once and the second only after 4 s: the
    first is SENT in the ledger (its group closed after ``record_linger``) while the
    second is still on its way, and each group is one transaction."""
    pacs.script = [0x0000, "silence"]
    study = new_uid()
    ids = [add_wrapped(spool, study)[0] for _ in range(2)]
    forwarding.record_linger = 0.2
    seen = await _traced(forwarding._ledger)
    task = asyncio.create_task(forwarding.run(lambda: None))
    try:
        await wait_until(
            lambda: sorted(str(spool.capture(i)["state"]) for i in ids) == ["SENT", "WRAPPED"],
            3.5,
            "the answered instance SENT while the other waits for its answer",
        )
        await wait_until(
            lambda: all(spool.capture(i)["state"] == "SENT" for i in ids), 30, "both SENT"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert seen.marking_sent() == [1, 1]
