"""pynetdicom as every DIMSE user of the box needs it (C-STORE, worklist, MPPS).

Importing this module once is enough: it quiets pynetdicom's own logging (it logs
every failed association at ERROR, a line per retry, and can print datasets, which
hold patient data, at DEBUG; callers classify and log outcomes themselves, once
per change) and makes a refused connection close its socket (below).
"""

from __future__ import annotations

import contextlib
import logging
import socket

from pynetdicom.transport import AssociationSocket

__all__ = ["quiet_pynetdicom"]


def quiet_pynetdicom() -> None:
    """Keep pynetdicom's log to CRITICAL (applied on import; idempotent)."""
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)


def _shutdown_socket(self: AssociationSocket) -> None:
    """Shut down and always close the socket.

    pynetdicom 3.0.4 skips ``close()`` when ``shutdown()`` fails, which it always
    does for a connection that was refused: every failed attempt then leaves the
    socket to the garbage collector (a ResourceWarning each time). A peer that is
    down for a week means tens of thousands of attempts, so close it here.
    """
    sock = self.socket
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


AssociationSocket._shutdown_socket = _shutdown_socket  # type: ignore[method-assign]
quiet_pynetdicom()
