"""The forwarding stage for one destination: WRAPPED → SENT.

Workers (``associations`` of them, default 2) each take a batch of due deliveries
from the ledger — fresh captures first, then the backlog — and send it on one
association. Each outcome is written back to the ledger: success → SENT;
retryable → attempt counted, next attempt scheduled with jittered capped backoff,
last error kept; permanent → QUARANTINED with the reason. A batch's outcomes are
written in one transaction (:mod:`.outcomes`; sooner, in groups, when the batch is
slow) and summarised in one INFO line; each capture gets a DEBUG line. State, attempt count,
next attempt time and last error all live in the ledger, so a restart continues
where it stopped, with the same SOP Instance UIDs.

The sending itself is the destination kind's :class:`~gateway.forward.senders.Sender`:
C-STORE (an association kept open from batch to batch while deliveries are due,
released as soon as a worker finds nothing to send: :mod:`.kept`), or STOW-RS (HTTP
requests per study).

Circuit breaker: after ``breaker_threshold`` batches in a row that could not even
open an association (reach the store), the workers stop trying; one of them probes
the destination with C-ECHO (QIDO-RS for DICOMweb; backing off up to ``retry_max``).
When an echo succeeds the link is restored: every pending delivery becomes due at once.

Stuck alarm: a capture not delivered ``stuck_after`` seconds after it arrived is
reported (once, and once again when the alarm clears). Nothing is ever given up.

Send windows and ``max_mbps``: outside the destination's ``send_windows`` the
workers wait (:mod:`.window_gate`: no attempt, no backoff, no alarm; the stuck
clock runs only inside the windows); the bytes of all its associations share one
token bucket (:mod:`.bucket`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from gateway.core.alarms import DESTINATION_UNREACHABLE, STUCK_CAPTURES
from gateway.core.backoff import Backoff, backoff_delay
from gateway.core.busy import BUSY
from gateway.core.config import DicomDestination, DicomwebDestination
from gateway.core.errors import DeliveryError, DeliveryErrorCode
from gateway.core.events import (
    NO_EVENTS,
    AlarmCleared,
    AlarmRaised,
    EventSink,
)
from gateway.forward.bucket import bucket_for
from gateway.forward.compatible_copies import CompatibleCopies
from gateway.forward.cstore import StoreOutcome, Verdict
from gateway.forward.outcomes import Decided, Tally, write_group
from gateway.forward.senders import Sender, sender_for
from gateway.forward.window_gate import WindowGate
from gateway.spool import ledger as db
from gateway.spool.clock import clamp_retry_times
from gateway.spool.deliveries import Refused, Retry, Sent, retry_now, stuck_count
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import DueDelivery, Ledger
from gateway.spool.send_now import SendNowStore

log = logging.getLogger(__name__)

_IDLE_POLL = 60.0
_PROBES_PER_TRIAL = 5
#: The longest a delivered instance waits before its group is written to the ledger.
RECORD_LINGER = 2.0


class Forwarder:
    """Delivers wrapped captures to one destination (a PACS or a DICOMweb store)."""

    def __init__(
        self,
        ledger: Ledger,
        dirs: SpoolDirs,
        calling_ae: str,
        destination: DicomDestination | DicomwebDestination,
        on_sent: Callable[[], None] = lambda: None,
        bus: EventSink = NO_EVENTS,
        sender: Sender | None = None,
    ) -> None:
        self._ledger = ledger
        self._bus = bus
        self._dirs = dirs
        self.destination = destination
        self._on_sent = on_sent
        self._sender = sender or sender_for(
            calling_ae, destination, bucket_for(destination.max_mbps)
        )
        self.gate = WindowGate(
            destination.name, destination.windows(), SendNowStore(dirs.root.parent), ledger
        )
        """Send windows and the "send now" override (:mod:`.window_gate`)."""
        self._copies = CompatibleCopies(ledger, dirs, destination)
        self.wanted = asyncio.Event()
        self._stop = threading.Event()
        self._claim_lock = asyncio.Lock()
        self._inflight: set[int] = set()
        self._reachable: bool | None = None
        self._failed_batches = 0
        self.circuit_open = False
        self._circuit_announced = False
        self._circuit_closed = asyncio.Event()
        self.stuck = 0
        self.last_error: DeliveryError | None = None
        """Why the latest attempt failed; None once one succeeds."""
        self.record_linger = RECORD_LINGER
        """Seconds a delivered instance may wait for the rest of its batch before its
        group is written to the ledger."""

    @property
    def reachable(self) -> bool | None:
        """Whether the last attempt reached the destination (None: not tried yet)."""
        return self._reachable

    @property
    def name(self) -> str:
        """The destination's configured name."""
        return self.destination.name

    def notify(self) -> None:
        """Something new may be due."""
        self.wanted.set()

    async def run(self, ready: Callable[[], None]) -> None:
        """Deliver until cancelled; instances in flight finish and associations are
        released before this returns."""
        ready()
        try:
            async with asyncio.TaskGroup() as group:
                for index in range(self.destination.associations):
                    group.create_task(self._worker(index), name=f"forward:{self.name}:{index}")
                group.create_task(self._watch_stuck(), name=f"forward:{self.name}:stuck")
        finally:
            await self._sender.rest()  # release what was kept open between batches

    async def _worker(self, index: int) -> None:
        while True:
            if not await self.gate.allows():  # outside the send windows: not a failure
                await self._sender.rest()
                await self.gate.wait(self.wanted)
                continue
            if self.circuit_open:
                await self._sender.rest()
                if index == 0:
                    await self._probe()
                else:
                    await self._circuit_closed.wait()
                continue
            self.wanted.clear()
            batch = await self._claim()
            if batch:
                try:
                    await self._send(batch)
                finally:
                    self._inflight.difference_update(d.spool_id for d in batch)
                continue
            await self._sender.rest()  # nothing due: no association stays open idle
            await self._idle()

    async def _claim(self) -> list[DueDelivery]:
        """Take this worker's share of what is due.

        The due deliveries are shared evenly among the associations (at most
        ``batch_size`` each), so a backlog of 50 on two associations goes 25 + 25
        rather than 20 + 20 and then 10 on one association alone.
        """
        d = self.destination
        async with self._claim_lock:
            due = await self._ledger.call(
                db.due_deliveries,
                self.name,
                time.time(),
                d.batch_size * d.associations + len(self._inflight),
            )
            free = [x for x in due if x.spool_id not in self._inflight]
            share = min(d.batch_size, max(1, -(-len(free) // d.associations)))
            batch = free[:share]
            self._inflight.update(x.spool_id for x in batch)
        return batch

    async def _idle(self) -> None:
        now = time.time()
        next_at = await self._ledger.call(db.next_attempt_time, self.name)
        horizon = self.destination.retry_max
        if next_at is not None and next_at > now + horizon:
            # Beyond the longest backoff: scheduled before the clock went back.
            moved = await self._ledger.call(clamp_retry_times, self.name, now, horizon)
            log.warning(
                "destination %s: %d retry time(s) lay beyond the longest backoff (the clock "
                "went back); retrying within %.0f s",
                self.name,
                moved,
                horizon,
            )
            next_at = now + horizon
        wait = _IDLE_POLL if next_at is None else min(_IDLE_POLL, next_at - time.time())
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for (3.11 can swallow a stop)
                    await self.wanted.wait()

    async def _probe(self) -> None:
        # Probing is cheap (one C-ECHO): start at 1 s and never wait more than 30 s,
        # so a PACS that comes back is noticed long before the deliveries' backoff.
        backoff = Backoff(initial=1.0, cap=min(30.0, self.destination.retry_max))
        probes = 0
        while self.circuit_open:
            await asyncio.sleep(backoff.next_delay())
            error = await self._sender.probe()
            probes += 1
            if error is None:
                due = await self._ledger.call(retry_now, self.name, time.time())
                log.info(
                    "destination %s answers %s again: link restored, %d pending delivery(ies) "
                    "due now",
                    self.name,
                    self._sender.probe_name,
                    due,
                )
                self._close_circuit()
                return
            if probes % _PROBES_PER_TRIAL == 0:
                # Half-open: a PACS that refuses C-ECHO but takes C-STORE must not
                # stall delivery for ever, so let the deliveries due by their own
                # backoff try once; one more failure opens the circuit again.
                self.circuit_open = False
                self._circuit_closed.set()
                self.wanted.set()
                return

    def _close_circuit(self) -> None:
        self.circuit_open = False
        self._circuit_announced = False
        self._failed_batches = 0
        self._circuit_closed.set()
        self.wanted.set()

    async def _send(self, due: list[DueDelivery]) -> None:
        """Send one batch, holding the busy lock (an update waits for it)."""
        with BUSY.busy():
            await self._send_batch(due)

    async def _send_batch(self, due: list[DueDelivery]) -> None:
        """Send one batch; its outcomes are recorded as they arrive, in groups.

        A group is written in ONE ledger transaction when the batch ends, or sooner
        once its oldest outcome has waited ``record_linger`` seconds (a batch of
        large instances), so a stored capture is SENT in the ledger soon and a batch
        of small ones costs one commit, not one per instance. The sender thread never
        waits for the ledger. A delivery is SENT only after the destination's success
        status; a crash before its group commits sends the same instance again.
        """
        started = time.monotonic()
        requests = [await self._copies.request(d) for d in due]
        attempts = {d.spool_id: d.attempts for d in due}
        classes = {d.spool_id: d.sent_sop_class_uid or d.sop_class_uid for d in due}
        loop = asyncio.get_running_loop()
        arrived: asyncio.Queue[StoreOutcome | None] = asyncio.Queue()
        tally = Tally()

        def push(outcome: StoreOutcome) -> None:
            loop.call_soon_threadsafe(arrived.put_nowait, outcome)

        async def record_all() -> None:
            group: list[Decided] = []
            opened = 0.0
            while True:
                linger = None if not group else opened + self.record_linger - time.monotonic()
                try:
                    async with asyncio.timeout(None if linger is None else max(0.0, linger)):
                        outcome = await arrived.get()
                except TimeoutError:
                    await self._write(group, tally)
                    group = []
                    continue
                if outcome is None:
                    break
                if outcome.verdict is not Verdict.NOT_ATTEMPTED:
                    if not tally.tracked:
                        self._track_reachability(not outcome.unreachable, outcome.error)
                        tally.tracked = True
                    tally.reached = tally.reached or not outcome.unreachable
                decided = await self._decide(
                    outcome, attempts[outcome.spool_id], classes[outcome.spool_id]
                )
                if decided is not None:
                    if not group:
                        opened = time.monotonic()
                    group.append(decided)
            await self._write(group, tally)

        job = asyncio.ensure_future(self._sender.send(requests, self._stop, push))
        # Runs after every push of the sender thread (same FIFO): ends the recorder.
        job.add_done_callback(lambda _: arrived.put_nowait(None))
        recorder = asyncio.ensure_future(record_all())
        try:
            await asyncio.shield(recorder)
        except asyncio.CancelledError:
            # Let the instance in flight finish, release the association, and
            # record every outcome before stopping.
            self._stop.set()
            await self._finish_recording(job, recorder)
            raise
        job.result()
        if tally.sent or tally.refused or (tally.retry and tally.reached):
            log.info(
                "sent %d instance(s) to %s in %.1f s, %d waiting%s%s",
                tally.sent,
                self.name,
                time.monotonic() - started,
                tally.waiting,
                f", {tally.retry} to retry" if tally.retry else "",
                f", {tally.refused} refused" if tally.refused else "",
            )

    async def _write(self, group: list[Decided], tally: Tally) -> None:
        if group:
            sent_before = tally.sent
            await write_group(self._ledger, self._bus, self.name, group, tally)
            if tally.sent > sent_before:
                self._on_sent()  # once per group that marked something SENT

    async def _finish_recording(
        self, job: asyncio.Future[Any], recorder: asyncio.Future[None]
    ) -> None:
        """Wait (stopping) until every outcome is recorded, unless the disk is full.

        On a full disk the outcomes left are given up once the sender is done: a
        delivery whose SENT was not recorded is sent again at the next start, under
        the same SOP Instance UID (the PACS keeps one instance).
        """
        while True:
            done, _ = await asyncio.wait({recorder}, timeout=1.0)
            if done:
                recorder.result()
                return
            if job.done() and self._ledger.waiting_for_space:
                recorder.cancel()
                await asyncio.wait({recorder})
                log.warning(
                    "destination %s: stopping with outcomes not recorded (the disk is full); "
                    "they are sent again at the next start",
                    self.name,
                )
                return

    async def _decide(self, outcome: StoreOutcome, attempts: int, sop_class: str) -> Decided | None:
        """What to record for one outcome (None: nothing, e.g. not attempted)."""
        if outcome.verdict is Verdict.DERIVE:
            outcome = await self._copies.derive(outcome)
            if outcome.verdict is Verdict.DERIVE:
                self.wanted.set()  # derived: send it now
                return None
        if outcome.verdict.delivered:
            if outcome.sent is not None:
                await self._copies.remember(outcome.spool_id, outcome.sent)
                sop_class = outcome.sent.sop_class_uid
            self.last_error = None  # the error of the latest attempt, if it failed
            # confirmed: the answer itself confirms it (STOW-RS, "response")
            return Decided(Sent(outcome.spool_id, outcome.confirmed), outcome, sop_class)
        if outcome.verdict is Verdict.NOT_ATTEMPTED:
            return None
        error = outcome.error or DeliveryError(
            DeliveryErrorCode.OTHER, outcome.detail, outcome.status
        )
        self.last_error = error
        if outcome.verdict is Verdict.PERMANENT:
            return Decided(Refused(outcome.spool_id, error), outcome, sop_class)
        delay = max(
            backoff_delay(
                attempts + 1,
                initial=self.destination.retry_initial,
                cap=self.destination.retry_max,
            ),
            outcome.retry_after or 0.0,  # the receiver's Retry-After
        )
        return Decided(Retry(outcome.spool_id, error, time.time() + delay), outcome, sop_class)

    def _track_reachability(self, reachable: bool, error: DeliveryError | None) -> None:
        if reachable:
            self._failed_batches = 0
            self._circuit_announced = False
        else:
            self._failed_batches += 1
            if not self.circuit_open and self._failed_batches >= self.destination.breaker_threshold:
                self.circuit_open = True
                self._circuit_closed.clear()
                # Announced once per outage, not again after each half-open trial.
                if not self._circuit_announced:
                    log.warning(
                        "destination %s: circuit open after %d failed attempts; probing "
                        "with %s until it answers",
                        self.name,
                        self._failed_batches,
                        self._sender.probe_name,
                    )
                    self._circuit_announced = True
        if reachable == self._reachable:
            return
        if reachable:
            log.info("destination %s reachable", self.name)
            self._bus.publish(AlarmCleared(code=DESTINATION_UNREACHABLE, subject=self.name))
        else:
            detail = error.detail if error is not None else "unreachable"
            log.warning("destination %s unavailable: %s; will keep retrying", self.name, detail)
            self.last_error = error
            self._bus.publish(
                AlarmRaised(
                    code=DESTINATION_UNREACHABLE,
                    subject=self.name,
                    message=f"destination {self.name} is not reachable",
                )
            )
        self._reachable = reachable

    async def _watch_stuck(self) -> None:
        limit = self.destination.stuck_after
        while True:
            cutoff = self.gate.stuck_cutoff(limit).isoformat()  # open window time only
            count = await self._ledger.call(
                stuck_count,
                self.name,
                cutoff,
                unconfirmed=self.destination.confirms,
            )
            if count and not self.stuck:
                log.error(
                    "STUCK: %d capture(s) not delivered to %s within %.0f s of arrival; "
                    "still retrying",
                    count,
                    self.name,
                    limit,
                )
                self._bus.publish(
                    AlarmRaised(
                        code=STUCK_CAPTURES,
                        subject=self.name,
                        message=f"captures not delivered to {self.name} within {limit:.0f} s",
                    )
                )
            elif not count and self.stuck:
                log.info("stuck alarm for %s cleared: everything delivered", self.name)
                self._bus.publish(AlarmCleared(code=STUCK_CAPTURES, subject=self.name))
            self.stuck = count
            await asyncio.sleep(min(60.0, max(1.0, limit / 10)))
