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

from pynetdicom import AE
from pynetdicom.transport import AssociationSocket

from gateway.core.uids import DERMGATE_IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

__all__ = ["dermgate_ae", "quiet_pynetdicom"]


def dermgate_ae(ae_title: str) -> AE:
    """A pynetdicom AE that introduces itself as DermGate.

    Every association DermGate requests or accepts carries DermGate's Implementation
    Class UID and Version Name (the ones in the files it writes), not pynetdicom's: a
    PACS administrator reading their log, or a receiver with per-implementation
    workarounds, sees who is calling.
    """
    ae = AE(ae_title=ae_title)
    ae.implementation_class_uid = DERMGATE_IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    return ae


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
