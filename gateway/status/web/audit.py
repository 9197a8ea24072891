"""The reveal audit log: who looked at which capture's patient data, and when.

One line per reveal, appended and fsynced *before* the data is shown (no line, no
data)::

    2026-11-30T23:59:01Z user=tech action=reveal spool_id=12

Only the user name (validated by ``dermgate user add``: letters, digits, ``._-``),
the action and the spool id: the audit log itself never holds patient data. The
file is created with mode 0600.
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
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
        return line
