"""The technician's marks on captures the page reads and sets (ledger v6 columns).

* ``captures.sensitive``: a capture flagged as sensitive on the page (or bound to a
  session flagged so): the page shows a marker and asks for a reason before a reveal.
* ``captures.session_id``: which session a capture is bound to; the page lists a
  session's captures not yet sent, so that a session opened by mistake can hand
  them to another one.

No patient data is read here. Blocking: call through a worker thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.core.routing import RoutePlan
from gateway.spool.admin import NoSuchCapture
from gateway.spool.routing import Rerouted, reroute
from gateway.spool.schema import schema_version
from gateway.spool.states import CaptureState

__all__ = [
    "CONTEXT_SINCE",
    "SessionCapture",
    "flag_sensitive",
    "is_sensitive",
    "set_sensitive",
    "unsent_of_session",
]

#: The schema version from which captures carry session, context and sensitivity.
CONTEXT_SINCE = 6

#: States in which nothing has left the box and the capture can change session (as
#: the context stage's assign accepts them: held, or wrapped and waiting to be sent).
_UNSENT = (CaptureState.HELD, CaptureState.WRAPPED)


@dataclass(frozen=True, slots=True)
class SessionCapture:
    """A capture of a session, not sent yet (no patient data)."""

    spool_id: int
    state: str
    received_at: str
    device: str
    sensitive: bool


def is_sensitive(conn: sqlite3.Connection, spool_id: int) -> bool:
    """Whether the capture is flagged; raises NoSuchCapture."""
    if schema_version(conn) < CONTEXT_SINCE:
        if conn.execute("SELECT 1 FROM captures WHERE id = ?", (spool_id,)).fetchone() is None:
            raise NoSuchCapture(f"no capture with spool id {spool_id}")
        return False
    row = conn.execute("SELECT sensitive FROM captures WHERE id = ?", (spool_id,)).fetchone()
    if row is None:
        raise NoSuchCapture(f"no capture with spool id {spool_id}")
    return bool(row[0])


def set_sensitive(conn: sqlite3.Connection, spool_id: int, sensitive: bool) -> None:
    """Flag (or unflag) a capture as sensitive; raises NoSuchCapture."""
    with conn:
        cur = conn.execute(
            "UPDATE captures SET sensitive = ? WHERE id = ?", (int(sensitive), spool_id)
        )
    if cur.rowcount == 0:
        raise NoSuchCapture(f"no capture with spool id {spool_id}")


def flag_sensitive(
    conn: sqlite3.Connection,
    spool_id: int,
    sensitive: bool,
    plan: RoutePlan | Iterable[str],
    now: float,
) -> Rerouted:
    """Flag (or unflag) a capture sensitive and route it again
    (:func:`~gateway.spool.routing.reroute`), in one ledger call: no forwarder picks a
    delivery its routes no longer allow in between. Raises NoSuchCapture."""
    set_sensitive(conn, spool_id, sensitive)
    return reroute(conn, plan, now, [spool_id])


def unsent_of_session(conn: sqlite3.Connection, session_id: int) -> list[SessionCapture]:
    """The session's captures that have not left the box, oldest first."""
    if schema_version(conn) < CONTEXT_SINCE:
        return []
    marks = ",".join("?" for _ in _UNSENT)
    rows = conn.execute(
        "SELECT id, state, received_at, COALESCE(device_name, driver), sensitive "
        f"FROM captures WHERE session_id = ? AND state IN ({marks}) ORDER BY id",
        (session_id, *(str(s) for s in _UNSENT)),
    ).fetchall()
    return [SessionCapture(int(r[0]), str(r[1]), str(r[2]), str(r[3]), bool(r[4])) for r in rows]
