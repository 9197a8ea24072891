"""The ledger's reserve: room set aside on disk so the ledger can still write when full.

A preallocated file, ``STATE_DIR/.reserve``, holds a few MiB of the spool's
free-space reserve (``[spool] reserve_mb``). When SQLite reports the disk full
(``SQLITE_FULL``), the ledger thread deletes it and writes again: a delivery the PACS
already stored is still recorded, and a checkpoint has room to complete. The space
watch (:mod:`gateway.spool.space`) makes the file again once the disk has room for it
twice over; until then the ``disk_full`` alarm stays raised.

Counted as free space by :class:`gateway.spool.space.SpaceGuard`: the reserve is
part of ``reserve_mb``, not an addition to it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from pathlib import Path

from gateway.core.files import fsync_dir

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: The most the reserve holds: SQLite checkpoints every 1000 pages (4 MiB), and a
#: checkpoint grows the database by at most that much.
RESERVE_BYTES = 4 * MIB
RESERVE_NAME = ".reserve"


def reserve_size(spool_reserve_bytes: int) -> int:
    """The ledger's share of the spool's free-space reserve (a quarter, at most 4 MiB)."""
    return max(0, min(RESERVE_BYTES, spool_reserve_bytes // 4))


class LedgerReserve:
    """The reserve file beside the ledger; thread-safe."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._lock = threading.Lock()
        self._held = self._present()

    def _present(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except FileNotFoundError:
            return False

    @property
    def held(self) -> bool:
        """Whether the reserve is in place (False: released, or never made)."""
        return self._held or self.size == 0

    def held_bytes(self) -> int:
        """Bytes the reserve takes on disk now (to be counted as free)."""
        return self.size if self._held else 0

    def make(self) -> bool:
        """Allocate the reserve (blocking); False if the disk has no room for it."""
        with self._lock:
            if self._held or self.size == 0:
                return True
            tmp = self.path.with_name(f"{RESERVE_NAME}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                try:
                    os.posix_fallocate(fd, 0, self.size)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self.path)
                fsync_dir(self.path.parent)
            except OSError as err:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                    log.warning("cannot make the ledger's reserve: %s", err.strerror or err)
                return False
            self._held = True
            return True

    def release(self) -> bool:
        """Delete the reserve (blocking); False if there was none to release."""
        with self._lock:
            if not self._held:
                return False
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._held = False
            return True
