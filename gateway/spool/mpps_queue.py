"""The MPPS queue: one Modality Performed Procedure Step per worklist session.

A row (table ``mpps``) is made at a worklist session's first capture (wanted IN
PROGRESS) or, for a session that ended empty, when it ends; its SOP Instance UID is
minted then and never changes. Ending the session sets the final status wanted
(COMPLETED, or DISCONTINUED when it has no capture). ``acknowledged`` is the last
status the SCP accepted: a row is queued while it differs from ``wanted``, until the
SCP refused it for good (``failed_at``). ``attempts`` counts failures since the last
acknowledgement (the backoff's input).

What a step reports is read at send time (:func:`step_material`): the session's
patient and order, the cached worklist item, and the session's captures with
whether each is stored at every destination (state SENT, COMMITTED or PURGED).

Blocking functions taking a connection, run on the ledger thread.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import TypeVar

from pydantic import TypeAdapter, ValidationError

from gateway.core.capture import PatientContext
from gateway.core.context import OrderContext, SessionSource, WorklistEntry
from gateway.core.procedure_step import StepError, StepErrorCode, StepStatus
from gateway.spool.records import PATIENT_RECORD
from gateway.spool.schema import transaction, utc_now_text
from gateway.spool.sessions import ORDER_RECORD
from gateway.spool.states import CaptureState
from gateway.spool.worklist_cache import ENTRY_RECORD

__all__ = [
    "QueuedStep",
    "StepFigures",
    "StepMaterial",
    "StepObject",
    "due_steps",
    "get_step",
    "next_attempt_time",
    "queue_end",
    "queue_start",
    "record_acknowledged",
    "record_failure",
    "step_figures",
    "step_material",
]

T = TypeVar("T")

_STORED = (CaptureState.SENT, CaptureState.COMMITTED, CaptureState.PURGED)

#: A step with something to send (and not refused for good).
_PENDING = "failed_at IS NULL AND (acknowledged IS NULL OR acknowledged != wanted)"
#: A step that ended, whose N-CREATE went through, and one of whose captures is not yet
#: stored at every destination: its final N-SET waits.
_WAITING = (
    "acknowledged IS NOT NULL AND wanted != 'IN PROGRESS' AND EXISTS (SELECT 1 FROM "
    "captures c WHERE c.session_id = mpps.session_id AND c.state NOT IN "
    f"({', '.join(repr(str(s)) for s in _STORED)}))"
)
_STEP_COLUMNS = (
    "session_id, sop_instance_uid, wanted, acknowledged, started_at, attempts, "
    "next_attempt_at, error_code, error_status, failed_at"
)


@dataclass(frozen=True, slots=True)
class QueuedStep:
    """One step as the ledger holds it (no patient data)."""

    session_id: int
    sop_instance_uid: str
    wanted: StepStatus
    acknowledged: StepStatus | None
    started_at: str
    attempts: int
    next_attempt_at: float
    error: StepError | None
    failed: bool

    @property
    def pending(self) -> bool:
        """Whether something is still to be sent (and the SCP has not refused it)."""
        return not self.failed and self.acknowledged is not self.wanted


@dataclass(frozen=True, slots=True)
class StepObject:
    """One capture of the session: what a Performed Series Sequence lists."""

    series_uid: str
    sop_class_uid: str | None
    sop_instance_uid: str
    stored: bool
    series_description: str


@dataclass(frozen=True, slots=True)
class StepMaterial:
    """What an N-CREATE or N-SET says about a session (patient data: never logged).

    ``order`` is the session's order (None when absent or unreadable), ``item`` the
    cached worklist item it came from (None once the cache no longer has it).
    """

    session_id: int
    source: SessionSource
    patient: PatientContext | None
    order: OrderContext | None
    item: WorklistEntry | None
    study_uid: str
    study_description: str
    operator_name: str
    opened_at: str
    closed_at: str | None
    objects: tuple[StepObject, ...]


@dataclass(frozen=True, slots=True)
class StepFigures:
    """Counts for the state document: steps with something to send (``waiting`` of
    them for their captures to be stored), and steps refused for good."""

    queued: int
    waiting: int
    failed: int


def _step(row: sqlite3.Row) -> QueuedStep:
    error = None
    if row["error_code"]:
        error = StepError(StepErrorCode(row["error_code"]), "", row["error_status"])
    return QueuedStep(
        session_id=int(row["session_id"]),
        sop_instance_uid=str(row["sop_instance_uid"]),
        wanted=StepStatus(row["wanted"]),
        acknowledged=None if row["acknowledged"] is None else StepStatus(row["acknowledged"]),
        started_at=str(row["started_at"]),
        attempts=int(row["attempts"]),
        next_attempt_at=float(row["next_attempt_at"]),
        error=error,
        failed=row["failed_at"] is not None,
    )


def queue_start(
    conn: sqlite3.Connection, session_id: int, sop_instance_uid: str, started_at: str, now: float
) -> bool:
    """A worklist session's first capture: queue IN PROGRESS under ``sop_instance_uid``.

    False (nothing changed) when the session is not a worklist session or already
    has its step (the UID of the first call stays).
    """
    with transaction(conn):
        cur = conn.execute(
            "INSERT INTO mpps (session_id, sop_instance_uid, wanted, started_at, "
            "next_attempt_at) SELECT id, ?, ?, ?, ? FROM sessions WHERE id = ? AND source = ? "
            "ON CONFLICT (session_id) DO NOTHING",
            (
                sop_instance_uid,
                StepStatus.IN_PROGRESS,
                started_at,
                now,
                session_id,
                SessionSource.WORKLIST,
            ),
        )
    return cur.rowcount == 1


def queue_end(
    conn: sqlite3.Connection, session_id: int, sop_instance_uid: str, now: float
) -> StepStatus | None:
    """A worklist session ended: want COMPLETED if it has captures, else DISCONTINUED.

    A session that ended empty gets its step now (``sop_instance_uid``, started when
    the session was opened). Returns the status wanted, None for a session that is
    not a worklist session. Ending twice changes nothing.
    """
    with transaction(conn):
        session = conn.execute(
            "SELECT source, opened_at FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        if session is None or session["source"] != SessionSource.WORKLIST:
            return None
        has_captures = conn.execute(
            "SELECT 1 FROM captures WHERE session_id = ? LIMIT 1", (session_id,)
        ).fetchone()
        wanted = StepStatus.COMPLETED if has_captures else StepStatus.DISCONTINUED
        row = conn.execute("SELECT wanted FROM mpps WHERE session_id = ?", (session_id,)).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO mpps (session_id, sop_instance_uid, wanted, started_at, "
                "next_attempt_at) VALUES (?, ?, ?, ?, ?)",
                (session_id, sop_instance_uid, wanted, session["opened_at"], now),
            )
            return wanted
        if row["wanted"] != StepStatus.IN_PROGRESS:
            return StepStatus(row["wanted"])
        conn.execute("UPDATE mpps SET wanted = ? WHERE session_id = ?", (wanted, session_id))
    return wanted


def due_steps(conn: sqlite3.Connection, now: float) -> list[QueuedStep]:
    """Steps with something to send now, oldest session first; not those whose final
    N-SET waits for captures to be stored (:func:`step_figures` counts them)."""
    rows = conn.execute(
        f"SELECT {_STEP_COLUMNS} FROM mpps WHERE {_PENDING} AND next_attempt_at <= ? "
        f"AND NOT ({_WAITING}) ORDER BY session_id",
        (now,),
    ).fetchall()
    return [_step(r) for r in rows]


def next_attempt_time(conn: sqlite3.Connection, after: float) -> float | None:
    """When the earliest step with something to send falls due after ``after``; None:
    none (steps due already were just tried, or wait for storage)."""
    row = conn.execute(
        f"SELECT MIN(next_attempt_at) FROM mpps WHERE {_PENDING} AND next_attempt_at > ?",
        (after,),
    ).fetchone()
    return None if row[0] is None else float(row[0])


def get_step(conn: sqlite3.Connection, session_id: int) -> QueuedStep | None:
    """The step of session ``session_id``, if it has one."""
    row = conn.execute(
        f"SELECT {_STEP_COLUMNS} FROM mpps WHERE session_id = ?", (session_id,)
    ).fetchone()
    return None if row is None else _step(row)


def _decoded(adapter: TypeAdapter[T], text: str | None) -> T | None:
    if not text:
        return None
    try:
        return adapter.validate_json(text)
    except ValidationError:
        return None


def _series_description(context_json: str | None) -> str:
    if not context_json:
        return ""
    try:
        value = json.loads(context_json).get("series_description", "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def step_material(conn: sqlite3.Connection, session_id: int) -> StepMaterial | None:
    """What the step of ``session_id`` reports, read now (None: no such session)."""
    session = conn.execute(
        "SELECT source, patient_json, order_json, worklist_key, study_uid, study_description, "
        "operator_name, opened_at, closed_at FROM sessions WHERE id = ?",
        (session_id,),
    ).fetchone()
    if session is None:
        return None
    item = None
    if session["worklist_key"]:
        cached = conn.execute(
            "SELECT item_json FROM worklist_items WHERE item_key = ?", (session["worklist_key"],)
        ).fetchone()
        item = _decoded(ENTRY_RECORD, cached[0] if cached else None)
    captures = conn.execute(
        "SELECT series_uid, sop_class_uid, sop_instance_uid, state, context_json "
        "FROM captures WHERE session_id = ? ORDER BY id",
        (session_id,),
    ).fetchall()
    return StepMaterial(
        session_id=session_id,
        source=SessionSource(session["source"]),
        patient=_decoded(PATIENT_RECORD, session["patient_json"]),
        order=_decoded(ORDER_RECORD, session["order_json"]),
        item=item,
        study_uid=str(session["study_uid"]),
        study_description=str(session["study_description"] or ""),
        operator_name=str(session["operator_name"] or ""),
        opened_at=str(session["opened_at"]),
        closed_at=session["closed_at"],
        objects=tuple(
            StepObject(
                series_uid=str(c["series_uid"]),
                sop_class_uid=c["sop_class_uid"],
                sop_instance_uid=str(c["sop_instance_uid"]),
                stored=c["state"] in _STORED,
                series_description=_series_description(c["context_json"]),
            )
            for c in captures
        ),
    )


def record_acknowledged(conn: sqlite3.Connection, session_id: int, status: StepStatus) -> None:
    """The SCP accepted ``status`` (a final status also becomes the one wanted: the
    session's captures decide COMPLETED or DISCONTINUED when it is sent)."""
    with transaction(conn):
        conn.execute(
            "UPDATE mpps SET acknowledged = ?, wanted = CASE WHEN ? = ? THEN wanted ELSE ? END, "
            "attempts = 0, last_error = NULL, error_code = NULL, error_status = NULL "
            "WHERE session_id = ?",
            (status, status, StepStatus.IN_PROGRESS, status, session_id),
        )


def record_failure(
    conn: sqlite3.Connection,
    session_id: int,
    error: StepError,
    retry_at: float | None,
) -> None:
    """Count a failed attempt and keep why.

    ``retry_at``: the SCP could not be reached (or was busy); every queued step waits
    until then, so that they go again together, in their order. None: the SCP
    refused this step for good; it is not tried again.
    """
    with transaction(conn):
        conn.execute(
            "UPDATE mpps SET attempts = attempts + 1, last_error = ?, error_code = ?, "
            "error_status = ?, failed_at = CASE WHEN ? IS NULL THEN ? ELSE NULL END "
            "WHERE session_id = ?",
            (error.detail, error.code, error.status, retry_at, utc_now_text(), session_id),
        )
        if retry_at is not None:
            conn.execute(
                f"UPDATE mpps SET next_attempt_at = MAX(next_attempt_at, ?) WHERE {_PENDING}",
                (retry_at,),
            )


def step_figures(conn: sqlite3.Connection) -> StepFigures:
    """How many steps are queued, wait for storage, and were refused."""
    row = conn.execute(
        f"SELECT COALESCE(SUM({_PENDING}), 0), COALESCE(SUM({_PENDING} AND {_WAITING}), 0), "
        "COALESCE(SUM(failed_at IS NOT NULL), 0) FROM mpps"
    ).fetchone()
    return StepFigures(queued=int(row[0]), waiting=int(row[1]), failed=int(row[2]))
