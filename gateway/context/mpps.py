"""Modality Performed Procedure Step reporting (``[worklist] mpps = true``).

:class:`ProcedureSteps` implements :class:`gateway.context.desk.ProcedureStepHooks`:
the session logic tells it when a worklist session got its first capture
(:meth:`~ProcedureSteps.first_capture`: queue N-CREATE IN PROGRESS) and when a
worklist session ended (:meth:`~ProcedureSteps.session_ended`: queue the final N-SET).
Both only write the ledger (:mod:`gateway.spool.mpps_queue`), so what is queued
survives restarts and outages; :meth:`~ProcedureSteps.run` is the worker that sends it.

Rules the worker keeps:

* One step per session, its SOP Instance UID minted once and stored. Its messages go
  in order (N-CREATE before N-SET; both on one association when both are due), and
  sessions in the order they were queued. An N-CREATE is sent once: after it was
  acknowledged it never is again (a restart reads ``acknowledged``); one whose answer
  was lost is answered 0x0111 the second time, which counts as acknowledged.
* N-SET COMPLETED is sent only when every capture of the session is stored at every
  destination (capture SENT, COMMITTED or PURGED); until then the step waits and the
  ledger is looked at again every ``poll`` seconds. It lists every series and
  instance. A session that ended with no capture is DISCONTINUED.
* A link failure (unreachable, association rejected, no answer, the SCP accepts no
  MPPS context as Orthanc does) is retried with jittered backoff, logged once per
  change of state, and shown in :meth:`~ProcedureSteps.status`. A refusal (a failure
  status such as 0x0110 after COMPLETED) is recorded and the step is not retried.

Logs, events and the status section carry session ids, statuses and counts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.context.mpps_send import StepSender
from gateway.core.backoff import Backoff
from gateway.core.config.context import WorklistSettings
from gateway.core.events import NO_EVENTS, EventSink, ProcedureStepFailed, ProcedureStepReported
from gateway.core.procedure_step import StepError, StepErrorCode, StepStatus
from gateway.core.uids import new_uid
from gateway.dicom.mpps import (
    PerformedObject,
    PerformedSeries,
    PerformedStep,
    ScheduledStep,
    creation_dataset,
    final_dataset,
)
from gateway.spool import mpps_queue as mq
from gateway.spool.ledger import Ledger, utc_now_text

__all__ = ["ProcedureSteps"]

log = logging.getLogger(__name__)

#: Modality of a step when neither the worklist item nor ``[worklist] modality`` names one.
DEFAULT_MODALITY = "XC"
#: Protocol Name of a series when the order describes none.
DEFAULT_PROTOCOL = "DermGate capture"
#: The longest the worker sleeps when nothing is queued (it is woken when something is).
IDLE_WAKE = 300.0


class _Result(enum.Enum):
    DONE = "done"  # acknowledged (the final N-SET may still wait for storage), or refused
    LINK_DOWN = "link-down"  # the SCP could not be reached / would not take it


def _local(stamp: str | None) -> datetime:
    """A ledger time (ISO 8601, UTC) as an aware local time (now when absent)."""
    if not stamp:
        return datetime.now().astimezone()
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone()


def _pps_id(sop_instance_uid: str) -> str:
    """A Performed Procedure Step ID (SH, 16 characters) from the step's own UID."""
    return sop_instance_uid.replace(".", "")[-16:]


def scheduled_step(material: mq.StepMaterial) -> ScheduledStep | None:
    """The Scheduled Step Attributes of a session: its order's requested step, else the
    cached worklist item; None when the session has neither (no order to report)."""
    order = material.order
    request = order.request if order is not None else None
    if request is not None:
        return ScheduledStep(
            study_uid=request.study_uid or material.study_uid,
            referenced_study_uids=order.referenced_study_uids if order else (),
            accession_number=request.accession_number or (order.accession_number if order else ""),
            requested_procedure_id=request.requested_procedure_id,
            requested_procedure_description=request.requested_procedure_description,
            sps_id=request.sps_id,
            sps_description=request.sps_description,
            protocol_codes=request.protocol_codes,
        )
    item = material.item
    if item is not None:
        return ScheduledStep(
            study_uid=item.study_uid or material.study_uid,
            referenced_study_uids=item.referenced_study_uids,
            accession_number=item.accession_number,
            requested_procedure_id=item.requested_procedure_id,
            requested_procedure_description=item.requested_procedure_description,
            sps_id=item.sps_id,
            sps_description=item.sps_description,
            protocol_codes=item.protocol_codes,
        )
    if order is not None:
        return ScheduledStep(
            study_uid=material.study_uid,
            referenced_study_uids=order.referenced_study_uids,
            accession_number=order.accession_number,
            requested_procedure_id=order.study_id,
        )
    return None


