"""Ledger operations of Storage Commitment (blocking; run on the ledger thread).

A commitment transaction asks one destination to confirm a batch of SENT
instances. It is written to the ledger *before* the N-ACTION goes out, so a report
that arrives at once (Orthanc answers within milliseconds, sometimes before
N-ACTION-RSP) always finds it, and a restart still knows it. Rules:

* a transaction is OPEN until its report arrives (DONE) or it times out (EXPIRED);
  the deliveries of an expired transaction are asked about again in a new one;
* a report touches only the instances its own transaction asked about (kept in
  ``commitment_items``, also after the transaction ended): a late report for an
  expired transaction still confirms those, never any other instance; instances a
  report leaves out are asked about again;
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

from gateway.core.errors import DeliveryErrorCode
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

    spool_id: int
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
    not_asked: int = 0
    """Instances the report named that its transaction did not ask about (untouched)."""


def uncommitted(conn: sqlite3.Connection, destination: str, limit: int) -> list[CommitCandidate]:
    """SENT deliveries to ``destination`` that no open transaction asks about, with
    the class and instance actually sent there (a derived object's, if it was one)."""
    rows = conn.execute(
        "SELECT d.capture_id, COALESCE(d.sent_sop_class_uid, c.sop_class_uid), "
        "COALESCE(d.sent_sop_instance_uid, c.sop_instance_uid) FROM deliveries d "
        "JOIN captures c ON c.id = d.capture_id WHERE d.destination = ? AND d.state = ? "
        "AND d.commit_txn IS NULL AND c.state != ? ORDER BY d.capture_id LIMIT ?",
        (destination, DeliveryState.SENT, CaptureState.QUARANTINED, limit),
    ).fetchall()
    return [CommitCandidate(r[0], r[1], r[2]) for r in rows]


def sending_due(conn: sqlite3.Connection, destination: str, now: float) -> bool:
    """Whether a delivery to ``destination`` is due to be sent now (PENDING, its
    attempt time reached): a commitment batch may still grow by it."""
    row = conn.execute(
        "SELECT 1 FROM deliveries WHERE destination = ? AND state = ? AND next_attempt_at <= ? "
        "LIMIT 1",
        (destination, DeliveryState.PENDING, now),
    ).fetchone()
    return row is not None


def open_transaction(
    conn: sqlite3.Connection,
    destination: str,
    transaction_uid: str,
    spool_ids: list[int],
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
            [(transaction_uid, spool_id, destination) for spool_id in spool_ids],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO commitment_items (transaction_uid, capture_id) VALUES (?, ?)",
            [(transaction_uid, spool_id) for spool_id in spool_ids],
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


def forget_ended(conn: sqlite3.Connection, destination: str, cutoff: float) -> int:
    """Drop transactions that ended (DONE or EXPIRED) and were made before ``cutoff``.

    A PACS that never answers is asked again every ``commitment_timeout``, each time
    in a new transaction: without this the ledger would grow by every unconfirmed
    instance on each round. A report for a forgotten transaction is refused like
    one for a transaction never sent (its instances are in newer transactions).
    """
    ended = (
        "SELECT transaction_uid FROM commitments WHERE destination = ? AND state != ? "
        "AND created_epoch < ?"
    )
    args = (destination, OPEN, cutoff)
    with transaction(conn):
        conn.execute(f"DELETE FROM commitment_items WHERE transaction_uid IN ({ended})", args)
        cur = conn.execute(f"DELETE FROM commitments WHERE transaction_uid IN ({ended})", args)
    return cur.rowcount


def open_transactions(conn: sqlite3.Connection, destination: str) -> int:
    """How many transactions to ``destination`` await their report."""
    row = conn.execute(
        "SELECT COUNT(*) FROM commitments WHERE destination = ? AND state = ?",
        (destination, OPEN),
    ).fetchone()
    return int(row[0])


def transaction_destination(conn: sqlite3.Connection, transaction_uid: str) -> str | None:
    """The destination a transaction was sent to (None: we never sent it)."""
    row = conn.execute(
        "SELECT destination FROM commitments WHERE transaction_uid = ?", (transaction_uid,)
    ).fetchone()
    return None if row is None else str(row[0])


def _asked(conn: sqlite3.Connection, transaction_uid: str) -> dict[str, int]:
    """SOP Instance UID → capture id of every instance the transaction asked about
    (the derived object's UID where the destination was sent one)."""
    return {
        str(uid): int(spool_id)
        for uid, spool_id in conn.execute(
            "SELECT COALESCE(d.sent_sop_instance_uid, c.sop_instance_uid), c.id "
            "FROM commitment_items i JOIN captures c ON c.id = i.capture_id "
            "JOIN commitments t ON t.transaction_uid = i.transaction_uid "
            "LEFT JOIN deliveries d ON d.capture_id = i.capture_id "
            "AND d.destination = t.destination WHERE i.transaction_uid = ?",
            (transaction_uid,),
        )
    }


def apply_report(
    conn: sqlite3.Connection,
    transaction_uid: str,
    committed: list[str],
    failed: list[tuple[str, int | None]],
    max_failures: int,
    destination: str | None = None,
) -> ReportOutcome:
    """Record an N-EVENT-REPORT from the PACS the transaction was sent to.

    ``destination`` is the destination the sender was matched to: a transaction
    sent elsewhere, or unknown, changes nothing (``known`` False). Only instances
    the transaction asked about are touched; the others are counted in
    ``not_asked`` and left alone. A report for an EXPIRED (or DONE) transaction
    still confirms its committed instances (the PACS did commit them, so a slow
    PACS never causes extra sends); its failures count only while the delivery is
    still attached to this transaction. A report that names none of its
    transaction's instances changes nothing at all.
    """
    row = conn.execute(
        "SELECT destination, state FROM commitments WHERE transaction_uid = ?",
        (transaction_uid,),
    ).fetchone()
    if row is None or (destination is not None and str(row[0]) != destination):
        return ReportOutcome(known=False)
    destination = str(row[0])
    asked = _asked(conn, transaction_uid)
    not_asked = sum(1 for uid in committed if uid not in asked) + sum(
        1 for uid, _ in failed if uid not in asked
    )
    own_committed = [asked[uid] for uid in committed if uid in asked]
    own_failed = [(asked[uid], code) for uid, code in failed if uid in asked]
    if not own_committed and not own_failed:
        return ReportOutcome(True, destination, not_asked=not_asked)
    stamp = utc_now_text()
    outcome_committed = resend = quarantined = 0
    committed_ids: list[int] = []
    quarantined_ids: list[int] = []
    with transaction(conn):
        conn.execute(
            "UPDATE commitments SET state = ? WHERE transaction_uid = ?", (DONE, transaction_uid)
        )
        for spool_id in own_committed:
            cur = conn.execute(
                "UPDATE deliveries SET state = ?, committed_at = ?, commit_txn = NULL "
                "WHERE destination = ? AND state = ? AND capture_id = ?",
                (DeliveryState.COMMITTED, stamp, destination, DeliveryState.SENT, spool_id),
            )
            if cur.rowcount:
                outcome_committed += 1
                refresh_capture_state(conn, spool_id, stamp)
                committed_ids.append(spool_id)
        for spool_id, code in own_failed:
            target = conn.execute(
                "SELECT commit_failures FROM deliveries WHERE capture_id = ? AND destination = ? "
                "AND state = ? AND commit_txn = ?",
                (spool_id, destination, DeliveryState.SENT, transaction_uid),
            ).fetchone()
            if target is None:
                continue
            failures = int(target[0]) + 1
            reason = describe_failure(code)
            if failures >= max_failures:
                conn.execute(
                    "UPDATE deliveries SET state = ?, commit_failures = ?, commit_txn = NULL, "
                    "last_error = ?, error_code = ?, error_status = NULL "
                    "WHERE capture_id = ? AND destination = ?",
                    (
                        DeliveryState.FAILED,
                        failures,
                        f"commitment failed: {reason}",
                        DeliveryErrorCode.COMMITMENT_FAILED,
                        spool_id,
                        destination,
                    ),
                )
                conn.execute(
                    "UPDATE captures SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
                    (
                        CaptureState.QUARANTINED,
                        f"{destination} could not commit it {failures} times (last: {reason})",
                        stamp,
                        spool_id,
                    ),
                )
                quarantined += 1
                quarantined_ids.append(spool_id)
            else:
                conn.execute(
                    "UPDATE deliveries SET state = ?, commit_failures = ?, commit_txn = NULL, "
                    "next_attempt_at = ?, last_error = ?, error_code = ?, error_status = NULL "
                    "WHERE capture_id = ? AND destination = ?",
                    (
                        DeliveryState.PENDING,
                        failures,
                        time.time(),
                        f"commitment failed: {reason}; sending again",
                        DeliveryErrorCode.COMMITMENT_FAILED,
                        spool_id,
                        destination,
                    ),
                )
                refresh_capture_state(conn, spool_id, stamp)
                resend += 1
        # Instances the report left out: ask about them again in a new transaction.
        conn.execute(
            "UPDATE deliveries SET commit_txn = NULL WHERE commit_txn = ? AND state = ?",
            (transaction_uid, DeliveryState.SENT),
        )
    return ReportOutcome(
        True,
        destination,
        outcome_committed,
        resend,
        quarantined,
        tuple(committed_ids),
        tuple(quarantined_ids),
        not_asked,
    )


def overdue(conn: sqlite3.Connection, destination: str, cutoff: float) -> int:
    """Instances ``destination`` stores but has not confirmed although asked before ``cutoff``.

    SENT deliveries (capture not quarantined) whose commitment the PACS accepted to
    give (N-ACTION answered with success) at or before ``cutoff``, in a request made
    after their latest send, and that no report has confirmed or failed since.
    """
    row = conn.execute(
        "SELECT COUNT(*) FROM deliveries d JOIN captures c ON c.id = d.capture_id "
        "WHERE d.destination = ? AND d.state = ? AND c.state != ? AND EXISTS ("
        " SELECT 1 FROM commitment_items i JOIN commitments t "
        " ON t.transaction_uid = i.transaction_uid WHERE i.capture_id = d.capture_id "
        " AND t.destination = d.destination AND t.requested_epoch IS NOT NULL "
        " AND t.requested_epoch <= ? AND t.created_epoch >= COALESCE(d.sent_epoch, 0))",
        (destination, DeliveryState.SENT, CaptureState.QUARANTINED, cutoff),
    ).fetchone()
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
        for (spool_id,) in rows:
            conn.execute(
                "UPDATE deliveries SET state = ?, committed_at = ? "
                "WHERE capture_id = ? AND destination = ?",
                (DeliveryState.COMMITTED, stamp, spool_id, destination),
            )
            refresh_capture_state(conn, int(spool_id), stamp)
    return len(rows)
