"""The simulated device's port: a pseudo-terminal reachable at a path, as USB-CDC is."""

from __future__ import annotations

import contextlib
import logging
import os
import tty
from pathlib import Path

__all__ = ["PtyLink"]

log = logging.getLogger("dermgate.simulate.serial_dermatoscope")


class PtyLink:
    """A pty whose slave end is reachable at ``path`` (a symlink), as a USB-CDC port is."""

    def __init__(self, path: Path) -> None:
        """Prepare a link at ``path``; :meth:`open` creates the pty."""
        self.path = path
        self.master: int | None = None
        self._slave: int | None = None
        self._tty = ""

    def open(self) -> None:
        """Create the pty (slave raw at once, kept open) and point the link at it."""
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master, self._slave, self._tty = master, slave, os.ttyname(slave)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self._tty)
        os.replace(tmp, self.path)
        log.info("device plugged in at %s -> %s", self.path, self._tty)

    def close(self) -> None:
        """Remove the link (if it still points at our pty) and close both ends."""
        with contextlib.suppress(OSError):
            if os.readlink(self.path) == self._tty:
                self.path.unlink()
        for fd in (self.master, self._slave):
            if fd is not None:
                os.close(fd)
        self.master = self._slave = None
