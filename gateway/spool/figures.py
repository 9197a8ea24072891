"""Figures the status stages show, read from the ledger in one go (blocking).

The state document (:mod:`gateway.status.snapshot`) reads :func:`spool_figures` on
the ledger thread; the local page and ``/metrics`` (:mod:`gateway.status.web.data`)
read :func:`page_figures` and :func:`recent_captures` on a read-only connection of
their own. Only columns without patient data are selected: never ``patient_json``,
never file names, never device capture ids.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import DeliveryError, DeliveryErrorCode
from gateway.spool.admin import RESOLVED_PREFIX
from gateway.spool.schema import ERROR_CODES_SINCE, RETRY_NOTE, legacy_error, schema_version
from gateway.spool.states import CaptureState, DeliveryState

__all__ = [
    "DELIVERED",
    "WAITING",
    "DestinationCounts",
    "PageFigures",
    "RecentCapture",
    "SpoolFigures",
    "page_figures",
    "recent_captures",
    "sop_instance_states",
    "spool_figures",
]

WAITING = (CaptureState.CAPTURED, CaptureState.WRAPPED)
"""Captures not yet delivered anywhere."""
DELIVERED = (CaptureState.SENT, CaptureState.COMMITTED, CaptureState.PURGED)
"""Captures every destination has stored."""


@dataclass(frozen=True, slots=True)
class SpoolFigures:
    """What the ledger says, in one read."""

    counts: dict[str, int]
    oldest_undelivered: str | None
    awaiting_commitment: int
    oldest_sent_epoch: float | None
    pending: dict[str, int]
    quarantined_open: int = 0
    """Captures QUARANTINED now and not resolved by a technician (the page's "set
    aside"): a retried capture leaves QUARANTINED, a resolved one stays there."""


def _quarantined_open(conn: sqlite3.Connection) -> int:
    return int(
        conn.execute(
            "SELECT COUNT(*) FROM captures WHERE state = ? AND "
            "(reason IS NULL OR reason NOT LIKE ?)",
            (CaptureState.QUARANTINED, RESOLVED_PREFIX + "%"),
        ).fetchone()[0]
    )


def spool_figures(conn: sqlite3.Connection) -> SpoolFigures:
    """Counts and oldest times for the snapshot (blocking; on the ledger thread)."""
    counts = {str(state): 0 for state in CaptureState}
    for state, n in conn.execute("SELECT state, COUNT(*) FROM captures GROUP BY state"):
        counts[str(state)] = int(n)
    row = conn.execute(
        "SELECT MIN(received_at) FROM captures WHERE state IN (?, ?)",
        (CaptureState.CAPTURED, CaptureState.WRAPPED),
    ).fetchone()
    oldest = None if row is None or row[0] is None else str(row[0])
    row = conn.execute(
        "SELECT COUNT(*), MIN(d.sent_epoch) FROM deliveries d JOIN captures c "
        "ON c.id = d.capture_id WHERE d.state = ? AND c.state != ?",
        (DeliveryState.SENT, CaptureState.QUARANTINED),
    ).fetchone()
    awaiting = int(row[0]) if row else 0
    oldest_sent = None if row is None or row[1] is None else float(row[1])
    pending = {
        str(dest): int(n)
        for dest, n in conn.execute(
            "SELECT d.destination, COUNT(*) FROM deliveries d JOIN captures c "
            "ON c.id = d.capture_id WHERE d.state = ? AND c.state != ? GROUP BY d.destination",
            (DeliveryState.PENDING, CaptureState.QUARANTINED),
        )
    }
    return SpoolFigures(counts, oldest, awaiting, oldest_sent, pending, _quarantined_open(conn))


@dataclass(frozen=True, slots=True)
class DestinationCounts:
    """One destination's deliveries, and why the newest failing one fails."""

    pending: int = 0
    sent: int = 0
    committed: int = 0
    refused: int = 0
    retrying: int = 0
    last_error: DeliveryError | None = None


@dataclass(frozen=True, slots=True)
class PageFigures:
    """What the page's overview and ``/metrics`` read from the ledger."""

    counts: dict[str, int]
    quarantined_open: int
    oldest_waiting: str | None
    first_unconfirmed_epoch: float | None
    delivered_by_class: dict[str, int]
    quarantined_by_class: dict[str, int]
    destinations: dict[str, DestinationCounts]


def _table_counts(conn: sqlite3.Connection, sql: str, *args: Any) -> dict[str, int]:
    return {str(k or "unknown"): int(v) for k, v in conn.execute(sql, args).fetchall()}


def _failure(coded: bool, text: str | None, code: str | None, status: Any) -> DeliveryError | None:
    if text is None:
        return None
    if not coded:  # a ledger the service has not upgraded to v5 yet
        return legacy_error(text)
    try:
        kind = DeliveryErrorCode(code or "")
    except ValueError:  # NULL, or a code of a newer DermGate
        kind = DeliveryErrorCode.OTHER
    return DeliveryError(kind, text, None if status is None else int(status))


def page_figures(conn: sqlite3.Connection, destinations: list[tuple[str, bool]]) -> PageFigures:
    """Counts by state and class, the oldest waiting capture, and per destination its
    deliveries by state (``destinations``: name, uses storage commitment)."""
    counts = {str(s): 0 for s in CaptureState}
    counts.update(_table_counts(conn, "SELECT state, COUNT(*) FROM captures GROUP BY state"))
    quarantined_open = _quarantined_open(conn)
    oldest = conn.execute(
        "SELECT MIN(received_at) FROM captures WHERE state IN (?, ?)", WAITING
    ).fetchone()[0]
    by_class = "json_extract(device_json, '$.device_class')"
    delivered_by_class = _table_counts(
        conn,
        f"SELECT {by_class}, COUNT(*) FROM captures WHERE state IN (?, ?, ?) GROUP BY 1",
        *DELIVERED,
    )
    quarantined_by_class = _table_counts(
        conn,
        f"SELECT {by_class}, COUNT(*) FROM captures WHERE state = ? GROUP BY 1",
        CaptureState.QUARANTINED,
    )
    commit_names = [n for n, c in destinations if c]
    first = None
    if commit_names:
        marks = ",".join("?" * len(commit_names))
        first = conn.execute(
            f"SELECT MIN(sent_epoch) FROM deliveries WHERE state = ? AND destination IN ({marks})",
            (DeliveryState.SENT, *commit_names),
        ).fetchone()[0]
    coded = schema_version(conn) >= ERROR_CODES_SINCE
    why = "error_code, error_status" if coded else "NULL, NULL"
    per_destination: dict[str, DestinationCounts] = {}
    for name, _ in destinations:
        by_state = _table_counts(
            conn,
            "SELECT state, COUNT(*) FROM deliveries WHERE destination = ? GROUP BY state",
            name,
        )
        # SQLite: the bare columns come from the row MAX(last_error) picked.
        failing = conn.execute(
            f"SELECT COUNT(*), MAX(last_error), {why} FROM deliveries d JOIN captures c "
            "ON c.id = d.capture_id WHERE d.destination = ? AND d.state = ? "
            "AND c.state = ? AND d.last_error IS NOT NULL AND d.last_error != ?",
            (name, DeliveryState.PENDING, CaptureState.WRAPPED, RETRY_NOTE),
        ).fetchone()
        per_destination[name] = DestinationCounts(
            pending=by_state.get(DeliveryState.PENDING, 0),
            sent=by_state.get(DeliveryState.SENT, 0),
            committed=by_state.get(DeliveryState.COMMITTED, 0),
            refused=by_state.get(DeliveryState.FAILED, 0),
            retrying=int(failing[0]),
            last_error=_failure(coded, failing[1], failing[2], failing[3]),
        )
    return PageFigures(
        counts=counts,
        quarantined_open=quarantined_open,
        oldest_waiting=oldest,
        first_unconfirmed_epoch=None if first is None else float(first),
        delivered_by_class=delivered_by_class,
        quarantined_by_class=quarantined_by_class,
        destinations=per_destination,
    )


@dataclass(frozen=True, slots=True)
class RecentCapture:
    """One line of the page's spool view (no patient data, no device capture id)."""

    spool_id: int
    state: str
    received_at: str
    driver: str
    model: str | None
    device_class: str | None
    reason: str | None
    last_error: str | None
    sensitive: bool = False  # flagged by a technician or by site policy (ledger v6)


def recent_captures(
    conn: sqlite3.Connection, state: str | None = None, limit: int = 200
) -> list[RecentCapture]:
    """The newest ``limit`` captures (optionally only those in ``state``)."""
    where, args = ("WHERE c.state = ?", [state]) if state else ("", [])
    sensitive = "c.sensitive" if schema_version(conn) >= 6 else "0"
    rows = conn.execute(
        "SELECT c.id, c.state, c.received_at, c.driver, "
        "json_extract(c.device_json, '$.model') AS model, "
        "json_extract(c.device_json, '$.device_class') AS device_class, c.reason, "
        "(SELECT d.last_error FROM deliveries d WHERE d.capture_id = c.id "
        f" AND d.last_error IS NOT NULL LIMIT 1) AS last_error, {sensitive} "
        f"FROM captures c {where} ORDER BY c.id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [
        RecentCapture(
            spool_id=r[0],
            state=r[1],
            received_at=r[2],
            driver=r[3],
            model=r[4],
            device_class=r[5],
            reason=r[6],
            last_error=r[7],
            sensitive=bool(r[8]),
        )
        for r in rows
    ]


def sop_instance_states(conn: sqlite3.Connection) -> dict[str, str]:
    """SOP Instance UID → state of every capture (the demo watches these)."""
    rows = conn.execute("SELECT sop_instance_uid, state FROM captures").fetchall()
    return {str(r[0]): str(r[1]) for r in rows}
