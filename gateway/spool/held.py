"""Held captures: listing them, releasing expired ones, moving captures to a session.

A capture is HELD when it arrived with no patient session on its device (or its
device's patient contradicted the session's). It leaves HELD when a technician
assigns it (it gets a session's context and goes to CAPTURED to be wrapped) or
when ``[context] hold_unidentified`` expires (CAPTURED with no context: the
temporary patient). A WRAPPED capture not yet sent anywhere may also be moved to
another session; its DICOM file is deleted and it is wrapped again.

Blocking functions taking a connection, run on the ledger thread.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.core.capture import InstanceUIDs
from gateway.core.context import CaptureContext
from gateway.core.files import fsync_dir
from gateway.core.routing import RoutePlan
from gateway.spool.captures import SpoolEntry, get_capture
from gateway.spool.records import context_to_json
from gateway.spool.routing import Rerouted, reroute
from gateway.spool.schema import transaction, utc_now_text
from gateway.spool.states import CaptureState, DeliveryState

__all__ = [
    "HeldRow",
    "Move",
    "MoveRefused",
    "held_count",
    "held_rows",
    "move_candidates",
    "move_captures",
    "move_captures_routed",
    "release_expired",
]


@dataclass(frozen=True, slots=True)
class HeldRow:
    """One held capture, without patient data."""

    spool_id: int
    device: str
    received_at: str
    reason: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """A capture someone wants to move to a session, and whether it still can be."""

    entry: SpoolEntry
    sent: bool  # some destination stored it (SENT or COMMITTED)
    driver_series: bool  # the driver chose its UIDs (a 3D export): keep its series


@dataclass(frozen=True, slots=True)
class Move:
    """One capture's new context and UIDs (same SOP Instance UID)."""

    spool_id: int
    state: CaptureState  # the state it had when the move was planned
    old_study: str
    context: CaptureContext
    uids: InstanceUIDs
    #: A capture written as DICOM on arrival (no raw file to wrap again): its file
    #: already rewritten with the new context (:func:`gateway.dicom.retarget.retarget`)
    #: at this path, put in place of the old one as the move commits; it stays WRAPPED.
    retargeted: Path | None = None


class MoveRefused(Exception):
    """A capture changed (sent, wrapped, gone) between planning and moving it."""

    def __init__(self, spool_id: int) -> None:
        self.spool_id = spool_id
        super().__init__(f"spool id {spool_id} changed meanwhile")


