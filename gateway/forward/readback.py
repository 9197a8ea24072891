"""Read-back: the DICOMweb equivalent of Storage Commitment (``confirm = "read-back"``).

For every SENT instance of a DICOMweb destination, QIDO-RS is asked which instances
the store lists in that study (one request per study, paged): a listed instance is
COMMITTED (purge rules apply as with commitment); one still not listed
``confirm_timeout`` seconds after it was sent is sent again (same SOP Instance UID)
and, after ``confirm_max_failures`` such rounds, quarantined with the reason. The
answers are recorded as commitment reports (:func:`gateway.spool.commitments.apply_report`
in a transaction of their own), so ``dermgate spool`` shows them as it shows
Storage Commitment. Instances an "already stored" answer left SENT are confirmed
the same way, also with ``confirm = "response"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from itertools import groupby

from gateway.core.backoff import Backoff
from gateway.core.config import DicomwebDestination
from gateway.core.events import NO_EVENTS, CaptureCommitted, CaptureQuarantined, EventSink
from gateway.core.uids import new_uid
from gateway.forward.stow import StoreUnavailable, StowSender
from gateway.spool import commitments as cdb
from gateway.spool.clock import clamp_sent_times
from gateway.spool.ledger import Ledger
from gateway.spool.readback import ReadBackCandidate, unconfirmed

log = logging.getLogger(__name__)

NO_SUCH_INSTANCE = 0x0112
"""The failure reason recorded for an instance QIDO-RS does not list (as Storage
Commitment's "no such object instance")."""
_BATCH = 500


class ReadBack:
    """Confirms what one DICOMweb destination stored, by reading it back."""

    def __init__(
        self,
        ledger: Ledger,
        destination: DicomwebDestination,
        sender: StowSender,
        on_resend: Callable[[], None] = lambda: None,
        bus: EventSink = NO_EVENTS,
    ) -> None:
        self._ledger = ledger
        self.destination = destination
        self._sender = sender
        self._on_resend = on_resend
        self._bus = bus
        self.wanted = asyncio.Event()
        self._reachable: bool | None = None

    def notify(self) -> None:
        """Something was sent: look for it soon."""
        self.wanted.set()

    @property
    def interval(self) -> float:
        """Seconds between looks while instances wait to be listed."""
        return min(30.0, max(1.0, self.destination.confirm_timeout / 10))

    async def run(self, ready: Callable[[], None]) -> None:
        """Read back until cancelled."""
        d = self.destination
        backoff = Backoff(initial=d.retry_initial, cap=d.retry_max)
        ready()
        while True:
            self.wanted.clear()
            await self._ledger.call(clamp_sent_times, d.name, time.time())  # clock went back
            await self._ledger.call(cdb.forget_ended, d.name, time.time() - 3600.0)
            candidates = await self._ledger.call(unconfirmed, d.name, _BATCH)
            if not candidates:
                await self._wait(60.0)
                continue
            try:
                await self.check(candidates)
            except StoreUnavailable as failure:
                self._log_reachability(False, failure.error.detail)
                await asyncio.sleep(backoff.next_delay())
                continue
            self._log_reachability(True, "")
            backoff.reset()
            await self._wait(self.interval)

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):  # not wait_for (3.11 can swallow a stop)
                await self.wanted.wait()

    async def check(self, candidates: list[ReadBackCandidate]) -> None:
        """Look the candidates up (one QIDO-RS per study) and record what was found."""
        d = self.destination
        committed: list[str] = []
        failed: list[tuple[str, int | None]] = []
        ids: list[int] = []
        late = time.time() - d.confirm_timeout
        async with self._sender.session() as session:
            for study, members in groupby(candidates, key=lambda c: c.study_uid):
                listed = await self._sender.list_instances(session, study)
                for candidate in members:
                    if candidate.sop_instance_uid in listed:
                        committed.append(candidate.sop_instance_uid)
                    elif candidate.sent_epoch <= late:
                        failed.append((candidate.sop_instance_uid, NO_SUCH_INSTANCE))
                    else:
                        continue
                    ids.append(candidate.spool_id)
        if not ids:
            return
        txn = new_uid()
        now = time.time()
        await self._ledger.call(cdb.open_transaction, d.name, txn, ids, now)
        await self._ledger.call(cdb.mark_requested, txn, now)
        outcome = await self._ledger.call(
            cdb.apply_report, txn, committed, failed, d.confirm_max_failures, d.name
        )
        for spool_id in outcome.committed_ids:
            self._bus.publish(CaptureCommitted(spool_id=spool_id, destination=d.name))
        for spool_id in outcome.quarantined_ids:
            self._bus.publish(
                CaptureQuarantined(spool_id=spool_id, stage="commitment", destination=d.name)
            )
        if outcome.committed:
            log.info("%s: %d instance(s) confirmed by read-back", d.name, outcome.committed)
        if outcome.resend or outcome.quarantined:
            log.warning(
                "%s: %d instance(s) not listed by the store %.0f s after sending: %d sent "
                "again, %d quarantined",
                d.name,
                outcome.resend + outcome.quarantined,
                d.confirm_timeout,
                outcome.resend,
                outcome.quarantined,
            )
        if outcome.resend:
            self._on_resend()

    def _log_reachability(self, ok: bool, detail: str) -> None:
        if ok == self._reachable:
            return
        if ok:
            log.info("%s: read-back (QIDO-RS) answered", self.destination.name)
        else:
            log.warning("%s: read-back (QIDO-RS) failed: %s", self.destination.name, detail)
        self._reachable = ok


__all__ = ["NO_SUCH_INSTANCE", "ReadBack"]