def performed_series(material: mq.StepMaterial, protocol_name: str) -> list[PerformedSeries] | None:
    """Every series of the session with its instances; None while one is not stored."""
    if not all(o.stored and o.sop_class_uid for o in material.objects):
        return None
    grouped: dict[str, list[mq.StepObject]] = {}
    for obj in material.objects:
        grouped.setdefault(obj.series_uid, []).append(obj)
    return [
        PerformedSeries(
            series_uid=uid,
            protocol_name=protocol_name,
            description=next((o.series_description for o in objs if o.series_description), ""),
            operator_name=material.operator_name,
            objects=tuple(PerformedObject(str(o.sop_class_uid), o.sop_instance_uid) for o in objs),
        )
        for uid, objs in grouped.items()
    ]


class ProcedureSteps:
    """Reports worklist sessions to the MPPS SCP (see the module docstring).

    The SCP is ``[worklist] mpps_ae_title``/``mpps_port`` (default: the worklist
    SCP's) on the worklist's host; ``calling_ae`` is ``[gateway] ae_title`` (also the
    Performed Station AE Title).
    """

    def __init__(
        self,
        ledger: Ledger,
        settings: WorklistSettings,
        calling_ae: str,
        bus: EventSink = NO_EVENTS,
        *,
        station_name: str = "",
        retry_initial: float = 5.0,
        retry_max: float = 300.0,
        poll: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._settings = settings
        self._calling_ae = calling_ae
        self._bus = bus
        self._station_name = station_name
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._poll = poll
        self._clock = clock
        self.sender = StepSender(
            calling_ae,
            settings.mpps_ae_title or settings.ae_title,
            settings.host,
            settings.mpps_port or settings.port,
            settings.timeout,
        )
        self._wake = asyncio.Event()
        self._link = Backoff(initial=retry_initial, cap=retry_max)
        self._not_before = 0.0
        self.reachable: bool | None = None
        """Whether the last attempt reached an MPPS SCP that took it (None: not tried)."""
        self.last_error: StepError | None = None
        """The last link failure, None once a message goes through."""
        self._figures = mq.StepFigures(queued=0, waiting=0, failed=0)

    # --- what the session logic calls (ProcedureStepHooks) ------------------------------

    async def first_capture(self, session_id: int) -> None:
        """A worklist session's first capture was bound: queue N-CREATE IN PROGRESS."""
        queued = await self._ledger.call(
            mq.queue_start, session_id, new_uid(), utc_now_text(), self._clock()
        )
        if queued:
            log.info("mpps: session %d: IN PROGRESS queued", session_id)
            self.notify()

    async def session_ended(self, session_id: int) -> None:
        """A worklist session ended: queue COMPLETED (sent once everything is stored)
        or, when it ended empty, DISCONTINUED."""
        wanted = await self._ledger.call(mq.queue_end, session_id, new_uid(), self._clock())
        if wanted is not None:
            log.info("mpps: session %d: %s queued", session_id, wanted)
            self.notify()

    def notify(self) -> None:
        """Look at the queue now (something was queued, or a capture was stored)."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """The state document's ``mpps`` section (counts and a code, no patient data)."""
        return {
            "queued": self._figures.queued,
            "waiting_for_storage": self._figures.waiting,
            "failed": self._figures.failed,
            "reachable": self.reachable,
            "last_error": None if self.last_error is None else self.last_error.shown(),
        }

    # --- the worker ---------------------------------------------------------------------

    async def run(self, ready: Callable[[], None]) -> None:
        """Send what is queued until cancelled."""
        log.info("mpps: reporting procedure steps to %s", self.sender.peer)
        ready()
        while True:
            self._wake.clear()
            delay = await self.send_due()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):  # not wait_for (3.11 can swallow a stop)
                        await self._wake.wait()
            hold = self._not_before - self._clock()
            if hold > 0:  # the SCP failed: a wake-up does not shorten its backoff
                await asyncio.sleep(hold)

    async def send_due(self) -> float:
        """One pass over the due steps; return how long to wait before the next."""
        for step in await self._ledger.call(mq.due_steps, self._clock()):
            if await self._advance(step) is _Result.LINK_DOWN:
                break  # the others wait for the SCP too, and keep their order
        self._figures = await self._ledger.call(mq.step_figures)
        later = await self._ledger.call(mq.next_attempt_time, self._clock())
        # Steps waiting for their captures to be stored are looked at every poll.
        delay = self._poll if self._figures.waiting else IDLE_WAKE
        if later is not None:
            delay = min(delay, max(0.0, later - self._clock()))
        return delay

    async def _advance(self, step: mq.QueuedStep) -> _Result:
        material = await self._ledger.call(mq.step_material, step.session_id)
        scheduled = None if material is None else scheduled_step(material)
        if (
            material is None
            or scheduled is None
            or material.patient is None
            or not material.patient.patient_id
        ):
            missing = StepError(
                StepErrorCode.NO_ORDER,
                f"session {step.session_id}: no worklist order or patient to report",
            )
            sending = StepStatus.IN_PROGRESS if step.acknowledged is None else step.wanted
            await self._refused(step, sending, missing)
            return _Result.DONE
        create = None
        if step.acknowledged is None:
            create = creation_dataset(
                material.patient, scheduled, self._performed(step, material, scheduled)
            )
        final = None
        final_status = StepStatus.IN_PROGRESS
        if step.wanted is not StepStatus.IN_PROGRESS:
            protocol = (
                scheduled.sps_description
                or scheduled.requested_procedure_description
                or material.study_description
                or DEFAULT_PROTOCOL
            )
            series = performed_series(material, protocol)
            if series is not None:  # None: never COMPLETED before every instance is stored
                final_status = StepStatus.COMPLETED if series else StepStatus.DISCONTINUED
                final = final_dataset(
                    final_status, _local(material.closed_at), series, scheduled.protocol_codes
                )
        if create is None and final is None:
            return _Result.DONE
        outcome = await asyncio.to_thread(self.sender.send, step.sop_instance_uid, create, final)
        if outcome.created:
            await self._acknowledged(step.session_id, StepStatus.IN_PROGRESS)
        if outcome.finished:
            await self._acknowledged(step.session_id, final_status)
        error = outcome.error
        if error is None:
            self._link_up()
            return _Result.DONE
        sending = final_status if outcome.created or create is None else StepStatus.IN_PROGRESS
        if not error.code.retried:
            self._link_up()
            await self._refused(step, sending, error)
            return _Result.DONE
        delay = self._link_down(error)
        await self._ledger.call(mq.record_failure, step.session_id, error, self._clock() + delay)
        return _Result.LINK_DOWN

    def _performed(
        self, step: mq.QueuedStep, material: mq.StepMaterial, scheduled: ScheduledStep
    ) -> PerformedStep:
        order, item = material.order, material.item
        request = order.request if order is not None else None
        procedure_codes = order.procedure_codes if order is not None else ()
        if not procedure_codes and request is not None:
            procedure_codes = request.requested_procedure_codes
        if not procedure_codes and item is not None:
            procedure_codes = item.requested_procedure_codes
        return PerformedStep(
            pps_id=_pps_id(step.sop_instance_uid),
            station_ae_title=self._calling_ae,
            station_name=self._station_name,
            started=_local(step.started_at),
            modality=(item.modality if item else "") or self._settings.modality or DEFAULT_MODALITY,
            study_id=order.study_id if order is not None else "",
            description=scheduled.sps_description,
            procedure_type=scheduled.requested_procedure_description,
            procedure_codes=procedure_codes,
            protocol_codes=scheduled.protocol_codes,
        )

    async def _acknowledged(self, session_id: int, status: StepStatus) -> None:
        await self._ledger.call(mq.record_acknowledged, session_id, status)
        log.info("mpps: session %d: %s acknowledged", session_id, status)
        self._bus.publish(ProcedureStepReported(session_id=session_id, status=str(status)))

    async def _refused(self, step: mq.QueuedStep, status: StepStatus, error: StepError) -> None:
        await self._ledger.call(mq.record_failure, step.session_id, error, None)
        log.warning(
            "mpps: session %d: %s not reported: %s (%s); recorded, not retried",
            step.session_id,
            status,
            error.message,
            error.detail,
        )
        self._bus.publish(
            ProcedureStepFailed(
                session_id=step.session_id, status=str(status), code=str(error.code)
            )
        )

    def _link_up(self) -> None:
        if self.reachable is False:
            log.info("mpps: %s takes procedure steps again", self.sender.peer)
        self.reachable = True
        self.last_error = None
        self._link.reset()
        self._not_before = 0.0

    def _link_down(self, error: StepError) -> float:
        """Record a link failure (logged when it changes); return the backoff delay."""
        if self.last_error is None or self.last_error.code is not error.code:
            log.warning(
                "mpps: %s: %s (%s); steps stay queued and are retried",
                self.sender.peer,
                error.message,
                error.detail,
            )
        self.reachable = False
        self.last_error = error
        delay = self._link.next_delay()
        self._not_before = self._clock() + delay
        return delay
