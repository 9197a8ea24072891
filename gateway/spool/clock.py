"""Times the ledger stored under a wall clock that has since gone back.

Retry and confirmation times are stored as wall-clock epochs, so that a restart
continues the schedule. When the clock steps back (a box without a real-time clock
boots with the time it last saved; an operator or NTP sets it), every stored time
lies ahead of the new "now" by the size of the step, and whatever waits for it
would wait that much longer. These clamps bring such times back within what the
service could have set itself:

* a pending delivery's next attempt: at most ``now + retry_max`` (the longest
  backoff); a later one can only come from a clock that went back;
* a commitment request's time, and an instance's sent time (which the retention
  confirmation and the ``commitment_overdue`` alarm count from): at most ``now``.

Each is one UPDATE that changes nothing (and writes nothing) while the clock behaves.
"""

from __future__ import annotations

import sqlite3

from gateway.spool.ledger import transaction
from gateway.spool.states import DeliveryState

__all__ = ["clamp_commitment_times", "clamp_retry_times", "clamp_sent_times"]


def clamp_retry_times(
    conn: sqlite3.Connection, destination: str, now: float, horizon: float
) -> int:
    """Bring pending attempts due after ``now + horizon`` back to it; return how many."""
    latest = now + horizon
    with transaction(conn):
        cur = conn.execute(
            "UPDATE deliveries SET next_attempt_at = ? "
            "WHERE destination = ? AND state = ? AND next_attempt_at > ?",
            (latest, destination, DeliveryState.PENDING, latest),
        )
    return cur.rowcount


def clamp_sent_times(conn: sqlite3.Connection, destination: str, now: float) -> int:
    """Unconfirmed deliveries sent "after" ``now`` count as sent now; return how many."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE deliveries SET sent_epoch = ? "
            "WHERE destination = ? AND state = ? AND sent_epoch > ?",
            (now, destination, DeliveryState.SENT, now),
        )
    return cur.rowcount


def clamp_commitment_times(conn: sqlite3.Connection, destination: str, now: float) -> int:
    """Commitment transactions made or requested "after" ``now`` count from now."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE commitments SET created_epoch = MIN(created_epoch, ?), "
            "requested_epoch = MIN(requested_epoch, ?) "
            "WHERE destination = ? AND (created_epoch > ? OR requested_epoch > ?)",
            (now, now, destination, now, now),
        )
    return cur.rowcount
