"""Ledger operations of Storage Commitment (blocking; run on the ledger thread).

A commitment transaction asks one destination to confirm a batch of SENT
instances. It is written to the ledger *before* the N-ACTION goes out, so a report
that arrives at once (Orthanc answers within milliseconds, sometimes before
N-ACTION-RSP) always finds it, and a restart still knows it. Rules:

* a transaction is OPEN until its report arrives (DONE) or it times out (EXPIRED);
  the deliveries of an expired transaction are asked about again in a new one;
* a committed instance's delivery becomes COMMITTED; the capture becomes COMMITTED
  when all its deliveries are;
* a failed instance is sent again (same SOP Instance UID): its delivery goes back to
  PENDING, the capture back to WRAPPED; after ``max_failures`` failed commitments
  the capture is QUARANTINED with the PACS's reason;
* destinations without commitment: a SENT delivery counts as COMMITTED (delivered)
  once it has been SENT for the configured retention.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from gateway.spool.ledger import refresh_capture_state, transaction, utc_now_text
from gateway.spool.states import CaptureState, DeliveryState

OPEN = "OPEN"
DONE = "DONE"
EXPIRED = "EXPIRED"

FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0119: "class/instance conflict",
    0x0122: "referenced SOP class not supported",
    0x0131: "duplicate transaction UID",
    0x0213: "resource limitation",
}


def describe_failure(code: int | None) -> str:
    """A failure reason code in words."""
    if code is None:
        return "no reason given"
    return f"0x{code:04X} {FAILURE_REASONS.get(code, 'unknown reason')}"


@dataclass(frozen=True, slots=True)
class CommitCandidate:
    """A SENT instance not yet asked about."""

    capture_id: int
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    """What a commitment report changed."""

    known: bool
    destination: str | None = None
    committed: int = 0
    resend: int = 0
    quarantined: int = 0
    committed_ids: tuple[int, ...] = ()
    quarantined_ids: tuple[int, ...] = ()


def uncommitted(conn: sqlite3.Connection, destination: str, limit: int) -> list[CommitCandidate]:
    """SENT deliveries to ``destination`` that no open transaction asks about."""
    rows = conn.execute(
        "SELECT d.capture_id, c.sop_class_uid, c.sop_instance_uid FROM deliveries d "
        "JOIN captures c ON c.id = d.capture_id WHERE d.destination = ? AND d.state = ? "
        "AND d.commit_txn IS NULL AND c.state != ? ORDER BY d.capture_id LIMIT ?",
        (destination, DeliveryState.SENT, CaptureState.QUARANTINED, limit),
    ).fetchall()
    return [CommitCandidate(r[0], r[1], r[2]) for r in rows]


def open_transaction(
    conn: sqlite3.Connection,
    destination: str,
    transaction_uid: str,
    capture_ids: list[int],
    now: float,
) -> None:
    """Persist a transaction and attach its deliveries, before the request is sent."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO commitments (transaction_uid, destination, created_epoch, state) "
            "VALUES (?, ?, ?, ?)",
            (transaction_uid, destination, now, OPEN),
        )
        conn.executemany(
            "UPDATE deliveries SET commit_txn = ? WHERE capture_id = ? AND destination = ?",
            [(transaction_uid, cid, destination) for cid in capture_ids],
        )


def mark_requested(conn: sqlite3.Connection, transaction_uid: str, now: float) -> None:
    """The PACS accepted the N-ACTION: the timeout counts from now."""
    with transaction(conn):
        conn.execute(
            "UPDATE commitments SET requested_epoch = ? WHERE transaction_uid = ? AND state = ?",
            (now, transaction_uid, OPEN),
        )


def expire(conn: sqlite3.Connection, transaction_uid: str) -> None:
    """Give up on one transaction; its instances will be asked about again."""
    with transaction(conn):
        _expire(conn, transaction_uid)


def _expire(conn: sqlite3.Connection, transaction_uid: str) -> None:
    conn.execute(
        "UPDATE commitments SET state = ? WHERE transaction_uid = ? AND state = ?",
        (EXPIRED, transaction_uid, OPEN),
    )
    conn.execute(
        "UPDATE deliveries SET commit_txn = NULL WHERE commit_txn = ? AND state = ?",
        (transaction_uid, DeliveryState.SENT),
    )


def expire_overdue(conn: sqlite3.Connection, destination: str, cutoff: float) -> int:
    """Expire OPEN transactions created before ``cutoff``; return how many."""
    rows = conn.execute(
        "SELECT transaction_uid FROM commitments WHERE destination = ? AND state = ? "
        "AND COALESCE(requested_epoch, created_epoch) < ?",
        (destination, OPEN, cutoff),
    ).fetchall()
    with transaction(conn):
        for (uid,) in rows:
            _expire(conn, uid)
    return len(rows)


def open_transactions(conn: sqlite3.Connection, destination: str) -> int:
    """How many transactions to ``destination`` await their report."""
    row = conn.execute(
        "SELECT COUNT(*) FROM commitments WHERE destination = ? AND state = ?",
        (destination, OPEN),
    ).fetchone()
    return int(row[0])


