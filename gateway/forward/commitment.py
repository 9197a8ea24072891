"""Storage Commitment Push Model: the report listener and the requester.

The PACS confirms that it keeps what we sent by an N-EVENT-REPORT that arrives on a
*new* association it opens to our listener (``[gateway] listen_port``), sometimes
before the N-ACTION-RSP is back. So the listener (pynetdicom server in its own
threads) starts before anything is requested, and every transaction is written to
the ledger before its N-ACTION is sent. The listener answers a report only after
the ledger recorded it; a report for an unknown transaction is logged and answered
with success, never crashes anything. See :mod:`gateway.spool.commitments` for the
ledger rules (re-send of failed instances, quarantine, expiry and re-request).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    Verification,
)

from gateway.config import DicomDestination
from gateway.dicom.uids import new_uid
from gateway.forward.schedule import Backoff
from gateway.spool import commitments as cdb
from gateway.spool.commitments import CommitCandidate, ReportOutcome
from gateway.spool.ledger import Ledger
from gateway.status import events

log = logging.getLogger(__name__)

STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
_REPORT_TIMEOUT = 30.0


def _references(items: Any) -> list[Dataset]:
    return list(items) if items else []


class CommitmentListener:
    """Our DICOM listener: receives commitment reports (and answers C-ECHO)."""

    def __init__(
        self,
        ledger: Ledger,
        ae_title: str,
        address: str,
        port: int,
        max_failures: Callable[[str], int],
        on_resend: Callable[[str], None],
    ) -> None:
        self._ledger = ledger
        self._ae_title = ae_title
        self._address = address
        self._port = port
        self._max_failures = max_failures
        self._on_resend = on_resend
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None

    async def run(self, ready: Callable[[], None]) -> None:
        """Serve until cancelled."""
        self._loop = asyncio.get_running_loop()
        ae = AE(ae_title=self._ae_title)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        ae.add_supported_context(Verification)
        ae.acse_timeout = 30
        ae.dimse_timeout = 30
        ae.network_timeout = 60
        handlers: list[Any] = [(evt.EVT_N_EVENT_REPORT, self._on_report)]
        try:
            self._server = await asyncio.to_thread(
                ae.start_server,
                (self._address, self._port),
                block=False,
                evt_handlers=handlers,
            )
        except OSError as err:
            raise OSError(
                err.errno,
                f"cannot listen on {self._address}:{self._port} for commitment reports "
                f"({err.strerror}); is [gateway] listen_port in use?",
            ) from err
        log.info("commitment listener on %s:%d as %s", self._address, self._port, self._ae_title)
        ready()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.to_thread(self._server.shutdown)

    def _on_report(self, event: Any) -> tuple[int, Dataset | None]:
        """Runs on a pynetdicom thread; waits for the ledger before answering."""
        info = event.event_information
        txn = str(getattr(info, "TransactionUID", "") or "")
        committed = [
            str(item.ReferencedSOPInstanceUID)
            for item in _references(getattr(info, "ReferencedSOPSequence", None))
        ]
        failed = [
            (
                str(item.ReferencedSOPInstanceUID),
                int(item.FailureReason) if "FailureReason" in item else None,
            )
            for item in _references(getattr(info, "FailedSOPSequence", None))
        ]
        if not txn or self._loop is None:
            log.warning("commitment report without a transaction UID ignored")
            return 0x0000, None
        future = asyncio.run_coroutine_threadsafe(self._apply(txn, committed, failed), self._loop)
        try:
            future.result(_REPORT_TIMEOUT)
        except (concurrent.futures.TimeoutError, RuntimeError, OSError) as err:
            log.error("commitment report %s could not be recorded (%s)", txn, type(err).__name__)
            return 0x0110, None
        return 0x0000, None

    async def _apply(
        self, txn: str, committed: list[str], failed: list[tuple[str, int | None]]
    ) -> None:
        destination = await self._ledger.call(_destination_of, txn)
        limit = self._max_failures(destination) if destination else 1
        outcome: ReportOutcome = await self._ledger.call(
            cdb.apply_report, txn, committed, failed, limit
        )
        if not outcome.known:
            log.warning("commitment report for unknown or finished transaction %s answered", txn)
            return
        log.info(
            "commitment report from %s: %d committed, %d to send again, %d quarantined",
            outcome.destination,
            outcome.committed,
            outcome.resend,
            outcome.quarantined,
        )
        for spool_id in outcome.committed_ids:
            events.emit("capture_committed", spool_id=spool_id, destination=outcome.destination)
        for spool_id in outcome.quarantined_ids:
            events.emit(
                "capture_quarantined",
                spool_id=spool_id,
                stage="commitment",
                destination=outcome.destination,
            )
        if outcome.resend and outcome.destination:
            self._on_resend(outcome.destination)


def _destination_of(conn: Any, txn: str) -> str | None:
    row = conn.execute(
        "SELECT destination FROM commitments WHERE transaction_uid = ?", (txn,)
    ).fetchone()
    return None if row is None else str(row[0])


class CommitmentRequester:
    """Asks one destination to commit what it stored, in batches."""

    def __init__(self, ledger: Ledger, calling_ae: str, destination: DicomDestination) -> None:
        self._ledger = ledger
        self._calling_ae = calling_ae
        self.destination = destination
        self.wanted = asyncio.Event()
        self._reachable: bool | None = None

    def notify(self) -> None:
        """Instances were stored: there may be something to ask about."""
        self.wanted.set()

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wanted.wait(), seconds)
        self.wanted.clear()

    async def run(self, ready: Callable[[], None]) -> None:
        """Request commitment until cancelled."""
        d = self.destination
        backoff = Backoff(initial=d.retry_initial, cap=d.retry_max)
        ready()
        while True:
            expired = await self._ledger.call(
                cdb.expire_overdue, d.name, time.time() - d.commitment_timeout
            )
            if expired:
                log.warning(
                    "%s: %d commitment request(s) unanswered after %.0f s; asking again",
                    d.name,
                    expired,
                    d.commitment_timeout,
                )
            batch = await self._ledger.call(cdb.uncommitted, d.name, d.commitment_batch_size)
            if not batch:
                await self._wait(min(d.commitment_timeout / 2, 30.0))
                continue
            if len(batch) < d.commitment_batch_size:
                await asyncio.sleep(d.commitment_batch_delay)
                batch = await self._ledger.call(cdb.uncommitted, d.name, d.commitment_batch_size)
            txn = new_uid()
            await self._ledger.call(
                cdb.open_transaction, d.name, txn, [c.capture_id for c in batch], time.time()
            )
            error = await asyncio.to_thread(self._request, txn, batch)
            if error is None:
                await self._ledger.call(cdb.mark_requested, txn, time.time())
                self._log_reachability(True, "")
                backoff.reset()
                continue
            await self._ledger.call(cdb.expire, txn)
            self._log_reachability(False, error)
            await asyncio.sleep(backoff.next_delay())

    def _request(self, txn: str, batch: list[CommitCandidate]) -> str | None:
        """N-ACTION (blocking); None on success, else the reason."""
        d = self.destination
        ae = AE(ae_title=self._calling_ae)
        ae.add_requested_context(StorageCommitmentPushModel)
        ae.connection_timeout = d.connect_timeout
        ae.acse_timeout = d.acse_timeout
        ae.dimse_timeout = d.dimse_timeout
        ae.network_timeout = d.network_timeout
        request = Dataset()
        request.TransactionUID = txn
        items = []
        for candidate in batch:
            item = Dataset()
            item.ReferencedSOPClassUID = candidate.sop_class_uid
            item.ReferencedSOPInstanceUID = candidate.sop_instance_uid
            items.append(item)
        request.ReferencedSOPSequence = items
        assoc = ae.associate(d.host, d.port, ae_title=d.ae_title)
        if not assoc.is_established:
            return f"could not open an association with {d.ae_title}@{d.host}:{d.port}"
        try:
            status, _ = assoc.send_n_action(
                request, 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
            )
        except ValueError:
            return f"{d.ae_title} does not offer Storage Commitment"
        finally:
            if assoc.is_established:
                assoc.release()
        if not status or "Status" not in status:
            return "no N-ACTION response"
        if status.Status != 0x0000:
            return f"N-ACTION status 0x{int(status.Status):04X}"
        log.debug("%s: commitment of %d instance(s) requested", d.name, len(batch))
        return None

    def _log_reachability(self, ok: bool, detail: str) -> None:
        if ok == self._reachable:
            return
        if ok:
            log.info("%s: storage commitment requests accepted", self.destination.name)
        else:
            log.warning("%s: storage commitment request failed: %s", self.destination.name, detail)
        self._reachable = ok


class RetentionConfirmer:
    """For a destination without commitment: SENT counts as delivered after a while."""

    def __init__(self, ledger: Ledger, destination: DicomDestination) -> None:
        self._ledger = ledger
        self.destination = destination

    async def run(self, ready: Callable[[], None]) -> None:
        """Check periodically until cancelled."""
        d = self.destination
        ready()
        while True:
            confirmed = await self._ledger.call(
                cdb.confirm_by_retention, d.name, time.time() - d.unconfirmed_retention
            )
            if confirmed:
                log.info("%s: %d instance(s) delivered (retention passed)", d.name, confirmed)
            await asyncio.sleep(min(60.0, max(1.0, d.unconfirmed_retention / 10)))
