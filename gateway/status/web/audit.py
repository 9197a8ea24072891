"""The reveal audit log: who looked at which capture's patient data, and when.

One line per reveal, appended and fsynced *before* the data is shown (no line, no
data)::

    2026-11-30T23:59:01Z user=tech action=reveal spool_id=12
    2026-11-30T23:59:40Z user=tech action=reveal spool_id=14 reason=quality_control
    2026-11-30T23:59:55Z user=tech action=move spool_id=15 from_session=3 to_session=4

Only the user name (validated by ``dermgate user add``: letters, digits, ``._-``),
the action, the spool id and fixed-vocabulary details (a reveal's reason *category*
from :data:`REVEAL_REASONS`, session ids, counts): the audit log itself never holds
patient data, nor free text. The file is created with mode 0600.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

#: The reason categories a reveal of a sensitive capture asks for (key: label).
REVEAL_REASONS = {
    "treatment": "Treatment",
    "second_opinion": "Second opinion",
    "quality_control": "Quality control",
    "patient_request": "Patient request",
    "other": "Other",
}


def _safe(text: str) -> str:
    return "".join(ch for ch in text if ch.isascii() and (ch.isalnum() or ch in "._-"))[:32]


class AuditLog:
    """Appends audit lines to ``path`` (folder created if missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(
        self,
        user: str,
        action: str,
        spool_id: int,
        detail: Mapping[str, str | int] | None = None,
    ) -> str:
        """Write one durable line about a capture; return it. Raises OSError.
        ``detail``: extra ``key=value`` pairs of fixed vocabulary after the spool id."""
        return self.append_fields(user, action, {"spool_id": int(spool_id), **(detail or {})})

    def append_fields(self, user: str, action: str, fields: Mapping[str, int | str]) -> str:
        """Write one durable line with ``fields`` after the action (e.g. a reveal of
        the worklist: ``items=12 reason=care``); values are ids, counts or fixed
        words, never patient data (reduced to ``[A-Za-z0-9._-]``). Raises OSError."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        safe_user = _safe(user) or "?"
        extra = " ".join(f"{_safe(k)}={_safe(str(v))}" for k, v in fields.items())
        line = f"{stamp} user={safe_user} action={_safe(action)} {extra}".rstrip() + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
        return line
