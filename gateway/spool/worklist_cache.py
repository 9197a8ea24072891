"""The local Modality Worklist cache: items as last fetched, and the last fetch's outcome.

One row per item (``worklist_items``: the decoded :class:`WorklistEntry` as JSON,
``fetched_at``, the SCP's AE title) and one row for the last refresh
(``worklist_fetch``). A successful refresh replaces the items in one transaction
(so a session never sees half a worklist); a failed one only records the failure,
and the cache stays in use (shown stale).
"""

from __future__ import annotations

import sqlite3
from typing import Final

from pydantic import TypeAdapter

from gateway.core.context import WorklistEntry
from gateway.spool.schema import transaction

__all__ = [
    "ENTRY_RECORD",
    "cached_items",
    "fetch_record",
    "record_failure",
    "replace_items",
]

ENTRY_RECORD: Final = TypeAdapter(WorklistEntry)
"""A worklist item as stored in ``item_json``."""


def replace_items(
    conn: sqlite3.Connection,
    items: list[WorklistEntry],
    *,
    source_ae: str,
    now: float,
    truncated: bool = False,
) -> None:
    """A successful refresh: the cache becomes ``items`` (fetched at ``now``)."""
    with transaction(conn):
        conn.execute("DELETE FROM worklist_items")
        conn.executemany(
            "INSERT OR REPLACE INTO worklist_items (item_key, item_json, source_ae, fetched_at) "
            "VALUES (?, ?, ?, ?)",
            [(i.key, ENTRY_RECORD.dump_json(i).decode(), source_ae, now) for i in items],
        )
        conn.execute(
            "INSERT INTO worklist_fetch (id, tried_at, ok_at, error, items, truncated) "
            "VALUES (1, ?, ?, NULL, ?, ?) ON CONFLICT (id) DO UPDATE SET tried_at = ?, "
            "ok_at = ?, error = NULL, items = ?, truncated = ?",
            (now, now, len(items), int(truncated)) * 2,
        )


def record_failure(conn: sqlite3.Connection, error: str, *, now: float) -> None:
    """A failed refresh (``error`` without patient data); the items stay."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO worklist_fetch (id, tried_at, error) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET tried_at = ?, error = ?",
            (now, error, now, error),
        )


def cached_items(conn: sqlite3.Connection) -> list[WorklistEntry]:
    """Every cached item, in the order of their step's start."""
    rows = conn.execute("SELECT item_json FROM worklist_items").fetchall()
    items = [ENTRY_RECORD.validate_json(row[0]) for row in rows]
    return sorted(items, key=lambda i: (i.sps_start_date, i.sps_start_time, i.key))


def fetch_record(
    conn: sqlite3.Connection,
) -> tuple[float | None, float | None, str | None, int, bool]:
    """(tried_at, ok_at, error, items, truncated) of the last refresh (Nones: never)."""
    row = conn.execute(
        "SELECT tried_at, ok_at, error, items, truncated FROM worklist_fetch WHERE id = 1"
    ).fetchone()
    if row is None:
        return (None, None, None, 0, False)
    return (row[0], row[1], row[2], int(row[3]), bool(row[4]))
