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

Rotation by size (``[web] audit_max_mb``, ``audit_keep``): when a line would take the
file past the limit, ``audit.log`` becomes ``audit.log.1`` (``.1`` → ``.2`` …, the
oldest beyond ``audit_keep`` is deleted) and the line starts a new ``audit.log``. The
service and the command-line tools write the same file: an exclusive ``flock`` on
it covers the size check, the rotation and the write, and a writer whose file was
rotated meanwhile reopens the new one. A rotation that fails raises OSError like a
failed write: no line, no data.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.config import DermGateConfig
from gateway.core.config.web import WebSettings

MIB = 1024 * 1024

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

    def __init__(self, path: Path, *, max_bytes: int = 0, keep: int = 10) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: DermGateConfig) -> AuditLog:
        """The audit log of ``config`` (its path and its rotation)."""
        web = config.web or WebSettings()
        return cls(config.audit_path(), max_bytes=int(web.audit_max_mb * MIB), keep=web.audit_keep)

    def rotated(self, n: int) -> Path:
        """The ``n``-th rotated file (1: the newest)."""
        return self.path.with_name(f"{self.path.name}.{n}")

    def _open_locked(self) -> int:
        """The current file, open for appending under an exclusive flock."""
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except FileNotFoundError:
                pass  # rotated away while we waited: open the new one
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def _rotate(self) -> None:
        """``audit.log`` → ``.1`` → ``.2`` …; the one past ``keep`` is overwritten."""
        for n in range(self.keep - 1, 0, -1):
            if self.rotated(n).exists():
                os.replace(self.rotated(n), self.rotated(n + 1))
        os.replace(self.path, self.rotated(1))
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

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
            fd = self._open_locked()
            try:
                size = os.fstat(fd).st_size
                if self.max_bytes and size and size + len(line) > self.max_bytes:
                    self._rotate()  # under the old file's flock: one rotation at a time
                    os.close(fd)
                    fd = self._open_locked()
                os.write(fd, line.encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
        return line
