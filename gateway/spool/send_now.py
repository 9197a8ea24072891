""" "Send now": a technician's override of a destination's send windows.

One small JSON file per destination under ``<state_dir>/send-now/`` (who asked and
when; never patient data). The page and ``dermgate spool send-now`` write it, so it
works beside the running service the way ``spool retry`` does (the page also wakes
the forwarder at once; the service otherwise looks at least every
:data:`~gateway.spool.admin.SERVICE_POLL_SECONDS`), and it survives a restart.

While it exists and the window is closed, the destination sends everything
waiting, as inside a window, including captures that arrive meanwhile. The
forwarder removes it once nothing waits for that destination (the backlog is
sent) or when a window opens (from then on the windows rule again).

Blocking (file I/O): call from a thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.core.config.base import _NAME
from gateway.spool.states import CaptureState, DeliveryState

__all__ = ["SendNow", "SendNowStore", "pending_destinations"]


def pending_destinations(conn: sqlite3.Connection) -> dict[int, list[str]]:
    """Spool id → the destinations its WRAPPED capture still waits to be sent to."""
    found: dict[int, list[str]] = {}
    for capture_id, destination in conn.execute(
        "SELECT d.capture_id, d.destination FROM deliveries d JOIN captures c "
        "ON c.id = d.capture_id WHERE d.state = ? AND c.state = ? ORDER BY d.destination",
        (DeliveryState.PENDING, CaptureState.WRAPPED),
    ):
        found.setdefault(int(capture_id), []).append(str(destination))
    return found


@dataclass(frozen=True, slots=True)
class SendNow:
    """An override in force: who asked (a login or ``cli:<user>``) and when (epoch)."""

    by: str
    at: float


class SendNowStore:
    """The override files of one box (``state_dir / "send-now"``)."""

    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / "send-now"

    def _path(self, destination: str) -> Path:
        if not _NAME.match(destination):  # a name from the config, never a path
            raise ValueError(f"not a destination name: {destination!r}")
        return self.folder / f"{destination}.json"

    def request(self, destination: str, by: str, now: float | None = None) -> SendNow:
        """Record the override for ``destination`` (atomically; a second one replaces it)."""
        entry = SendNow(by=by, at=time.time() if now is None else now)
        path = self._path(destination)
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"by": entry.by, "at": entry.at}), encoding="utf-8")
        os.replace(temporary, path)
        return entry

    def get(self, destination: str) -> SendNow | None:
        """The override in force for ``destination``, if any (a damaged file counts
        as one made now, by nobody known: it was written by this module)."""
        path = self._path(destination)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
            return SendNow(by=str(data["by"]), at=float(data["at"]))
        except (ValueError, KeyError, TypeError):
            return SendNow(by="?", at=path.stat().st_mtime)

    def clear(self, destination: str) -> bool:
        """End the override; True when there was one."""
        try:
            self._path(destination).unlink()
        except FileNotFoundError:
            return False
        return True
