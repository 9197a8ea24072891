"""An in-memory ContextDesk for the page's tests, until the context stage
(gateway.context.stage, branch i13-sessions) is on main: then the page tests run
against the real stage and this module goes.

It keeps the desk's contract (one open session per device, a picked worklist item's
study, lesions per patient with labels L01.., held captures assigned all or nothing,
ContextError for refused requests) so the page's flows are exercised end to end.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime

from gateway.context.desk import (
    Actor,
    ContextError,
    ContextErrorCode,
    HeldView,
    LesionRequest,
    LesionView,
    PickItem,
    Scanned,
    SessionRequest,
    SessionView,
    TypedPatient,
    Unidentified,
)
from gateway.context.sites import site as find_site
from gateway.core.capture import PatientContext
from gateway.core.context import SessionSource, WorklistEntry, WorklistStatus


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M")


def entry(
    key: str, name: str, pid: str, birth: str, sex: str, proc: str, acc: str
) -> WorklistEntry:
    """A worklist item as the stage's cache would decode it."""
    return WorklistEntry(
        key=key,
        patient=PatientContext(name, pid, "HOSP", birth, sex),
        study_uid=f"1.2.826.0.1.3680043.10.1.{key}",
        accession_number=acc,
        requested_procedure_description=proc,
        fetched_at=time.time() - 60,
    )


#: Two look-alikes (same name, different birth dates and IDs) and a third patient.
WORKLIST = [
    entry("1", "Müller^Anna", "PID001", "19800101", "F", "Mole check", "ACC1001"),
    entry("2", "Müller^Anna", "PID002", "19800110", "F", "Dermoscopy follow-up", "ACC1002"),
    entry("3", "Ødegård^Jon", "PID003", "19550505", "M", "Total body photography", "ACC1003"),
]


