"""Captures in the ledger: recording one, finding it, listing them, setting one aside.

Blocking functions taking a connection; the service runs them on the ledger thread
(:class:`~gateway.spool.ledger.Ledger`), the command line on its own connection.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.core.capture import CaptureOffer, DeviceIdentity, InstanceUIDs
from gateway.core.context import CaptureContext
from gateway.core.routing import RoutePlan
from gateway.spool.records import (
    context_from_json,
    context_to_json,
    device_from_json,
    device_to_json,
    offer_from_json,
    offer_to_json,
    patient_from_json,
    patient_to_json,
)
from gateway.spool.routing import create_deliveries
from gateway.spool.schema import transaction, utc_now_text
from gateway.spool.states import CaptureState

__all__ = [
    "REBUILT_DRIVER",
    "ListingRow",
    "SpoolEntry",
    "WrappedAtIntake",
    "captures_in_state",
    "find_capture",
    "get_capture",
    "insert_capture",
    "is_recorded",
    "listing",
    "mark_wrapped",
    "quarantine",
]


#: The driver name of a capture recorded by ``dermgate spool rebuild`` from the spool's
#: own files (:mod:`gateway.spool.rebuild`): its real driver was in the lost ledger.
REBUILT_DRIVER = "rebuilt"


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One capture as the ledger knows it (``spool_id``: the ledger's integer id; the
    device's own id for it is ``offer.device_capture_id``)."""

    spool_id: int
    driver: str
    device: DeviceIdentity
    offer: CaptureOffer
    uids: InstanceUIDs
    raw_name: str
    raw_size: int
    raw_sha256: str
    sop_class_uid: str | None
    transfer_syntax_uid: str | None
    dicom_name: str | None
    state: CaptureState
    reason: str | None
    received_at: str
    updated_at: str
    device_name: str | None = None
    session_id: int | None = None
    context: CaptureContext | None = None


@dataclass(frozen=True, slots=True)
class ListingRow:
    """One line of ``dermgate spool list``: no patient data by construction."""

    id: int
    state: str
    sop_instance_uid: str
    device: str
    device_capture_id: str
    attempts: int
    last_error: str | None
    reason: str | None
    received_at: str
    updated_at: str


_ENTRY_COLUMNS = (
    "id, driver, device_json, offer_json, study_uid, series_uid, sop_instance_uid, raw_name, "
    "raw_size, raw_sha256, sop_class_uid, transfer_syntax_uid, dicom_name, state, reason, "
    "received_at, updated_at, patient_json, device_name, session_id, context_json"
)


def _entry(row: sqlite3.Row) -> SpoolEntry:
    uids = InstanceUIDs(row["study_uid"], row["series_uid"], row["sop_instance_uid"])
    return SpoolEntry(
        spool_id=row["id"],
        driver=row["driver"],
        device=device_from_json(row["device_json"]),
        offer=offer_from_json(row["offer_json"], uids, patient_from_json(row["patient_json"])),
        uids=uids,
        raw_name=row["raw_name"],
        raw_size=row["raw_size"],
        raw_sha256=row["raw_sha256"],
        sop_class_uid=row["sop_class_uid"],
        transfer_syntax_uid=row["transfer_syntax_uid"],
        dicom_name=row["dicom_name"],
        state=CaptureState(row["state"]),
        reason=row["reason"],
        received_at=row["received_at"],
        updated_at=row["updated_at"],
        device_name=row["device_name"],
        session_id=row["session_id"],
        context=context_from_json(row["context_json"]),
    )


@dataclass(frozen=True, slots=True)
class WrappedAtIntake:
    """The capture was streamed straight into its DICOM file at intake."""

    dicom_name: str
    sop_class_uid: str
    transfer_syntax_uid: str
    destinations: RoutePlan | tuple[str, ...]


def insert_capture(
    conn: sqlite3.Connection,
    *,
    driver: str,
    device: DeviceIdentity,
    offer: CaptureOffer,
    uids: InstanceUIDs,
    raw_name: str,
    raw_size: int,
    raw_sha256: str,
    wrapped: WrappedAtIntake | None = None,
    spool_id: int | None = None,
    device_name: str | None = None,
    context: CaptureContext | None = None,
    held: str | None = None,
    sensitive: bool = False,
) -> int:
    """Record a durable capture; return its spool id (``spool_id`` when given: intake
    reserves it before the DICOM file that names it is written).

    The service and ``spool rebuild`` always give it (:mod:`gateway.spool.spool_ids`:
    never handed out before on this box). Without it SQLite takes the table's
    highest id + 1, which after a lost ledger may be one used before: only for
    scratch ledgers (tests, benchmarks).

    Normally in state CAPTURED (the raw device file is in ``raw/``). With
    ``wrapped`` the capture went straight into its DICOM file: ``raw_name`` is
    empty (the device's bytes are the file's pixel data fragment), the state is
    WRAPPED and its deliveries are created in the same transaction.

    ``device_name`` is the configured device that sent it; ``context`` the
    session context it was bound to (its ``session_id`` recorded too); ``held``
    a reason to keep it HELD (no patient yet) instead of CAPTURED. ``sensitive``
    flags it sensitive (as a ``context`` with sensitive content does), before any
    route sees it.
    """
    now = utc_now_text()
    if held is not None and wrapped is not None:
        raise ValueError("a held capture is never written as DICOM at intake")
    state = (
        CaptureState.HELD
        if held is not None
        else CaptureState.WRAPPED
        if wrapped
        else CaptureState.CAPTURED
    )
    with transaction(conn):
        cur = conn.execute(
            "INSERT INTO captures (id, driver, device_serial, device_capture_id, device_json, "
            "offer_json, raw_name, raw_size, raw_sha256, study_uid, series_uid, "
            "sop_instance_uid, state, received_at, updated_at, dicom_name, sop_class_uid, "
            "transfer_syntax_uid, patient_json, device_name, session_id, context_json, sensitive, "
            "reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                spool_id,
                driver,
                device.serial_number,
                offer.device_capture_id,
                device_to_json(device),
                offer_to_json(offer),
                raw_name,
                raw_size,
                raw_sha256,
                uids.study,
                uids.series,
                uids.sop_instance,
                state,
                now,
                now,
                wrapped.dicom_name if wrapped else None,
                wrapped.sop_class_uid if wrapped else None,
                wrapped.transfer_syntax_uid if wrapped else None,
                patient_to_json(offer.patient),
                device_name,
                context.session_id if context else None,
                context_to_json(context),
                int(sensitive or bool(context and context.sensitive)),
                held,
            ),
        )
        assert cur.lastrowid is not None
        if wrapped:
            create_deliveries(conn, cur.lastrowid, wrapped.destinations, time.time())
    return cur.lastrowid


