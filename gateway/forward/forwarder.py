"""The forwarding stage for one destination: WRAPPED → SENT.

It takes due deliveries from the ledger (fresh captures first), sends them in a
batch on one association, and writes each outcome back to the ledger: success →
SENT; retryable → attempt counted, next attempt scheduled with jittered capped
backoff, last error kept; permanent → QUARANTINED with the reason. The state, the
attempt count, the next attempt time and the last error all live in the ledger, so
a restart continues where it stopped, with the same SOP Instance UIDs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from gateway.config import DicomDestination
from gateway.forward.cstore import CStoreSender, StoreOutcome, StoreRequest, Verdict
from gateway.forward.schedule import backoff_delay
from gateway.spool import ledger as db
from gateway.spool.files import SpoolDirs
from gateway.spool.ledger import DueDelivery, Ledger

log = logging.getLogger(__name__)

_IDLE_POLL = 60.0


class Forwarder:
    """Delivers wrapped captures to one DICOM destination."""

    def __init__(
        self,
        ledger: Ledger,
        dirs: SpoolDirs,
        calling_ae: str,
        destination: DicomDestination,
        on_sent: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_sent = on_sent
        self._ledger = ledger
        self._dirs = dirs
        self.destination = destination
        self._sender = CStoreSender(calling_ae, destination)
        self.wanted = asyncio.Event()
        self._stop = threading.Event()
        self._reachable: bool | None = None

    @property
    def name(self) -> str:
        """The destination's configured name."""
        return self.destination.name

    def notify(self) -> None:
        """Something new may be due."""
        self.wanted.set()

    async def run(self, ready: Callable[[], None]) -> None:
        """Deliver until cancelled; an in-flight instance finishes and the
        association is released before this returns."""
        ready()
        while True:
            due = await self._ledger.call(
                db.due_deliveries, self.name, time.time(), self.destination.batch_size
            )
            if due:
                await self._send(due)
                continue
            next_at = await self._ledger.call(db.next_attempt_time, self.name)
            wait = _IDLE_POLL if next_at is None else min(_IDLE_POLL, next_at - time.time())
            self.wanted.clear()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wanted.wait(), wait)

    async def _send(self, due: list[DueDelivery]) -> None:
        requests = [
            StoreRequest(
                key=d.capture_id,
                path=self._dirs.dicom / d.dicom_name,
                sop_class_uid=d.sop_class_uid,
                transfer_syntax_uid=d.transfer_syntax_uid,
            )
            for d in due
        ]
        self._stop.clear()
        job = asyncio.ensure_future(
            asyncio.to_thread(self._sender.send_batch, requests, self._stop)
        )
        try:
            outcomes = await asyncio.shield(job)
        except asyncio.CancelledError:
            # Let the instance in flight finish and release the association.
            self._stop.set()
            outcomes = await job
            await self._record(due, outcomes)
            raise
        await self._record(due, outcomes)

    async def _record(self, due: list[DueDelivery], outcomes: list[StoreOutcome]) -> None:
        await self._record_outcomes(due, outcomes)
        if any(o.verdict.delivered for o in outcomes):
            self._on_sent()

    async def _record_outcomes(self, due: list[DueDelivery], outcomes: list[StoreOutcome]) -> None:
        attempts = {d.capture_id: d.attempts for d in due}
        if outcomes:
            self._log_reachability(not outcomes[0].unreachable, outcomes[0].detail)
        for outcome in outcomes:
            if outcome.verdict.delivered:
                await self._ledger.call(db.record_sent, outcome.key, self.name)
                log.info("spool id %d delivered to %s (%s)", outcome.key, self.name, outcome.detail)
            elif outcome.verdict is Verdict.PERMANENT:
                await self._ledger.call(db.record_refused, outcome.key, self.name, outcome.detail)
                log.error(
                    "spool id %d quarantined: %s refused it (%s)",
                    outcome.key,
                    self.name,
                    outcome.detail,
                )
            elif outcome.verdict is Verdict.RETRYABLE:
                failures = attempts[outcome.key] + 1
                delay = backoff_delay(
                    failures,
                    initial=self.destination.retry_initial,
                    cap=self.destination.retry_max,
                )
                await self._ledger.call(
                    db.record_retry, outcome.key, self.name, outcome.detail, time.time() + delay
                )

    def _log_reachability(self, reachable: bool, detail: str) -> None:
        if reachable == self._reachable:
            return
        if reachable:
            log.info("destination %s reachable", self.name)
        else:
            log.warning("destination %s unavailable: %s; will keep retrying", self.name, detail)
        self._reachable = reachable