class MemoryDesk:
    """The desk's contract in memory (see the module docstring)."""

    def __init__(
        self, devices: list[str], *, stale: bool = False, lesions: bool = True, client: bool = True
    ) -> None:
        self._devices = devices
        self.items = list(WORKLIST)
        self.stale = stale
        self._sessions: dict[int, SessionView] = {}
        self._lesions: dict[tuple[str, str], list[LesionView]] = {}
        self.held_views: dict[int, HeldView] = {}
        self.assigned: dict[int, int] = {}  # spool id -> session id
        self._next = 1
        self.refreshes = 0
        self.registry = lesions  # False: the stage before its lesion registry
        self.client = client  # False: no worklist client runs (the cache may hold items)

    # -- worklist
    def devices(self) -> list[str]:
        return list(self._devices)

    async def worklist(self, search: str = "") -> list[WorklistEntry]:
        needle = search.strip().lower()
        if not needle:
            return list(self.items)
        return [
            e
            for e in self.items
            if needle in e.patient.patient_name.lower()
            or needle in e.patient.patient_id.lower()
            or needle in e.patient.birth_date
            or needle.replace("-", "") == e.patient.birth_date
            or needle in e.accession_number.lower()
        ]

    def worklist_status(self) -> WorklistStatus | None:
        if not self.client:
            return None
        ok = time.time() - (7200 if self.stale else 60)
        return WorklistStatus(
            len(self.items),
            ok,
            time.time(),
            "the worklist server did not answer" if self.stale else None,
            self.stale,
        )

    async def refresh_worklist(self) -> WorklistStatus:
        self.refreshes += 1
        self.stale = False
        status = self.worklist_status()
        assert status is not None
        return status

    # -- sessions
    def _find(self, request: SessionRequest) -> tuple[SessionSource, PatientContext, str, str, str]:
        if isinstance(request, PickItem):
            hit = [e for e in self.items if e.key == request.item_key]
            if not hit:
                raise ContextError(ContextErrorCode.NO_SUCH_ITEM, "That worklist item is gone.")
            e = hit[0]
            return (
                SessionSource.WORKLIST,
                e.patient,
                e.study_uid,
                e.accession_number,
                e.requested_procedure_description,
            )
        if isinstance(request, Scanned):
            for e in self.items:
                if request.accession_number and e.accession_number == request.accession_number:
                    return (
                        SessionSource.WORKLIST,
                        e.patient,
                        e.study_uid,
                        e.accession_number,
                        e.requested_procedure_description,
                    )
            if not request.patient_id:
                raise ContextError(
                    ContextErrorCode.NO_SUCH_ITEM, "No worklist item has that accession number."
                )
            return (
                SessionSource.BARCODE,
                PatientContext(patient_id=request.patient_id, issuer_of_patient_id="HOSP"),
                f"2.25.{self._next}",
                "",
                "",
            )
        if isinstance(request, TypedPatient):
            p = request.patient
            if not p.patient_id:
                raise ContextError(ContextErrorCode.BAD_PATIENT, "A Patient ID is required.")
            return (
                SessionSource.MANUAL,
                dataclasses.replace(p, issuer_of_patient_id=p.issuer_of_patient_id or "HOSP"),
                f"2.25.{self._next}",
                "",
                "",
            )
        assert isinstance(request, Unidentified)
        return (
            SessionSource.UNIDENTIFIED,
            PatientContext(patient_id=f"TMP-{self._next:04d}"),
            f"2.25.{self._next}",
            "",
            "",
        )

    async def open_session(self, device: str, request: SessionRequest, actor: Actor) -> SessionView:
        if device not in self._devices:
            raise ContextError(ContextErrorCode.UNKNOWN_DEVICE, "No such device.")
        source, patient, study, acc, proc = self._find(request)
        for s in list(self._sessions.values()):
            if s.device == device and s.closed_at is None:
                await self.end_session(s.id, actor)
        view = SessionView(
            self._next, device, source, patient, study, acc, proc, _now(), actor.label,
            actor.operator_name, None, None, False, 0,
        )  # fmt: skip
        self._sessions[view.id] = view
        self._next += 1
        return view

    async def sessions(self, *, open_only: bool = True) -> list[SessionView]:
        found = [s for s in self._sessions.values() if not open_only or s.closed_at is None]
        return sorted(found, key=lambda s: -s.id)

    def view(self, session_id: int) -> SessionView:
        """A session as it is now (for tests that cannot await)."""
        return self._sessions[session_id]

    async def session(self, session_id: int) -> SessionView:
        if session_id not in self._sessions:
            raise ContextError(ContextErrorCode.NO_SUCH_SESSION, "No such session.")
        return self._sessions[session_id]

    async def end_session(self, session_id: int, actor: Actor) -> SessionView:
        view = await self.session(session_id)
        if view.closed_at is not None:
            raise ContextError(ContextErrorCode.SESSION_CLOSED, "That patient was already ended.")
        view = dataclasses.replace(view, closed_at=_now())
        self._sessions[session_id] = view
        return view

    async def lesions(self, session_id: int) -> list[LesionView]:
        if not self.registry:
            raise ContextError(ContextErrorCode.BAD_REQUEST, "lesions are not available yet")
        p = (await self.session(session_id)).patient
        return list(self._lesions.get((p.patient_id, p.issuer_of_patient_id), []))

    async def set_lesion(self, session_id: int, request: LesionRequest, actor: Actor) -> LesionView:
        view = await self.session(session_id)
        if view.closed_at is not None:
            raise ContextError(ContextErrorCode.SESSION_CLOSED, "That patient was already ended.")
        key = (view.patient.patient_id, view.patient.issuer_of_patient_id)
        registry = self._lesions.setdefault(key, [])
        if request.tracking_id:
            found = [les for les in registry if les.tracking_id == request.tracking_id]
            if not found:
                raise ContextError(ContextErrorCode.BAD_LESION, "This patient has no such lesion.")
            lesion = found[0]
        else:
            site = find_site(request.site or "")
            if site is None:
                raise ContextError(ContextErrorCode.UNKNOWN_SITE, "Unknown anatomic site.")
            lesion = LesionView(
                len(registry) + 1 + 1000 * session_id, f"L{len(registry) + 1:02d}",
                f"2.25.{time.time_ns()}", site.value, site.scheme,
                site.meaning, request.laterality, request.description,
            )  # fmt: skip
            registry.append(lesion)
        self._sessions[session_id] = dataclasses.replace(view, lesion=lesion)
        return lesion

    async def flag_session(self, session_id: int, sensitive: bool, actor: Actor) -> SessionView:
        view = dataclasses.replace(await self.session(session_id), sensitive=sensitive)
        self._sessions[session_id] = view
        return view

    # -- held
    async def held(self) -> list[HeldView]:
        return sorted(self.held_views.values(), key=lambda h: h.spool_id)

    async def assign(
        self,
        spool_ids: list[int],
        session_id: int | None,
        request: tuple[str, SessionRequest] | None,
        actor: Actor,
    ) -> list[int]:
        if session_id is None:
            assert request is not None
            session_id = (await self.open_session(request[0], request[1], actor)).id
        view = await self.session(session_id)
        if view.closed_at is not None:
            raise ContextError(ContextErrorCode.SESSION_CLOSED, "That patient was already ended.")
        for sid in spool_ids:
            self.held_views.pop(sid, None)
            self.assigned[sid] = session_id
        return list(spool_ids)