def find_capture(
    conn: sqlite3.Connection, device_serial: str, device_capture_id: str
) -> SpoolEntry | None:
    """The capture a device already delivered under its id ``device_capture_id``, if any."""
    row = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM captures WHERE device_serial = ? AND device_capture_id = ?",
        (device_serial, device_capture_id),
    ).fetchone()
    return _entry(row) if row else None


def is_recorded(conn: sqlite3.Connection, sop_instance_uid: str, name: str) -> bool:
    """Does a capture hold this SOP Instance UID or a spooled file of this name?"""
    row = conn.execute(
        "SELECT 1 FROM captures WHERE sop_instance_uid = ? OR raw_name = ? OR dicom_name = ? "
        "LIMIT 1",
        (sop_instance_uid, name, name),
    ).fetchone()
    return row is not None


def get_capture(conn: sqlite3.Connection, spool_id: int) -> SpoolEntry | None:
    """The capture with spool id ``spool_id``."""
    row = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM captures WHERE id = ?", (spool_id,)
    ).fetchone()
    return _entry(row) if row else None


def captures_in_state(
    conn: sqlite3.Connection, state: CaptureState, limit: int = 100
) -> list[SpoolEntry]:
    """Captures in ``state``, newest first (fresh captures go before the backlog)."""
    rows = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM captures WHERE state = ? ORDER BY id DESC LIMIT ?",
        (state, limit),
    ).fetchall()
    return [_entry(r) for r in rows]


def mark_wrapped(
    conn: sqlite3.Connection,
    spool_id: int,
    *,
    dicom_name: str,
    sop_class_uid: str,
    transfer_syntax_uid: str,
    destinations: RoutePlan | Iterable[str],
    now: float,
) -> dict[str, int] | None:
    """CAPTURED → WRAPPED, creating a pending delivery for each destination its routes
    name (:func:`~gateway.spool.routing.create_deliveries`: set aside when none does).
    Returns destination → priority (empty: no route), None if it was not CAPTURED."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE captures SET state = ?, dicom_name = ?, sop_class_uid = ?, "
            "transfer_syntax_uid = ?, updated_at = ? WHERE id = ? AND state = ?",
            (
                CaptureState.WRAPPED,
                dicom_name,
                sop_class_uid,
                transfer_syntax_uid,
                utc_now_text(),
                spool_id,
                CaptureState.CAPTURED,
            ),
        )
        if not cur.rowcount:
            return None
        return create_deliveries(conn, spool_id, destinations, now)


def quarantine(conn: sqlite3.Connection, spool_id: int, reason: str) -> None:
    """Set a capture aside with a reason a technician can act on. Nothing is deleted."""
    with transaction(conn):
        conn.execute(
            "UPDATE captures SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
            (CaptureState.QUARANTINED, reason, utc_now_text(), spool_id),
        )


def listing(conn: sqlite3.Connection) -> list[ListingRow]:
    """Every capture, oldest first, with delivery attempts summed over destinations."""
    rows = conn.execute(
        "SELECT c.id, c.state, c.sop_instance_uid, c.driver, c.device_serial, "
        "c.device_capture_id, c.reason, c.received_at, c.updated_at, "
        "COALESCE(SUM(d.attempts), 0) AS attempts, "
        "(SELECT d2.last_error FROM deliveries d2 WHERE d2.capture_id = c.id "
        " AND d2.last_error IS NOT NULL LIMIT 1) AS last_error "
        "FROM captures c LEFT JOIN deliveries d ON d.capture_id = c.id "
        "GROUP BY c.id ORDER BY c.id"
    ).fetchall()
    return [
        ListingRow(
            id=r["id"],
            state=r["state"],
            sop_instance_uid=r["sop_instance_uid"],
            device=f"{r['driver']}:{r['device_serial']}",
            device_capture_id=r["device_capture_id"],
            attempts=r["attempts"],
            last_error=r["last_error"],
            reason=r["reason"],
            received_at=r["received_at"],
            updated_at=r["updated_at"],
        )
        for r in rows
    ]
