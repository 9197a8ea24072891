"""Opening, listing, flagging and ending patient sessions; searching the worklist.

A session is opened from a worklist item (:class:`PickItem`), a barcode
(:class:`Scanned`: an accession number, or a patient ID matched against the
worklist, else taken as the Patient ID), typed demographics (:class:`TypedPatient`)
or nothing (:class:`Unidentified`: a temporary patient whose ID can never collide,
see :mod:`gateway.core.patient`). Opening one on a device that has one ends the
old one in the same transaction. Logs name session ids and devices, never patients.
"""

from __future__ import annotations

import logging

from gateway.context.base import StageBase
from gateway.context.binding import capture_context
from gateway.context.desk import (
    Actor,
    ContextError,
    ContextErrorCode,
    PickItem,
    Scanned,
    SessionRequest,
    SessionView,
    TypedPatient,
    Unidentified,
)
from gateway.context.requests import (
    Seed,
    check_patient,
    items_of_patient,
    matches_search,
    one_item,
    pick,
    seed_from_item,
)
from gateway.core.capture import CaptureOffer, DeviceIdentity, PatientContext
from gateway.core.context import (
    CaptureContext,
    LesionContext,
    SessionSource,
    WorklistEntry,
    WorklistStatus,
)
from gateway.core.events import SessionEnded, SessionOpened
from gateway.core.patient import temporary_patient
from gateway.spool import lesions as registry
from gateway.spool import sessions as db
from gateway.spool.worklist_cache import cached_items

__all__ = ["SessionDesk"]

log = logging.getLogger("gateway.context")


