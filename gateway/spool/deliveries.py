"""Deliveries in the ledger: one row per capture and destination, from PENDING to COMMITTED.

Blocking functions taking a connection; the forwarders run them on the ledger
thread (:class:`~gateway.spool.ledger.Ledger`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core.errors import DeliveryError
from gateway.spool.schema import transaction, utc_now_text
from gateway.spool.states import CaptureState, DeliveryState

log = logging.getLogger(__name__)

__all__ = [
    "DeliveryOutcome",
    "DueDelivery",
    "Refused",
    "Retry",
    "Sent",
    "confirm_sent",
    "due_deliveries",
    "next_attempt_time",
    "pending_count",
    "record_outcomes",
    "record_refused",
    "record_retry",
    "record_sent",
    "record_substitute",
    "refresh_capture_state",
    "retry_now",
    "stuck_count",
]


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery ready to be attempted (of the capture with spool id ``spool_id``)."""

    spool_id: int
    destination: str
    attempts: int
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    dicom_name: str
    sent_sop_class_uid: str | None = None
    """The class of the derived object this destination gets instead (``fallback =
    "compatible"``); None: the capture itself."""
    sent_sop_instance_uid: str | None = None


def due_deliveries(
    conn: sqlite3.Connection, destination: str, now: float, limit: int
) -> list[DueDelivery]:
    """Pending deliveries to ``destination`` whose time has come: high priority first (a
    route's ``priority = "high"``), then the least tried, then the newest capture."""
    rows = conn.execute(
        "SELECT d.capture_id, d.destination, d.attempts, c.sop_instance_uid, c.sop_class_uid, "
        "c.transfer_syntax_uid, c.dicom_name, d.sent_sop_class_uid, d.sent_sop_instance_uid "
        "FROM deliveries d JOIN captures c "
        "ON c.id = d.capture_id WHERE d.destination = ? AND d.state = ? AND c.state = ? "
        "AND d.next_attempt_at <= ? ORDER BY d.priority DESC, d.attempts ASC, d.capture_id DESC "
        "LIMIT ?",
        (destination, DeliveryState.PENDING, CaptureState.WRAPPED, now, limit),
    ).fetchall()
    return [
        DueDelivery(
            spool_id=r["capture_id"],
            destination=r["destination"],
            attempts=r["attempts"],
            sop_instance_uid=r["sop_instance_uid"],
            sop_class_uid=r["sop_class_uid"],
            transfer_syntax_uid=r["transfer_syntax_uid"],
            dicom_name=r["dicom_name"],
            sent_sop_class_uid=r["sent_sop_class_uid"],
            sent_sop_instance_uid=r["sent_sop_instance_uid"],
        )
        for r in rows
    ]


def next_attempt_time(conn: sqlite3.Connection, destination: str) -> float | None:
    """When the earliest pending delivery to ``destination`` is due, if any."""
    row = conn.execute(
        "SELECT MIN(d.next_attempt_at) FROM deliveries d JOIN captures c ON c.id = d.capture_id "
        "WHERE d.destination = ? AND d.state = ? AND c.state = ?",
        (destination, DeliveryState.PENDING, CaptureState.WRAPPED),
    ).fetchone()
    value = row[0]
    return None if value is None else float(value)


def refresh_capture_state(conn: sqlite3.Connection, spool_id: int, now: str) -> None:
    """Derive a delivered capture's state from its deliveries (inside a transaction).

    All deliveries COMMITTED → COMMITTED; all SENT or COMMITTED → SENT; any still
    PENDING → WRAPPED (a capture goes back to WRAPPED when the PACS reports that it
    could not commit it and it is sent again). A FAILED delivery (a destination
    refused the capture) holds back only itself: the others go on, and once none is
    PENDING or SENT any more the capture is QUARANTINED (its reason, set by
    :func:`record_refused`, names the destination), so it is never COMMITTED, nor
    purged, while a delivery is FAILED. QUARANTINED captures are left alone.
    """
    counts = dict(
        conn.execute(
            "SELECT state, COUNT(*) FROM deliveries WHERE capture_id = ? GROUP BY state",
            (spool_id,),
        ).fetchall()
    )
    total = sum(counts.values())
    if total == 0:
        return
    if counts.get(DeliveryState.FAILED):
        if counts.get(DeliveryState.PENDING):
            state = CaptureState.WRAPPED
        elif counts.get(DeliveryState.SENT):
            state = CaptureState.SENT
        else:
            state = CaptureState.QUARANTINED
    elif counts.get(DeliveryState.COMMITTED, 0) == total:
        state = CaptureState.COMMITTED
    elif counts.get(DeliveryState.PENDING, 0) == 0:
        state = CaptureState.SENT
    else:
        state = CaptureState.WRAPPED
    conn.execute(
        "UPDATE captures SET state = ?, updated_at = ? WHERE id = ? AND state IN (?, ?, ?) "
        "AND state != ?",
        (
            state,
            now,
            spool_id,
            CaptureState.WRAPPED,
            CaptureState.SENT,
            CaptureState.COMMITTED,
            state,
        ),
    )