def held_rows(conn: sqlite3.Connection) -> list[HeldRow]:
    """Held captures, oldest first."""
    rows = conn.execute(
        "SELECT id, COALESCE(device_name, driver), received_at, COALESCE(reason, '') "
        "FROM captures WHERE state = ? ORDER BY id",
        (CaptureState.HELD,),
    ).fetchall()
    return [HeldRow(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


def held_count(conn: sqlite3.Connection) -> int:
    """How many captures are held."""
    (n,) = conn.execute(
        "SELECT COUNT(*) FROM captures WHERE state = ?", (CaptureState.HELD,)
    ).fetchone()
    return int(n)


def release_expired(conn: sqlite3.Connection, received_before: str) -> list[int]:
    """HELD captures received before ``received_before`` (ledger time text) go to
    CAPTURED with no context (the wrapper gives them a temporary patient)."""
    with transaction(conn):
        ids = [
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM captures WHERE state = ? AND received_at < ? ORDER BY id",
                (CaptureState.HELD, received_before),
            )
        ]
        conn.executemany(
            "UPDATE captures SET state = ?, reason = NULL, updated_at = ? "
            "WHERE id = ? AND state = ?",
            [(CaptureState.CAPTURED, utc_now_text(), i, CaptureState.HELD) for i in ids],
        )
    return ids


def _sent(conn: sqlite3.Connection, spool_id: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM deliveries WHERE capture_id = ? AND state IN (?, ?) LIMIT 1",
        (spool_id, DeliveryState.SENT, DeliveryState.COMMITTED),
    ).fetchone()
    return row is not None


def _driver_series(conn: sqlite3.Connection, entry: SpoolEntry) -> bool:
    """Whether the capture's UIDs were the driver's: its study is a driver-chosen one
    (not bound yet), or it was bound but its series is none of a session's."""
    if entry.session_id is None:
        row = conn.execute(
            "SELECT 1 FROM export_bindings WHERE driver_study_uid = ?", (entry.uids.study,)
        ).fetchone()
        return row is not None
    row = conn.execute(
        "SELECT 1 FROM session_series WHERE series_uid = ?", (entry.uids.series,)
    ).fetchone()
    return row is None


def move_candidates(conn: sqlite3.Connection, spool_ids: list[int]) -> dict[int, Candidate]:
    """The captures of ``spool_ids`` that exist, with whether any was sent."""
    found = {}
    for spool_id in spool_ids:
        entry = get_capture(conn, spool_id)
        if entry is not None:
            found[spool_id] = Candidate(entry, _sent(conn, spool_id), _driver_series(conn, entry))
    return found


def move_captures(conn: sqlite3.Connection, moves: list[Move], dicom_dir: Path) -> None:
    """Give captures their new context and UIDs and put them back to CAPTURED, all or
    nothing (:class:`MoveRefused` if one changed since it was planned).

    A WRAPPED capture written as DICOM on arrival comes with its file already
    rewritten (``retargeted``): that file replaces the old one as the move commits,
    and the capture stays WRAPPED with its pending deliveries. Any other WRAPPED
    capture's pending deliveries are dropped and, once committed, its DICOM
    file is deleted (here, on the ledger thread, so the wrapper cannot have written
    the new one yet: it finds the capture only through the ledger).
    """
    stale: list[Path] = []
    placed: list[tuple[Path, Path]] = []
    with transaction(conn):
        for move in moves:
            row = conn.execute(
                "SELECT state, dicom_name FROM captures WHERE id = ?", (move.spool_id,)
            ).fetchone()
            if row is None or row[0] != move.state or _sent(conn, move.spool_id):
                raise MoveRefused(move.spool_id)
            if move.retargeted is not None:
                _keep_wrapped(conn, move)
                placed.append((move.retargeted, dicom_dir / str(row[1])))
                continue
            if row[1]:
                stale.append(dicom_dir / str(row[1]))
            # The rest of a 3D export whose held files are assigned follows them.
            conn.execute(
                "UPDATE export_bindings SET session_id = ? WHERE driver_study_uid = ? "
                "AND session_id IS NULL",
                (move.context.session_id, move.old_study),
            )
            conn.execute("DELETE FROM deliveries WHERE capture_id = ?", (move.spool_id,))
            conn.execute(
                "UPDATE captures SET state = ?, reason = NULL, study_uid = ?, series_uid = ?, "
                "session_id = ?, context_json = ?, sensitive = ?, dicom_name = NULL, "
                "sop_class_uid = NULL, transfer_syntax_uid = NULL, updated_at = ? "
                "WHERE id = ?",
                (
                    CaptureState.CAPTURED,
                    move.uids.study,
                    move.uids.series,
                    move.context.session_id,
                    context_to_json(move.context),
                    int(bool(move.context.sensitive)),
                    utc_now_text(),
                    move.spool_id,
                ),
            )
        if placed:
            _replace_retargeted(placed, dicom_dir)
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def move_captures_routed(
    conn: sqlite3.Connection, moves: list[Move], dicom_dir: Path, plan: RoutePlan, now: float
) -> Rerouted:
    """:func:`move_captures`, then route the moved captures again (their sensitive flag
    may have changed with their context), in one ledger call: no delivery their routes
    no longer allow is picked in between."""
    move_captures(conn, moves, dicom_dir)
    return reroute(conn, plan, now, [m.spool_id for m in moves])


def _keep_wrapped(conn: sqlite3.Connection, move: Move) -> None:
    """A retargeted capture keeps its state and pending deliveries; only its context
    and UIDs change."""
    conn.execute(
        "UPDATE captures SET study_uid = ?, series_uid = ?, session_id = ?, context_json = ?, "
        "sensitive = ?, updated_at = ? WHERE id = ?",
        (
            move.uids.study,
            move.uids.series,
            move.context.session_id,
            context_to_json(move.context),
            int(bool(move.context.sensitive)),
            utc_now_text(),
            move.spool_id,
        ),
    )


def _replace_retargeted(placed: list[tuple[Path, Path]], dicom_dir: Path) -> None:
    """Put the rewritten files in place, last thing before the move commits (a
    forwarder reading the ledger afterwards opens the new file)."""
    for rewritten, path in placed:
        os.replace(rewritten, path)
    fsync_dir(dicom_dir)