class SessionDesk(StageBase):
    """The session operations of :class:`~gateway.context.desk.ContextDesk`."""

    async def worklist(self, search: str = "") -> list[WorklistEntry]:
        """Cached worklist items (those matching ``search`` when given)."""
        items = await self._ledger.call(cached_items)
        if not search.strip():
            return items
        return [i for i in items if matches_search(i, search)]

    def worklist_status(self) -> WorklistStatus | None:
        """The cache's state; None when no worklist client runs."""
        return None if self._worklist is None else self._worklist.status()

    async def refresh_worklist(self) -> WorklistStatus:
        """Query the SCP now."""
        if self._worklist is None:
            raise ContextError(ContextErrorCode.NO_WORKLIST, "no worklist is configured")
        return await self._worklist.refresh()

    async def _seed(self, request: SessionRequest) -> Seed:
        issuer = self._config.context.issuer_of_patient_id
        if isinstance(request, PickItem):
            return seed_from_item(pick(await self._ledger.call(cached_items), request), issuer)
        if isinstance(request, TypedPatient):
            return Seed(SessionSource.MANUAL, check_patient(request.patient, issuer))
        if isinstance(request, Scanned):
            return await self._scanned(request, issuer)
        if isinstance(request, Unidentified):
            patient = temporary_patient(self._gateway_id, await self._reserve_spool_id())
            return Seed(SessionSource.UNIDENTIFIED, patient)
        raise ContextError(ContextErrorCode.BAD_REQUEST, "unknown kind of session request")

    async def _scanned(self, request: Scanned, issuer: str) -> Seed:
        if (request.patient_id is None) == (request.accession_number is None):
            raise ContextError(
                ContextErrorCode.BAD_REQUEST, "a scan is a patient ID or an accession number"
            )
        items = await self._ledger.call(cached_items)
        if request.accession_number is not None:
            return seed_from_item(
                pick(items, PickItem(accession_number=request.accession_number)), issuer
            )
        assert request.patient_id is not None
        patient_id = request.patient_id.strip()
        found = items_of_patient(items, patient_id)
        if not found:
            typed = check_patient(PatientContext(patient_id=patient_id), issuer)
            return Seed(SessionSource.BARCODE, typed)
        return seed_from_item(one_item(found), issuer)

    async def open_session(self, device: str, request: SessionRequest, actor: Actor) -> SessionView:
        """Open (or switch) ``device``'s session; the previous one, if any, ends."""
        self._check_device(device)
        seed = await self._seed(request)
        item = seed.item
        new_id, ended = await self._ledger.call(
            db.open_session,
            device=device,
            source=seed.source,
            patient=seed.patient,
            order=seed.order,
            worklist_key=item.key if item is not None else None,
            study_uid=(item.study_uid or None) if item is not None else None,
            study_description=item.requested_procedure_description[:64] if item else "",
            opened_by=actor.label,
            operator_name=actor.operator_name if self._config.context.operator_name else "",
        )
        if ended is not None:
            await self._ended(ended)
        log.info("session %d opened on %s (%s) by %s", new_id, device, seed.source, actor.label)
        self._bus.publish(SessionOpened(session_id=new_id, device=device, source=str(seed.source)))
        return await self._view(await self._session_row(new_id))

    async def _ended(self, row: db.SessionRow) -> None:
        counts = await self._ledger.call(db.capture_counts, [row.id])
        captures = counts.get(row.id, 0)
        log.info("session %d on %s ended (%d capture(s))", row.id, row.device, captures)
        self._bus.publish(SessionEnded(session_id=row.id, device=row.device, captures=captures))
        if self._steps is not None and row.worklist_key is not None:
            try:
                await self._steps.session_ended(row.id)
            except Exception as err:  # the session has ended all the same; MPPS retries
                log.error(
                    "session %d: could not report its end to MPPS (%s)", row.id, type(err).__name__
                )

    async def sessions(self, *, open_only: bool = True) -> list[SessionView]:
        """Sessions, newest first."""
        return await self._views(await self._ledger.call(db.list_sessions, open_only=open_only))

    async def session(self, session_id: int) -> SessionView:
        """One session."""
        return await self._view(await self._session_row(session_id))

    async def end_session(self, session_id: int, actor: Actor) -> SessionView:
        """End an open session (captures already bound keep their context)."""
        await self._open_row(session_id)
        if not await self._ledger.call(db.end_session, session_id, actor.label):
            raise ContextError(ContextErrorCode.SESSION_CLOSED, f"session {session_id} has ended")
        row = await self._session_row(session_id)
        await self._ended(row)
        return await self._view(row)

    async def flag_session(self, session_id: int, sensitive: bool, actor: Actor) -> SessionView:
        """Flag (or unflag) a session's following captures as sensitive."""
        await self._open_row(session_id)
        if not await self._ledger.call(db.set_session_sensitive, session_id, sensitive):
            raise ContextError(ContextErrorCode.SESSION_CLOSED, f"session {session_id} has ended")
        log.info(
            "session %d %s as sensitive by %s",
            session_id,
            "flagged" if sensitive else "unflagged",
            actor.label,
        )
        return await self._view(await self._session_row(session_id))

    async def _capture_context(
        self,
        session: db.SessionRow,
        identity: DeviceIdentity,
        offer: CaptureOffer,
        series_number: int | None = None,
        flagged: bool = False,
        series_uid: str | None = None,
    ) -> CaptureContext:
        """The context of one capture of ``session``: the lesion the device names (in
        the session patient's registry), else the session's current lesion; the
        study dated by its first session, ``series_number`` the session series';
        ``flagged``: a technician flagged this capture as sensitive; ``series_uid``:
        the session series it joins (numbered in it)."""
        lesion: LesionContext | None = None
        label = (offer.lesion_id or "").strip()
        if label:
            patient = session.patient
            try:
                lesion = await self._ledger.call(
                    registry.lesion_for_device_label,
                    patient.patient_id,
                    patient.issuer_of_patient_id,
                    label,
                    offer.anatomic_site,
                    offer.laterality,
                )
            except ValueError:  # a label with nothing printable: the session's lesion
                lesion = None
        if lesion is None:
            lesion = await self._ledger.call(db.lesion_context_of, session.lesion_id)
        started = await self._ledger.call(db.study_started, session.study_uid)
        instance = None
        if series_uid is not None:
            instance = await self._ledger.call(db.next_instance_number, series_uid)
        return capture_context(
            session,
            identity,
            offer,
            lesion,
            self._config.context.sensitive,
            study_started=started,
            series_number=series_number,
            flagged=flagged,
            instance_number=instance,
        )
