"""One service per state folder: an exclusive lock on ``STATE_DIR/dermgate.lock``.

``dermgate run`` (and ``dermgate demo``, which runs the same gateway) takes it
before it reads or changes anything in the state folder and holds it for the life
of the process; ``dermgate spool rebuild`` takes it too, so it never writes a
ledger under a running service. Two services on one state folder would race: one's
start-up reconciliation would take the other's acknowledged captures for leftovers.

The lock is ``flock(2)`` on an open file: the kernel drops it when the process ends,
however it ends (SIGKILL, power cut), so a stale lock file never blocks a start.
The holder writes its PID into the file for the message of whoever finds the lock
taken. The file itself is never deleted (deleting a lock file would let a third
process lock a new file while the second still holds the old one).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from gateway.core.state_owner import owned_like

LOCK_NAME = "dermgate.lock"


class StateLocked(RuntimeError):
    """Another process holds the state folder's lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f"PID {pid}" if pid is not None else "a process whose PID it has not written yet"
        super().__init__(
            f"{path} is locked by {holder}: another DermGate service (or spool rebuild) "
            "is using this state_dir; stop it first, or give this one another state_dir"
        )
        self.path = path
        self.pid = pid


def _holder_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isascii() and text.isdigit() else None


class StateLock:
    """The held lock on a state folder; release by :meth:`release` or process exit."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        """Take the lock now or raise :class:`StateLocked` (never waits).

        Creates ``state_dir`` if missing (nothing else). Raises :class:`OSError` if
        the lock file cannot be opened.
        """
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StateLocked(path, _holder_pid(fd)) from None
            owned_like(state_dir, path)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self) -> None:
        """Give the lock up (closing the file drops it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> StateLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