def apply_report(
    conn: sqlite3.Connection,
    transaction_uid: str,
    committed: list[str],
    failed: list[tuple[str, int | None]],
    max_failures: int,
) -> ReportOutcome:
    """Record an N-EVENT-REPORT. Unknown or finished transactions change nothing.

    A report for an EXPIRED transaction is still applied for its committed
    instances (the PACS did commit them), so a slow PACS never causes extra sends.
    """
    row = conn.execute(
        "SELECT destination, state FROM commitments WHERE transaction_uid = ?",
        (transaction_uid,),
    ).fetchone()
    if row is None or row[1] == DONE:
        return ReportOutcome(known=False)
    destination = str(row[0])
    stamp = utc_now_text()
    outcome_committed = resend = quarantined = 0
    committed_ids: list[int] = []
    quarantined_ids: list[int] = []
    with transaction(conn):
        conn.execute(
            "UPDATE commitments SET state = ? WHERE transaction_uid = ?", (DONE, transaction_uid)
        )
        for sop_uid in committed:
            cur = conn.execute(
                "UPDATE deliveries SET state = ?, committed_at = ?, commit_txn = NULL "
                "WHERE destination = ? AND state = ? AND capture_id = "
                "(SELECT id FROM captures WHERE sop_instance_uid = ?) "
                "AND (commit_txn = ? OR commit_txn IS NULL)",
                (
                    DeliveryState.COMMITTED,
                    stamp,
                    destination,
                    DeliveryState.SENT,
                    sop_uid,
                    transaction_uid,
                ),
            )
            if cur.rowcount:
                outcome_committed += 1
                refreshed = _refresh_capture(conn, sop_uid, stamp)
                if refreshed is not None:
                    committed_ids.append(refreshed)
        for sop_uid, code in failed:
            target = conn.execute(
                "SELECT d.capture_id, d.commit_failures FROM deliveries d JOIN captures c "
                "ON c.id = d.capture_id WHERE c.sop_instance_uid = ? AND d.destination = ? "
                "AND d.state = ? AND d.commit_txn = ?",
                (sop_uid, destination, DeliveryState.SENT, transaction_uid),
            ).fetchone()
            if target is None:
                continue
            capture_id, failures = int(target[0]), int(target[1]) + 1
            reason = describe_failure(code)
            if failures >= max_failures:
                conn.execute(
                    "UPDATE deliveries SET state = ?, commit_failures = ?, commit_txn = NULL, "
                    "last_error = ? WHERE capture_id = ? AND destination = ?",
                    (
                        DeliveryState.FAILED,
                        failures,
                        f"commitment failed: {reason}",
                        capture_id,
                        destination,
                    ),
                )
                conn.execute(
                    "UPDATE captures SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
                    (
                        CaptureState.QUARANTINED,
                        f"{destination} could not commit it {failures} times (last: {reason})",
                        stamp,
                        capture_id,
                    ),
                )
                quarantined += 1
                quarantined_ids.append(capture_id)
            else:
                conn.execute(
                    "UPDATE deliveries SET state = ?, commit_failures = ?, commit_txn = NULL, "
                    "next_attempt_at = ?, last_error = ? "
                    "WHERE capture_id = ? AND destination = ?",
                    (
                        DeliveryState.PENDING,
                        failures,
                        time.time(),
                        f"commitment failed: {reason}; sending again",
                        capture_id,
                        destination,
                    ),
                )
                refresh_capture_state(conn, capture_id, stamp)
                resend += 1
    return ReportOutcome(
        True,
        destination,
        outcome_committed,
        resend,
        quarantined,
        tuple(committed_ids),
        tuple(quarantined_ids),
    )


def _refresh_capture(conn: sqlite3.Connection, sop_uid: str, stamp: str) -> int | None:
    row = conn.execute("SELECT id FROM captures WHERE sop_instance_uid = ?", (sop_uid,)).fetchone()
    if row is None:
        return None
    refresh_capture_state(conn, int(row[0]), stamp)
    return int(row[0])


def confirm_by_retention(conn: sqlite3.Connection, destination: str, cutoff: float) -> int:
    """Without commitment: SENT deliveries older than ``cutoff`` count as delivered."""
    rows = conn.execute(
        "SELECT capture_id FROM deliveries WHERE destination = ? AND state = ? "
        "AND sent_epoch IS NOT NULL AND sent_epoch <= ?",
        (destination, DeliveryState.SENT, cutoff),
    ).fetchall()
    stamp = utc_now_text()
    with transaction(conn):
        for (capture_id,) in rows:
            conn.execute(
                "UPDATE deliveries SET state = ?, committed_at = ? "
                "WHERE capture_id = ? AND destination = ?",
                (DeliveryState.COMMITTED, stamp, capture_id, destination),
            )
            refresh_capture_state(conn, int(capture_id), stamp)
    return len(rows)
