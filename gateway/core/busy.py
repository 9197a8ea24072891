"""The busy lock: a shared ``flock`` the service holds while work is in flight.

``dermgate-update apply`` (:mod:`gateway.update.gate`) takes the same file
exclusively before it switches releases and restarts the service, so it waits until
no capture is in intake or wrap and no association is open, or gives up with exit 75
(EX_TEMPFAIL). The file lives in the runtime folder systemd gives the service
(``$RUNTIME_DIRECTORY/busy.lock``, ``/run/dermgate/busy.lock`` on a box;
``RuntimeDirectoryPreserve=yes`` keeps it across restarts); without one (a run by
hand, tests) there is no lock. One service per process: :data:`BUSY` is the
process's lock, pointed at its file by the service at start
(:func:`use_runtime_directory`); intake (a capture arriving), wrap (a capture
becoming DICOM) and the forwarders (an association open) enter it.

Each piece of work enters :meth:`BusyLock.busy`; the first one in takes ``LOCK_SH``,
the last one out drops it. Taking it never waits: when an update already holds the
lock exclusively (it is about to restart the service) the work goes on without it,
since a restart drains work in flight anyway; captures are never delayed by an update.
The kernel drops the lock when the process dies, however it dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = "busy.lock"


class BusyLock:
    """Counts work in flight and holds the shared lock while the count is above 0."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._count = 0
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether the shared lock is held now."""
        return self._fd is not None

    def _take(self) -> None:
        if self.path is None or not self.path.parent.is_dir():
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
        except OSError as err:
            log.warning("busy lock %s cannot be opened: %s", self.path, err.strerror)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            log.info("an update holds the busy lock; going on (the restart drains work)")
            return
        self._fd = fd

    def _drop(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def enter(self) -> None:
        """One more piece of work in flight."""
        self._count += 1
        if self._count == 1:
            self._take()

    def leave(self) -> None:
        """One piece of work less in flight."""
        self._count = max(0, self._count - 1)
        if self._count == 0:
            self._drop()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Hold the lock (shared with other work) for the ``with`` block."""
        self.enter()
        try:
            yield
        finally:
            self.leave()


BUSY = BusyLock(None)


def use_runtime_directory(environ: dict[str, str] | None = None) -> Path | None:
    """Point :data:`BUSY` at ``$RUNTIME_DIRECTORY/busy.lock`` (None: no lock)."""
    env = os.environ if environ is None else environ
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    BUSY.path = Path(runtime) / LOCK_NAME if runtime else None
    return BUSY.path
