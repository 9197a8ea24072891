"""Patient sessions in the ledger: opening, ending, flagging, their series.

A session binds one configured device (by name) to a patient context; at most one
is open per device (the ``sessions_open`` unique index). Opening one on a device
that has one ends the old one in the same transaction. ``session_series`` gives
each (session, kind of object) one Series Instance UID and number, minted once.
``export_bindings`` remembers which session the first file of a driver-chosen
study (a 3D export) was bound to, so every file of the export gets one study.

Blocking functions taking a connection, run on the ledger thread. The rows carry
patient data: for the context stage, the authenticated page and the API only.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Final

from pydantic import TypeAdapter

from gateway.core.capture import Laterality, PatientContext
from gateway.core.context import LesionContext, OrderContext, SessionSource
from gateway.core.uids import new_uid
from gateway.spool.records import PATIENT_RECORD
from gateway.spool.schema import transaction, utc_now_text

__all__ = [
    "ORDER_RECORD",
    "SessionRow",
    "capture_counts",
    "end_session",
    "export_binding",
    "get_session",
    "lesion_context_of",
    "list_sessions",
    "next_instance_number",
    "open_session",
    "open_session_ids",
    "open_session_of",
    "record_export_binding",
    "series_for",
    "set_session_sensitive",
    "study_of_item",
    "study_started",
]

ORDER_RECORD: Final = TypeAdapter(OrderContext)
"""A worklist session's order as stored in ``order_json``."""

_COLUMNS = (
    "id, device, source, patient_json, order_json, worklist_key, study_uid, "
    "study_description, opened_at, opened_by, operator_name, closed_at, closed_by, "
    "lesion_id, sensitive"
)


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One session as stored (patient data)."""

    id: int
    device: str
    source: SessionSource
    patient: PatientContext
    order: OrderContext | None
    worklist_key: str | None
    study_uid: str
    study_description: str
    opened_at: str
    opened_by: str
    operator_name: str
    closed_at: str | None
    closed_by: str | None
    lesion_id: int | None
    sensitive: bool


def _row(r: sqlite3.Row) -> SessionRow:
    return SessionRow(
        id=int(r["id"]),
        device=r["device"],
        source=SessionSource(r["source"]),
        patient=PATIENT_RECORD.validate_python(json.loads(r["patient_json"])),
        order=None if r["order_json"] is None else ORDER_RECORD.validate_json(r["order_json"]),
        worklist_key=r["worklist_key"],
        study_uid=r["study_uid"],
        study_description=r["study_description"],
        opened_at=r["opened_at"],
        opened_by=r["opened_by"],
        operator_name=r["operator_name"],
        closed_at=r["closed_at"],
        closed_by=r["closed_by"],
        lesion_id=r["lesion_id"],
        sensitive=bool(r["sensitive"]),
    )


def open_session(
    conn: sqlite3.Connection,
    *,
    device: str,
    source: SessionSource,
    patient: PatientContext,
    order: OrderContext | None,
    worklist_key: str | None,
    study_uid: str | None,
    study_description: str,
    opened_by: str,
    operator_name: str,
) -> tuple[int, SessionRow | None]:
    """Open a session on ``device``, ending the one open there (one transaction).

    ``study_uid`` None: the study of another session for the same worklist item,
    else a new one (minted once, here). Returns the new id and the ended session.
    """
    now = utc_now_text()
    with transaction(conn):
        old = open_session_of(conn, device)
        if old is not None:
            conn.execute(
                "UPDATE sessions SET closed_at = ?, closed_by = ? WHERE id = ?",
                (now, opened_by, old.id),
            )
        if study_uid is None:
            study_uid = (study_of_item(conn, worklist_key) if worklist_key else None) or new_uid()
        cur = conn.execute(
            "INSERT INTO sessions (device, source, patient_json, order_json, worklist_key, "
            "study_uid, study_description, opened_at, opened_by, operator_name) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                device,
                str(source),
                PATIENT_RECORD.dump_json(patient).decode(),
                None if order is None else ORDER_RECORD.dump_json(order).decode(),
                worklist_key,
                study_uid,
                study_description,
                now,
                opened_by,
                operator_name,
            ),
        )
        assert cur.lastrowid is not None
    ended = None if old is None else get_session(conn, old.id)
    return cur.lastrowid, ended


def study_of_item(conn: sqlite3.Connection, worklist_key: str | None) -> str | None:
    """The study of an earlier session for worklist item ``worklist_key`` (any device)."""
    if not worklist_key:
        return None
    row = conn.execute(
        "SELECT study_uid FROM sessions WHERE worklist_key = ? ORDER BY id LIMIT 1",
        (worklist_key,),
    ).fetchone()
    return None if row is None else str(row[0])


def end_session(conn: sqlite3.Connection, session_id: int, closed_by: str) -> bool:
    """End an open session; False if it was not open."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE sessions SET closed_at = ?, closed_by = ? WHERE id = ? AND closed_at IS NULL",
            (utc_now_text(), closed_by, session_id),
        )
    return cur.rowcount == 1


def get_session(conn: sqlite3.Connection, session_id: int) -> SessionRow | None:
    """The session with id ``session_id``."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id = ?", (session_id,)).fetchone()
    return None if row is None else _row(row)


def open_session_of(conn: sqlite3.Connection, device: str) -> SessionRow | None:
    """The session open on ``device``, if any."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM sessions WHERE device = ? AND closed_at IS NULL", (device,)
    ).fetchone()
    return None if row is None else _row(row)


