"""Storage Commitment Push Model: the report listener and the requester.

The PACS confirms that it keeps what we sent by an N-EVENT-REPORT that arrives on a
*new* association it opens to our listener (``[gateway] listen_port``), sometimes
before the N-ACTION-RSP is back. So the listener (pynetdicom server in its own
threads) starts before anything is requested, and every transaction is written to
the ledger before its N-ACTION is sent. The listener answers a report only after
the ledger recorded it. See :mod:`gateway.spool.commitments` for the ledger rules
(re-send of failed instances, quarantine, expiry and re-request).

A report is applied only when it comes from the destination its transaction was
sent to (:mod:`gateway.forward.peer_check`: that destination's AE title, from its
host's address or one in ``commitment_from``), and only to the instances that
transaction asked about. Anything else — a stranger, a transaction we never sent
or sent elsewhere, instances it did not ask about — is refused: answered with
0x0110 Processing failure and logged once per peer and reason, and the ledger is
not touched. (PS3.4 J.3.3 defines no status of its own for the N-EVENT-REPORT of
Storage Commitment; of PS3.7's general N-EVENT-REPORT statuses, 0x0110 "a general
failure in processing the operation" is the one that fits "not accepted from you".
0x0119 Class-instance conflict would claim that the SOP Instance is not of the SOP
Class, which is not the problem, and 0x0124 Refused: not authorised is not an
N-EVENT-REPORT status.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    Verification,
)

from gateway.core.backoff import Backoff
from gateway.core.config import DicomDestination
from gateway.core.events import NO_EVENTS, CaptureCommitted, CaptureQuarantined, EventSink
from gateway.core.uids import new_uid
from gateway.dicom.network import dermgate_ae
from gateway.forward.association import associate, tls_error
from gateway.forward.listener_front import ASSOCIATIONS_TOTAL, MAX_PDU, ListenerFront
from gateway.forward.peer_check import Address, PeerCheck
from gateway.spool import commitments as cdb
from gateway.spool.clock import clamp_commitment_times, clamp_sent_times
from gateway.spool.commitments import CommitCandidate, ReportOutcome
from gateway.spool.ledger import Ledger

log = logging.getLogger(__name__)

STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
_REPORT_TIMEOUT = 30.0
PROCESSING_FAILURE = 0x0110
_LOGGED_PEERS_MAX = 256
#: Longest wait between looks at whether a commitment batch can still grow.
_FULLER_POLL = 0.25


class Refusal(enum.Enum):
    """Why a commitment report was not applied (the value is the log's wording)."""

    STRANGER = "not the AE title and address of a PACS asked for storage commitment"
    NO_TRANSACTION = "no transaction UID"
    UNKNOWN_TRANSACTION = "a transaction we never requested"
    OTHER_DESTINATION = "a transaction requested from another PACS"
    NOT_ASKED = "it names instances its transaction did not ask about"


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
        destinations: Sequence[DicomDestination] = (),
        on_report: Callable[[str], None] = lambda _name: None,
        admit_from: Sequence[DicomDestination] | None = None,
        bus: EventSink = NO_EVENTS,
        tls: tuple[int, ssl.SSLContext] | None = None,
    ) -> None:
        """``destinations``: those that use storage commitment (the only accepted
        senders); ``on_report(name)`` runs on the loop after a report was applied;
        ``admit_from``: the destinations whose addresses may connect at all (default:
        ``destinations``; loopback and our own address always may); ``tls``: (port,
        server context) of a second, TLS-only front (``[gateway] listen_tls_*``)."""
        self._tls = tls
        self._tls_front: ListenerFront | None = None
        self._ledger = ledger
        self._bus = bus
        self._ae_title = ae_title
        self._address = address
        self._port = port
        self._max_failures = max_failures
        self._on_resend = on_resend
        self._on_report = on_report
        self._peers = PeerCheck(destinations)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._front: ListenerFront | None = None
        self._admit_from = list(admit_from) if admit_from is not None else list(destinations)
        self._logged: set[tuple[str, str, Refusal]] = set()
        self._logged_lock = threading.Lock()

    async def run(self, ready: Callable[[], None]) -> None:
        """Serve until cancelled: pynetdicom on loopback, behind the bounded front."""
        self._loop = asyncio.get_running_loop()
        ae = dermgate_ae(self._ae_title)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        ae.add_supported_context(Verification)
        ae.acse_timeout = 30
        ae.dimse_timeout = 30
        ae.network_timeout = 60
        ae.maximum_pdu_size = MAX_PDU
        # The front lets at most ASSOCIATIONS_TOTAL through; pynetdicom keeps a
        # margin for associations the front has closed and pynetdicom not yet ended.
        ae.maximum_associations = ASSOCIATIONS_TOTAL + 4
        handlers: list[Any] = [(evt.EVT_N_EVENT_REPORT, self._on_event_report)]
        self._server = await asyncio.to_thread(
            ae.start_server, ("127.0.0.1", 0), block=False, evt_handlers=handlers
        )
        try:
            upstream = int(self._server.server_address[1])
            self._front = ListenerFront(self._address, self._port, upstream, self._admitted)
            await self._start(self._front, self._port, "listen_port")
            if self._tls is not None:
                port, context = self._tls
                self._tls_front = ListenerFront(
                    self._address, port, upstream, self._admitted, tls=context
                )
                await self._start(self._tls_front, port, "listen_tls_port")
            ready()
            async with asyncio.TaskGroup() as fronts:
                for front in (self._front, self._tls_front):
                    if front is not None:
                        fronts.create_task(front.serve())
        finally:
            await asyncio.to_thread(self._server.shutdown)

    async def _start(self, front: ListenerFront, port: int, key: str) -> None:
        try:
            await front.start()
        except OSError as err:
            raise OSError(
                err.errno,
                f"cannot listen on {self._address}:{port} for commitment "
                f"reports ({err.strerror}); is [gateway] {key} in use?",
            ) from err
        log.info(
            "commitment listener on %s:%d%s as %s",
            self._address,
            port,
            " (TLS)" if front is self._tls_front else "",
            self._ae_title,
        )

    def _peer_of(self, upstream_port: int) -> str | None:
        """The real address behind pynetdicom's peer (relayed by either front)."""
        for front in (self._front, self._tls_front):
            found = front.peer_of(upstream_port) if front is not None else None
            if found is not None:
                return found
        return None

    def _admitted(self) -> frozenset[Address]:
        """Remote addresses let in (blocking: resolves the destinations' hosts)."""
        found: set[Address] = set()
        for destination in self._admit_from:
            found |= self._peers.allowed(destination)
        return frozenset(found)

    def _refuse(self, ae_title: str, address: str, why: Refusal) -> tuple[int, None]:
        """Answer a failure; log the first refusal per peer and reason only."""
        key = (ae_title, address, why)
        with self._logged_lock:
            first = key not in self._logged and len(self._logged) < _LOGGED_PEERS_MAX
            if first:
                self._logged.add(key)
                if len(self._logged) == _LOGGED_PEERS_MAX:
                    log.warning("many peers sent refused commitment reports; no longer logged")
        if first:
            log.warning(
                "commitment report from %r at %s refused (%s); answered 0x%04X, nothing "
                "changed; further refusals like this one from this peer are not logged",
                ae_title,
                address,
                why.value,
                PROCESSING_FAILURE,
            )
        else:
            log.debug("commitment report from %r at %s refused (%s)", ae_title, address, why.name)
        return PROCESSING_FAILURE, None

    def _on_event_report(self, event: Any) -> tuple[int, Dataset | None]:
        """Runs on a pynetdicom thread; waits for the ledger before answering."""
        requestor = event.assoc.requestor
        ae_title = str(requestor.ae_title or "").strip()
        # pynetdicom's peer is a front's relay; the front knows whose it is.
        address = self._peer_of(int(requestor.port)) or "unknown"
        if not self._peers.any_destination(ae_title, address):
            return self._refuse(ae_title, address, Refusal.STRANGER)
        info = event.event_information
        txn = str(getattr(info, "TransactionUID", "") or "")
        if not txn or self._loop is None:
            return self._refuse(ae_title, address, Refusal.NO_TRANSACTION)
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
        try:
            destination = self._wait(self._ledger.call(cdb.transaction_destination, txn))
            if destination is None:
                return self._refuse(ae_title, address, Refusal.UNKNOWN_TRANSACTION)
            # Matched here, on this thread: it may look up a host name.
            if not self._peers.matches(destination, ae_title, address):
                return self._refuse(ae_title, address, Refusal.OTHER_DESTINATION)
            outcome = self._wait(self._apply(destination, txn, committed, failed))
        except (concurrent.futures.TimeoutError, RuntimeError, OSError) as err:
            log.error("a commitment report could not be recorded (%s)", type(err).__name__)
            return PROCESSING_FAILURE, None
        if not outcome.known:
            return self._refuse(ae_title, address, Refusal.UNKNOWN_TRANSACTION)
        if outcome.not_asked:
            return self._refuse(ae_title, address, Refusal.NOT_ASKED)
        return 0x0000, None

    def _wait(self, work: Any) -> Any:
        """Run a coroutine on the gateway's loop and wait for its result (this thread)."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        return future.result(_REPORT_TIMEOUT)

    async def _apply(
        self,
        destination: str,
        txn: str,
        committed: list[str],
        failed: list[tuple[str, int | None]],
    ) -> ReportOutcome:
        limit = self._max_failures(destination)
        outcome: ReportOutcome = await self._ledger.call(
            cdb.apply_report, txn, committed, failed, limit, destination
        )
        if not outcome.known or not (
            outcome.committed_ids or outcome.resend or outcome.quarantined
        ):
            return outcome
        log.info(
            "commitment report from %s: %d committed, %d to send again, %d quarantined",
            destination,
            outcome.committed,
            outcome.resend,
            outcome.quarantined,
        )
        for spool_id in outcome.committed_ids:
            self._bus.publish(CaptureCommitted(spool_id=spool_id, destination=destination))
        for spool_id in outcome.quarantined_ids:
            self._bus.publish(
                CaptureQuarantined(spool_id=spool_id, stage="commitment", destination=destination)
            )
        if outcome.resend:
            self._on_resend(destination)
        self._on_report(destination)
        return outcome


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
            async with asyncio.timeout(seconds):  # not wait_for (3.11 can swallow a stop)
                await self.wanted.wait()
        self.wanted.clear()

    async def run(self, ready: Callable[[], None]) -> None:
        """Request commitment until cancelled."""
        d = self.destination
        backoff = Backoff(initial=d.retry_initial, cap=d.retry_max)
        ready()
        while True:
            await self._clamp_clock_steps()
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
            # Ended transactions are kept long enough for late reports and for the
            # commitment_overdue clock (which counts from an instance's first request).
            keep = max(3600.0, 3 * d.commitment_timeout, 2 * d.commitment_alarm_after)
            await self._ledger.call(cdb.forget_ended, d.name, time.time() - keep)
            batch = await self._ledger.call(cdb.uncommitted, d.name, d.commitment_batch_size)
            if not batch:
                await self._wait(min(d.commitment_timeout / 2, 30.0))
                continue
            if len(batch) < d.commitment_batch_size:
                batch = await self._fuller(batch)
            txn = new_uid()
            await self._ledger.call(
                cdb.open_transaction, d.name, txn, [c.spool_id for c in batch], time.time()
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

    async def _fuller(self, batch: list[CommitCandidate]) -> list[CommitCandidate]:
        """Wait up to ``commitment_batch_delay`` for a fuller batch, but only while
        something is still due to be sent here: a batch that nothing can add to is
        asked about at once (one request per forwarded batch, not per instance)."""
        d = self.destination
        loop = asyncio.get_running_loop()
        deadline = loop.time() + d.commitment_batch_delay
        while len(batch) < d.commitment_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self._ledger.call(cdb.sending_due, d.name, time.time()):
                break
            await self._wait(min(remaining, _FULLER_POLL))  # woken by each instance SENT
            batch = await self._ledger.call(cdb.uncommitted, d.name, d.commitment_batch_size)
        return batch

    async def _clamp_clock_steps(self) -> None:
        """Times stored before the clock went back count from now (not a step later)."""
        now = time.time()
        moved = await self._ledger.call(clamp_commitment_times, self.destination.name, now)
        moved += await self._ledger.call(clamp_sent_times, self.destination.name, now)
        if moved:
            log.warning(
                "%s: %d commitment time(s) lay in the future (the clock went back); "
                "counted from now",
                self.destination.name,
                moved,
            )

    def _request(self, txn: str, batch: list[CommitCandidate]) -> str | None:
        """N-ACTION (blocking); None on success, else the reason."""
        d = self.destination
        ae = dermgate_ae(self._calling_ae)
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
        assoc = associate(ae, d)  # with TLS when the destination says so
        if not assoc.is_established:
            tls = tls_error(assoc, d)
            if tls is not None:
                return tls.detail
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
            await self._ledger.call(clamp_sent_times, d.name, time.time())  # clock went back
            confirmed = await self._ledger.call(
                cdb.confirm_by_retention, d.name, time.time() - d.unconfirmed_retention
            )
            if confirmed:
                log.info("%s: %d instance(s) delivered (retention passed)", d.name, confirmed)
            await asyncio.sleep(min(60.0, max(1.0, d.unconfirmed_retention / 10)))