def _sent(
    conn: sqlite3.Connection, spool_id: int, destination: str, stamp: str, now: float
) -> None:
    cur = conn.execute(
        "UPDATE deliveries SET state = ?, attempts = attempts + 1, sent_at = ?, "
        "sent_epoch = ?, last_error = NULL, error_code = NULL, error_status = NULL, "
        "commit_txn = NULL "
        "WHERE capture_id = ? AND destination = ?",
        (DeliveryState.SENT, stamp, now, spool_id, destination),
    )
    if cur.rowcount == 0:  # withdrawn by its routes (a sensitive flag) while in flight
        log.warning(
            "spool id %d reached %s although its routes withdrew it while it was being sent",
            spool_id,
            destination,
        )
    refresh_capture_state(conn, spool_id, stamp)


def _retry(
    conn: sqlite3.Connection,
    spool_id: int,
    destination: str,
    error: DeliveryError,
    next_attempt_at: float,
) -> None:
    conn.execute(
        "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, error_code = ?, "
        "error_status = ?, next_attempt_at = ? WHERE capture_id = ? AND destination = ?",
        (error.detail, error.code, error.status, next_attempt_at, spool_id, destination),
    )


def _refused(
    conn: sqlite3.Connection, spool_id: int, destination: str, error: DeliveryError, stamp: str
) -> None:
    conn.execute(
        "UPDATE deliveries SET state = ?, attempts = attempts + 1, last_error = ?, "
        "error_code = ?, error_status = ? WHERE capture_id = ? AND destination = ?",
        (DeliveryState.FAILED, error.detail, error.code, error.status, spool_id, destination),
    )
    conn.execute(
        "UPDATE captures SET reason = ?, updated_at = ? WHERE id = ?",
        (f"{destination} refused it: {error.detail}", stamp, spool_id),
    )
    refresh_capture_state(conn, spool_id, stamp)


def confirm_sent(conn: sqlite3.Connection, spool_id: int, destination: str, stamp: str) -> bool:
    """SENT → COMMITTED for one delivery (the capture too once all are), inside the
    caller's transaction; False if the delivery was not SENT."""
    cur = conn.execute(
        "UPDATE deliveries SET state = ?, committed_at = ?, commit_txn = NULL "
        "WHERE capture_id = ? AND destination = ? AND state = ?",
        (DeliveryState.COMMITTED, stamp, spool_id, destination, DeliveryState.SENT),
    )
    if cur.rowcount:
        refresh_capture_state(conn, spool_id, stamp)
    return bool(cur.rowcount)


def record_sent(
    conn: sqlite3.Connection, spool_id: int, destination: str, now: float | None = None
) -> None:
    """The destination stored the instance: delivery SENT (capture SENT when all are)."""
    with transaction(conn):
        _sent(conn, spool_id, destination, utc_now_text(), now or time.time())


def record_retry(
    conn: sqlite3.Connection,
    spool_id: int,
    destination: str,
    error: DeliveryError,
    next_attempt_at: float,
) -> None:
    """Count a failed attempt, keep why it failed and schedule the next one."""
    with transaction(conn):
        _retry(conn, spool_id, destination, error, next_attempt_at)


def record_refused(
    conn: sqlite3.Connection, spool_id: int, destination: str, error: DeliveryError
) -> None:
    """The destination refused the instance for good: that delivery FAILED, with the
    reason on the capture; the capture is QUARANTINED once no other destination is
    still to get or confirm it (:func:`refresh_capture_state`)."""
    with transaction(conn):
        _refused(conn, spool_id, destination, error, utc_now_text())


