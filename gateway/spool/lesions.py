"""The lesion registry: each patient's lesions, with labels and Tracking UIDs kept for ever.

One row per lesion of one patient (Patient ID + Issuer of Patient ID): a Tracking ID
(a readable label unique for that patient, ``L01``, ``L02``… or the label a device
gave it), a Tracking UID minted once when the lesion is created and reused at every
later visit and on every device, the CID 4029 site, laterality and a description.
Rows are never deleted or relabelled, so a label is never reused for another lesion
of the same patient.

A label names a lesion **only within one patient**: "L03" of one patient and "L03" of
another are different lesions with different Tracking UIDs.

Tracking UIDs: a lesion created by the page or the API gets a fresh random UID
(:func:`gateway.core.uids.new_uid`); a lesion created because a device named it
(:func:`lesion_for_device_label`) gets the UID derived from patient and label
(:func:`gateway.core.uids.tracking_uid`), the one the DICOM builders already write for
a device-named lesion of a known patient without a session, so that such a lesion
has the same Tracking UID whether or not a session was open. Either way the UID is
stored when the row is created and only ever read back afterwards.

Sessions point at their current lesion (``sessions.lesion_id``):
:func:`set_session_lesion` and :func:`session_lesion`. Every write runs in a
transaction of its own, or inside the caller's when one is already open.

Patient data: none of this is logged or shown outside an authenticated page or API.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from gateway.core.capture import Laterality, clean_device_string
from gateway.core.context import LesionContext
from gateway.core.uids import new_uid, tracking_uid
from gateway.spool.schema import transaction, utc_now_text

__all__ = [
    "TRACKING_ID_MAX",
    "LesionRow",
    "SessionTarget",
    "clean_label",
    "create_lesion",
    "find_or_create_lesion",
    "lesion_by_id",
    "lesion_by_tracking_id",
    "lesion_for_device_label",
    "patient_lesions",
    "session_lesion",
    "session_target",
    "set_session_lesion",
]

#: The longest Tracking ID kept (a device's label is clipped to it).
TRACKING_ID_MAX: Final = 64

_OWN_LABEL: Final = re.compile(r"L(\d{1,9})")


@dataclass(frozen=True, slots=True)
class LesionRow:
    """One lesion of the registry, as stored."""

    id: int
    patient_id: str
    issuer: str
    tracking_id: str
    tracking_uid: str
    site: str | None
    site_scheme: str
    laterality: Laterality | None
    description: str
    created_at: str

    def context(self) -> LesionContext:
        """What the objects of this lesion's captures carry."""
        return LesionContext(
            tracking_id=self.tracking_id,
            tracking_uid=self.tracking_uid,
            site=self.site,
            site_scheme=self.site_scheme,
            laterality=self.laterality,
            description=self.description,
        )


_COLUMNS: Final = (
    "id, patient_id, issuer, tracking_id, tracking_uid, site, site_scheme, laterality, "
    "description, created_at"
)


def _row(row: sqlite3.Row | tuple[object, ...]) -> LesionRow:
    values = tuple(row)
    laterality = values[7]
    return LesionRow(
        id=int(str(values[0])),
        patient_id=str(values[1]),
        issuer=str(values[2]),
        tracking_id=str(values[3]),
        tracking_uid=str(values[4]),
        site=None if values[5] is None else str(values[5]),
        site_scheme=str(values[6]),
        laterality=Laterality(str(laterality)) if laterality else None,
        description=str(values[8]),
        created_at=str(values[9]),
    )


def clean_label(label: str) -> str:
    """A device's lesion label as a Tracking ID: printable characters only, no
    backslash, at most :data:`TRACKING_ID_MAX` characters, trimmed ("" if nothing is
    left)."""
    return clean_device_string(label, TRACKING_ID_MAX)


def lesion_by_id(conn: sqlite3.Connection, lesion_id: int) -> LesionRow | None:
    """The lesion with row id ``lesion_id``, if any."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM lesions WHERE id = ?", (lesion_id,)).fetchone()
    return None if row is None else _row(row)


def lesion_by_tracking_id(
    conn: sqlite3.Connection, patient_id: str, issuer: str, tracking_id: str
) -> LesionRow | None:
    """The patient's lesion labelled ``tracking_id`` (exact match), if any."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM lesions WHERE patient_id = ? AND issuer = ? AND tracking_id = ?",
        (patient_id, issuer, tracking_id),
    ).fetchone()
    return None if row is None else _row(row)


def patient_lesions(conn: sqlite3.Connection, patient_id: str, issuer: str) -> list[LesionRow]:
    """Every lesion of the patient, oldest first."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM lesions WHERE patient_id = ? AND issuer = ? ORDER BY id",
        (patient_id, issuer),
    ).fetchall()
    return [_row(r) for r in rows]


def _next_label(conn: sqlite3.Connection, patient_id: str, issuer: str) -> str:
    """``L`` + one more than the highest ``L<n>`` label the patient has (``L01`` first)."""
    labels = conn.execute(
        "SELECT tracking_id FROM lesions WHERE patient_id = ? AND issuer = ?",
        (patient_id, issuer),
    ).fetchall()
    numbers = [int(m.group(1)) for (t,) in labels if (m := _OWN_LABEL.fullmatch(str(t)))]
    return f"L{max(numbers, default=0) + 1:02d}"


def _insert(
    conn: sqlite3.Connection,
    patient_id: str,
    issuer: str,
    tracking_id: str,
    uid: str,
    site: str | None,
    site_scheme: str,
    laterality: Laterality | None,
    description: str,
) -> LesionRow:
    cursor = conn.execute(
        "INSERT INTO lesions (patient_id, issuer, tracking_id, tracking_uid, site, site_scheme, "
        "laterality, description, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            patient_id,
            issuer,
            tracking_id,
            uid,
            site,
            site_scheme,
            None if laterality is None else laterality.value,
            description,
            utc_now_text(),
        ),
    )
    created = lesion_by_id(conn, int(cursor.lastrowid or 0))
    assert created is not None
    return created


@contextlib.contextmanager
def _atomic(conn: sqlite3.Connection) -> Iterator[None]:
    """A transaction of its own, or part of the caller's when one is open (so the
    context stage can bind a capture and map its device's label in one)."""
    if conn.in_transaction:
        yield
        return
    with transaction(conn):
        yield


