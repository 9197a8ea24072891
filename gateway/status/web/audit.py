"""The reveal audit log: who looked at which capture's patient data, and when.

One line per reveal, appended and fsynced *before* the data is shown (no line, no
data)::

    2026-11-30T23:59:01Z user=tech action=reveal spool_id=12

Only the user name (validated by ``dermgate user add``: letters, digits, ``._-``),
the action and the spool id: the audit log itself never holds patient data. The
file is created with mode 0600. The integration API writes lines of its own
(:meth:`AuditLog.record`): who (``token:NAME`` or ``user:NAME``), the endpoint, how
many records it showed, the spool ids and session of an assignment.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path


class AuditLog:
    """Appends audit lines to ``path`` (folder created if missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, user: str, action: str, spool_id: int) -> str:
        """Write one durable line; return it. Raises OSError."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        safe_user = "".join(ch for ch in user if ch.isalnum() or ch in "._-")[:32] or "?"
        line = f"{stamp} user={safe_user} action={action} spool_id={int(spool_id)}\n"
        self._write(line)
        return line

    def record(self, who: str, action: str, **fields: int | str | list[int]) -> str:
        """Write one durable API line (:func:`api_line`); return it. Raises OSError."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        line = f"{stamp} {api_line(who, action, fields)}\n"
        self._write(line)
        return line

    def _write(self, line: str) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)


_SAFE_VALUE = "._-:/,"


def _safe(text: str, limit: int = 200) -> str:
    return (
        "".join(ch for ch in text if ch.isascii() and (ch.isalnum() or ch in _SAFE_VALUE))[:limit]
        or "?"
    )


def api_line(who: str, action: str, fields: dict[str, int | str | list[int]]) -> str:
    """One API audit line (without the time stamp): who (``token:NAME`` or
    ``user:NAME``), what and counts or ids, never patient data::

        user=token:kiosk action=api.worklist records=2
        user=user:tech action=api.assign spool_ids=4,5 session=7
    """
    parts = [f"user={_safe(who, 40)}", f"action={_safe(action, 40)}"]
    for key, value in fields.items():
        if isinstance(value, list):
            text = ",".join(str(int(v)) for v in value)
        elif isinstance(value, int):
            text = str(int(value))
        else:
            text = _safe(value)
        parts.append(f"{_safe(key, 32)}={text}")
    return " ".join(parts)