@dataclass(frozen=True, slots=True)
class Sent:
    """The destination stored the instance (``confirmed``: and its answer confirms that
    it keeps it, so the delivery is COMMITTED at once)."""

    spool_id: int
    confirmed: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    """A failed attempt, to be tried again at ``next_attempt_at`` (epoch seconds)."""

    spool_id: int
    error: DeliveryError
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class Refused:
    """The destination refused the instance for good."""

    spool_id: int
    error: DeliveryError


DeliveryOutcome = Sent | Retry | Refused
"""One delivery's outcome as :func:`record_outcomes` records it."""


def record_outcomes(
    conn: sqlite3.Connection,
    destination: str,
    outcomes: Sequence[DeliveryOutcome],
    now: float | None = None,
) -> int:
    """Record the outcomes of (part of) a batch sent to ``destination`` in ONE
    transaction, as :func:`record_sent`, :func:`record_retry` and
    :func:`record_refused` each would; return how many deliveries to ``destination``
    are still PENDING afterwards.

    One commit (one ``fdatasync``) for the whole group instead of one per instance. A
    crash before it commits loses nothing: the deliveries are still PENDING and are
    sent again under the same SOP Instance UIDs (the PACS keeps one instance).
    """
    stamp = utc_now_text()
    epoch = now or time.time()
    with transaction(conn):
        for outcome in outcomes:
            if isinstance(outcome, Sent):
                _sent(conn, outcome.spool_id, destination, stamp, epoch)
                if outcome.confirmed:
                    confirm_sent(conn, outcome.spool_id, destination, stamp)
            elif isinstance(outcome, Retry):
                _retry(conn, outcome.spool_id, destination, outcome.error, outcome.next_attempt_at)
            else:
                _refused(conn, outcome.spool_id, destination, outcome.error, stamp)
        return pending_count(conn, destination)


def pending_count(conn: sqlite3.Connection, destination: str) -> int:
    """How many deliveries to ``destination`` are PENDING (due or not, tried or not)."""
    row = conn.execute(
        "SELECT COUNT(*) FROM deliveries WHERE destination = ? AND state = ?",
        (destination, DeliveryState.PENDING),
    ).fetchone()
    return int(row[0])


def record_substitute(
    conn: sqlite3.Connection,
    spool_id: int,
    destination: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    next_attempt_at: float,
) -> None:
    """``destination`` gets the derived object (class, instance) instead of the
    capture from now on (``fallback = "compatible"``), from ``next_attempt_at``."""
    with transaction(conn):
        conn.execute(
            "UPDATE deliveries SET sent_sop_class_uid = ?, sent_sop_instance_uid = ?, "
            "next_attempt_at = MIN(next_attempt_at, ?) WHERE capture_id = ? AND destination = ?",
            (sop_class_uid, sop_instance_uid, next_attempt_at, spool_id, destination),
        )


def retry_now(conn: sqlite3.Connection, destination: str, now: float) -> int:
    """Make every pending delivery to ``destination`` due now (link restored);
    return how many are pending."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE deliveries SET next_attempt_at = MIN(next_attempt_at, ?) "
            "WHERE destination = ? AND state = ?",
            (now, destination, DeliveryState.PENDING),
        )
    return cur.rowcount


def stuck_count(
    conn: sqlite3.Connection, destination: str, arrived_before: str, *, unconfirmed: bool
) -> int:
    """Undelivered captures that arrived before ``arrived_before``.

    With ``unconfirmed`` (a destination with storage commitment), SENT but not yet
    committed counts as undelivered too.
    """
    open_states = [DeliveryState.PENDING] + ([DeliveryState.SENT] if unconfirmed else [])
    marks = ", ".join("?" for _ in open_states)
    row = conn.execute(
        "SELECT COUNT(*) FROM deliveries d JOIN captures c ON c.id = d.capture_id "
        f"WHERE d.destination = ? AND d.state IN ({marks}) AND c.state IN (?, ?) "
        "AND c.received_at < ?",
        (
            destination,
            *open_states,
            CaptureState.WRAPPED,
            CaptureState.SENT,
            arrived_before,
        ),
    ).fetchone()
    return int(row[0])