def list_sessions(conn: sqlite3.Connection, *, open_only: bool = True) -> list[SessionRow]:
    """Sessions, newest first (only open ones unless ``open_only`` is false)."""
    where = "WHERE closed_at IS NULL " if open_only else ""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM sessions {where}ORDER BY id DESC").fetchall()
    return [_row(r) for r in rows]


def open_session_ids(conn: sqlite3.Connection) -> dict[str, int]:
    """Device name → id of its open session (no patient data: for status)."""
    return {
        str(device): int(sid)
        for device, sid in conn.execute("SELECT device, id FROM sessions WHERE closed_at IS NULL")
    }


def capture_counts(conn: sqlite3.Connection, session_ids: list[int]) -> dict[int, int]:
    """Session id → captures bound to it."""
    if not session_ids:
        return {}
    marks = ",".join("?" * len(session_ids))
    counts = dict.fromkeys(session_ids, 0)
    for sid, n in conn.execute(
        f"SELECT session_id, COUNT(*) FROM captures WHERE session_id IN ({marks}) "
        "GROUP BY session_id",
        session_ids,
    ):
        counts[int(sid)] = int(n)
    return counts


def set_session_sensitive(conn: sqlite3.Connection, session_id: int, sensitive: bool) -> bool:
    """Flag (or unflag) an open session; False if it is not open."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE sessions SET sensitive = ? WHERE id = ? AND closed_at IS NULL",
            (int(sensitive), session_id),
        )
    return cur.rowcount == 1


def lesion_context_of(conn: sqlite3.Connection, lesion_id: int | None) -> LesionContext | None:
    """The lesion registry row ``lesion_id`` as a capture's :class:`LesionContext`."""
    if lesion_id is None:
        return None
    row = conn.execute(
        "SELECT tracking_id, tracking_uid, site, site_scheme, laterality, description "
        "FROM lesions WHERE id = ?",
        (lesion_id,),
    ).fetchone()
    if row is None:
        return None
    return LesionContext(
        tracking_id=row[0],
        tracking_uid=row[1],
        site=row[2],
        site_scheme=row[3],
        laterality=None if row[4] is None else Laterality(row[4]),
        description=row[5],
    )


def study_started(conn: sqlite3.Connection, study_uid: str) -> str:
    """When the first session of study ``study_uid`` opened (ISO 8601; a worklist
    item's study is shared by every device's session for it)."""
    row = conn.execute(
        "SELECT min(opened_at) FROM sessions WHERE study_uid = ?", (study_uid,)
    ).fetchone()
    return "" if row is None or row[0] is None else str(row[0])


def series_for(conn: sqlite3.Connection, session_id: int, kind: str) -> tuple[str, int]:
    """The (Series Instance UID, Series Number) of ``kind`` objects in a session,
    minted the first time. Numbers count from 1 within the session's *study*: the
    sessions of every device on one worklist item share its study, and a viewer
    should not show two series numbered 1 there."""
    with transaction(conn):
        row = conn.execute(
            "SELECT series_uid, series_number FROM session_series "
            "WHERE session_id = ? AND kind = ?",
            (session_id, kind),
        ).fetchone()
        if row is not None:
            return str(row[0]), int(row[1])
        (highest,) = conn.execute(
            "SELECT COALESCE(MAX(x.series_number), 0) FROM session_series x "
            "JOIN sessions s ON s.id = x.session_id "
            "WHERE s.study_uid = (SELECT study_uid FROM sessions WHERE id = ?)",
            (session_id,),
        ).fetchone()
        uid = new_uid()
        conn.execute(
            "INSERT INTO session_series (session_id, kind, series_uid, series_number) "
            "VALUES (?, ?, ?, ?)",
            (session_id, kind, uid, int(highest) + 1),
        )
    return uid, int(highest) + 1


def next_instance_number(conn: sqlite3.Connection, series_uid: str) -> int:
    """The Instance Number of the next object of a session series (1, 2, …)."""
    with transaction(conn):
        conn.execute(
            "UPDATE session_series SET instances = instances + 1 WHERE series_uid = ?",
            (series_uid,),
        )
        row = conn.execute(
            "SELECT instances FROM session_series WHERE series_uid = ?", (series_uid,)
        ).fetchone()
    return 1 if row is None else int(row[0])


def export_binding(conn: sqlite3.Connection, driver_study_uid: str) -> tuple[bool, int | None]:
    """(known, session id) of the first file of a driver-chosen study."""
    row = conn.execute(
        "SELECT session_id FROM export_bindings WHERE driver_study_uid = ?", (driver_study_uid,)
    ).fetchone()
    if row is None:
        return False, None
    return True, None if row[0] is None else int(row[0])


def record_export_binding(
    conn: sqlite3.Connection, driver_study_uid: str, session_id: int | None
) -> None:
    """Remember the binding of a driver-chosen study's first file (first one wins)."""
    with transaction(conn):
        conn.execute(
            "INSERT OR IGNORE INTO export_bindings (driver_study_uid, session_id) VALUES (?, ?)",
            (driver_study_uid, session_id),
        )