def _require_patient(patient_id: str) -> None:
    if not patient_id:
        raise ValueError("a lesion needs a Patient ID")


def create_lesion(
    conn: sqlite3.Connection,
    patient_id: str,
    issuer: str,
    *,
    site: str | None,
    site_scheme: str = "SCT",
    laterality: Laterality | None = None,
    description: str = "",
) -> LesionRow:
    """A new lesion of the patient, labelled with the next free ``L<nn>`` and a fresh
    Tracking UID (a second mole on the same site is another lesion: no lookup)."""
    _require_patient(patient_id)
    with _atomic(conn):
        label = _next_label(conn, patient_id, issuer)
        return _insert(
            conn, patient_id, issuer, label, new_uid(), site, site_scheme, laterality, description
        )


def find_or_create_lesion(
    conn: sqlite3.Connection,
    patient_id: str,
    issuer: str,
    *,
    site: str,
    site_scheme: str = "SCT",
    laterality: Laterality | None = None,
    description: str = "",
) -> tuple[LesionRow, bool]:
    """The patient's lesion with exactly this site, laterality and description (the
    oldest, if several), else a new one as :func:`create_lesion` makes it; and whether
    it was created."""
    _require_patient(patient_id)
    side = None if laterality is None else laterality.value
    with _atomic(conn):
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM lesions WHERE patient_id = ? AND issuer = ? AND site = ? "
            "AND site_scheme = ? AND laterality IS ? AND description = ? ORDER BY id LIMIT 1",
            (patient_id, issuer, site, site_scheme, side, description),
        ).fetchone()
        if row is not None:
            return _row(row), False
        label = _next_label(conn, patient_id, issuer)
        created = _insert(
            conn, patient_id, issuer, label, new_uid(), site, site_scheme, laterality, description
        )
        return created, True


def lesion_for_device_label(
    conn: sqlite3.Connection,
    patient_id: str,
    issuer: str,
    label: str,
    site: str | None,
    laterality: Laterality | None,
) -> LesionContext:
    """The lesion a device named ``label`` on this patient: found, or created with the
    cleaned label as Tracking ID.

    The same label on the same patient is the same lesion (a site or laterality the
    registry lacks is filled in from the device; one it has is kept). The label never
    identifies a lesion across patients. Raises ``ValueError`` for a label with
    nothing printable in it or an empty Patient ID.
    """
    _require_patient(patient_id)
    tracking_id = clean_label(label)
    if not tracking_id:
        raise ValueError("the device's lesion label has no printable characters")
    with _atomic(conn):
        found = lesion_by_tracking_id(conn, patient_id, issuer, tracking_id)
        if found is None:
            uid = tracking_uid(issuer, patient_id, tracking_id)
            return _insert(
                conn, patient_id, issuer, tracking_id, uid, site, "SCT", laterality, ""
            ).context()
        if (found.site is None and site) or (found.laterality is None and laterality):
            conn.execute(
                "UPDATE lesions SET site = COALESCE(site, ?), laterality = COALESCE(laterality, ?) "
                "WHERE id = ?",
                (site or None, None if laterality is None else laterality.value, found.id),
            )
            refreshed = lesion_by_id(conn, found.id)
            assert refreshed is not None
            found = refreshed
        return found.context()


@dataclass(frozen=True, slots=True)
class SessionTarget:
    """What the lesion desk needs of a session: its patient and whether it is open."""

    session_id: int
    patient_id: str
    issuer: str
    closed: bool
    lesion_id: int | None


def session_target(conn: sqlite3.Connection, session_id: int) -> SessionTarget | None:
    """The session's patient (from ``patient_json``'s ``patient_id`` and
    ``issuer_of_patient_id``), state and current lesion; None if no such session."""
    row = conn.execute(
        "SELECT id, patient_json, closed_at, lesion_id FROM sessions WHERE id = ?",
        (session_id,),
    ).fetchone()
    if row is None:
        return None
    patient = json.loads(row[1])
    return SessionTarget(
        session_id=int(row[0]),
        patient_id=str(patient.get("patient_id") or ""),
        issuer=str(patient.get("issuer_of_patient_id") or ""),
        closed=row[2] is not None,
        lesion_id=None if row[3] is None else int(row[3]),
    )


def set_session_lesion(conn: sqlite3.Connection, session_id: int, lesion_id: int | None) -> bool:
    """Make ``lesion_id`` the open session's current lesion (None: no lesion);
    False if the session is unknown or closed."""
    with _atomic(conn):
        cursor = conn.execute(
            "UPDATE sessions SET lesion_id = ? WHERE id = ? AND closed_at IS NULL",
            (lesion_id, session_id),
        )
        return cursor.rowcount == 1


def session_lesion(conn: sqlite3.Connection, session_id: int) -> LesionRow | None:
    """The session's current lesion, if it has one."""
    row = conn.execute(
        f"SELECT {', '.join('l.' + c.strip() for c in _COLUMNS.split(','))} "
        "FROM sessions s JOIN lesions l ON l.id = s.lesion_id WHERE s.id = ?",
        (session_id,),
    ).fetchone()
    return None if row is None else _row(row)
