"""Read-only views of a gateway's state folder (the ledger, the device status file),
for assertions while or after it runs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


def ledger_rows(state_dir: Path) -> list[sqlite3.Row]:
    """Every capture row of the ledger (read-only; empty if there is no ledger)."""
    path = state_dir / "ledger.sqlite3"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM captures ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def delivery_rows(state_dir: Path) -> list[sqlite3.Row]:
    """Every delivery row of the ledger."""
    path = state_dir / "ledger.sqlite3"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM deliveries ORDER BY capture_id").fetchall()
    finally:
        conn.close()


def states(state_dir: Path) -> list[str]:
    """The state of every capture, in spool order."""
    return [str(r["state"]) for r in ledger_rows(state_dir)]


def device_status(state_dir: Path) -> dict[str, dict[str, Any]]:
    """The gateway's device status snapshot, by device name ({} before the first write)."""
    path = state_dir / "status" / "devices.json"
    if not path.exists():
        return {}
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["version"] == 1
    return {d["name"]: d for d in document["devices"]}
