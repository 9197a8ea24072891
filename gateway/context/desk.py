"""What the page, the API, barcode scanners and the CLI ask of the context stage.

:class:`ContextDesk` is the one interface through which sessions are opened and
ended, held captures assigned, lesions chosen and the worklist searched. Its
requests and views are plain frozen dataclasses; its failures one typed
:class:`ContextError` with a :class:`ContextErrorCode` and a plain message that
never quotes patient data (the API turns it into a 4xx JSON answer).

Views (:class:`SessionView`, :class:`WorklistEntry`, :class:`LesionView`) carry
patient data: they are for an authenticated page or API user only. :class:`HeldView`
and :class:`WorklistStatus` carry none.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from gateway.core.capture import Laterality, PatientContext
from gateway.core.context import SessionSource, WorklistEntry, WorklistStatus

__all__ = [
    "Actor",
    "ContextDesk",
    "ContextError",
    "ContextErrorCode",
    "HeldView",
    "LesionRequest",
    "LesionView",
    "PickItem",
    "ProcedureStepHooks",
    "Scanned",
    "SessionRequest",
    "SessionView",
    "TypedPatient",
    "Unidentified",
    "WorklistEntry",
    "WorklistStatus",
]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks: ``kind`` is "user" (page login), "token" (API token name), "barcode"
    (scanner name) or "cli"; ``operator_name`` the person to record as Operators'
    Name ("" when none: API sessions unless the request names an operator)."""

    kind: str
    name: str
    operator_name: str = ""

    @property
    def label(self) -> str:
        """``kind:name``, as audit lines and ``opened_by`` record it."""
        return f"{self.kind}:{self.name}"


# --- session requests -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PickItem:
    """A worklist item, by its cache key, accession number or SPS ID (exactly one)."""

    item_key: str | None = None
    accession_number: str | None = None
    sps_id: str | None = None


@dataclass(frozen=True, slots=True)
class TypedPatient:
    """Demographics typed in (unscheduled): Patient ID required, the rest optional.
    An empty issuer takes ``[context] issuer_of_patient_id``."""

    patient: PatientContext


@dataclass(frozen=True, slots=True)
class Scanned:
    """A barcode: a patient ID or an accession number (one), matched against the
    worklist cache; a patient ID without a match is taken as the Patient ID."""

    patient_id: str | None = None
    accession_number: str | None = None


@dataclass(frozen=True, slots=True)
class Unidentified:
    """No identity: a temporary patient (never a made-up name)."""


SessionRequest = PickItem | TypedPatient | Scanned | Unidentified


@dataclass(frozen=True, slots=True)
class LesionRequest:
    """An existing lesion of the session's patient by ``tracking_id``, or a new or
    found one by ``site`` ("SCT:66643007" or a bare SCT code value), ``laterality``
    and ``description``."""

    tracking_id: str | None = None
    site: str | None = None
    laterality: Laterality | None = None
    description: str = ""


# --- views ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LesionView:
    """One lesion of a patient's registry."""

    id: int
    tracking_id: str
    tracking_uid: str
    site: str | None
    site_scheme: str
    site_meaning: str
    laterality: Laterality | None
    description: str


@dataclass(frozen=True, slots=True)
class SessionView:
    """One session, as the page and the API show it (patient data: authenticated only)."""

    id: int
    device: str
    source: SessionSource
    patient: PatientContext
    study_uid: str
    accession_number: str
    procedure: str
    opened_at: str
    opened_by: str
    operator_name: str
    closed_at: str | None
    lesion: LesionView | None
    sensitive: bool
    captures: int


@dataclass(frozen=True, slots=True)
class HeldView:
    """A capture held for want of a patient: no patient data."""

    spool_id: int
    device: str
    received_at: str
    reason: str
    expires_at: str | None


class ContextErrorCode(enum.StrEnum):
    """Why a context request was refused (the API's ``code``)."""

    UNKNOWN_DEVICE = "unknown_device"
    NO_SUCH_SESSION = "no_such_session"
    SESSION_CLOSED = "session_closed"
    NO_SUCH_ITEM = "no_such_item"
    AMBIGUOUS_ITEM = "ambiguous_item"
    BAD_PATIENT = "bad_patient"
    BAD_LESION = "bad_lesion"
    UNKNOWN_SITE = "unknown_site"
    NOT_HELD = "not_held"
    ALREADY_SENT = "already_sent"
    NO_WORKLIST = "no_worklist"
    WORKLIST_UNAVAILABLE = "worklist_unavailable"
    BAD_REQUEST = "bad_request"


class ContextError(Exception):
    """A refused context request: ``code`` and a plain ``message`` without patient data."""

    def __init__(self, code: ContextErrorCode, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class ContextDesk(Protocol):
    """The context stage's operations (implemented by :mod:`gateway.context.stage`)."""

    def devices(self) -> list[str]:
        """The configured device names sessions can be opened on."""
        ...

    async def worklist(self, search: str = "") -> list[WorklistEntry]:
        """Cached worklist items, those matching ``search`` (name, ID, birth date,
        accession; case-insensitive) when given."""
        ...

    def worklist_status(self) -> WorklistStatus | None:
        """The cache's state; None when no ``[worklist]`` is configured."""
        ...

    async def refresh_worklist(self) -> WorklistStatus:
        """Query the SCP now; raises ContextError(NO_WORKLIST) without one."""
        ...

    async def open_session(self, device: str, request: SessionRequest, actor: Actor) -> SessionView:
        """Open (or switch) ``device``'s session; the previous one, if any, ends."""
        ...

    async def sessions(self, *, open_only: bool = True) -> list[SessionView]:
        """Sessions, newest first."""
        ...

    async def session(self, session_id: int) -> SessionView:
        """One session; ContextError(NO_SUCH_SESSION) if unknown."""
        ...

    async def end_session(self, session_id: int, actor: Actor) -> SessionView:
        """End a session (captures already bound keep their context)."""
        ...

    async def set_lesion(self, session_id: int, request: LesionRequest, actor: Actor) -> LesionView:
        """Choose (find or create) the lesion for the session's following captures."""
        ...

    async def lesions(self, session_id: int) -> list[LesionView]:
        """The registry of the session's patient."""
        ...

    async def flag_session(self, session_id: int, sensitive: bool, actor: Actor) -> SessionView:
        """Flag (or unflag) a session's following captures as sensitive."""
        ...

    async def flag_capture(self, spool_id: int, sensitive: bool, actor: Actor) -> bool:
        """Flag (or unflag) one capture as sensitive; True when its object carries
        the change (not sent yet, bound to a session), False when only the mark on
        the box changed."""
        ...

    async def held(self) -> list[HeldView]:
        """Captures held for want of a patient, oldest first."""
        ...

    async def assign(
        self,
        spool_ids: list[int],
        session_id: int | None,
        request: tuple[str, SessionRequest] | None,
        actor: Actor,
    ) -> list[int]:
        """Give held (or wrapped-but-unsent) captures a session's context: an existing
        ``session_id``, or a new session opened from ``request`` = (device, request).
        All or nothing; returns the spool ids released to wrapping."""
        ...


class ProcedureStepHooks(Protocol):
    """What the session logic tells MPPS (:mod:`gateway.context.mpps`), when enabled."""

    async def first_capture(self, session_id: int) -> None:
        """A worklist session's first capture was bound (N-CREATE IN PROGRESS)."""
        ...

    async def session_ended(self, session_id: int) -> None:
        """A worklist session ended (N-SET COMPLETED once stored, or DISCONTINUED)."""
        ...
