"""Whether a scanner is there, logged once per change (not once per retry)."""

from __future__ import annotations

import errno
import logging

__all__ = ["Presence", "reason"]

log = logging.getLogger("dermgate.barcodes")


_REASONS = {
    errno.ENOENT: "not connected",
    errno.ENODEV: "not connected",
    errno.ENXIO: "not connected",
    errno.EIO: "not connected",
    errno.EACCES: "permission denied: see the udev rule in the README",
    errno.EPERM: "permission denied: see the udev rule in the README",
    errno.EBUSY: "in use by another program",
    errno.EAGAIN: "in use by another program",
    errno.ENOTTY: "not the right kind of device",
}


def reason(err: BaseException) -> str:
    """Why a scanner cannot be read, in a few words (same words for the same cause,
    so that retries failing alike are not logged again)."""
    code = getattr(err, "errno", None)
    if isinstance(code, int) and code in _REASONS:
        return _REASONS[code]
    if code is None and isinstance(err, OSError):
        return "not connected"  # pyserial's read errors carry no errno: the device went away
    return getattr(err, "strerror", None) or type(err).__name__


class Presence:
    """A scanner's connection state; :meth:`here` and :meth:`away` log only changes."""

    def __init__(self, label: str, where: str) -> None:
        """``label`` names the scanner ("barcodes[0]"), ``where`` its device or port."""
        self.label = label
        self.where = where
        self.connected: bool | None = None
        self._reason = ""

    def here(self) -> None:
        """The scanner is open and read."""
        if self.connected is not True:
            log.info("%s: scanner connected at %s", self.label, self.where)
        self.connected = True

    def away(self, reason: str) -> None:
        """The scanner cannot be read (``reason`` says why; logged when it changes)."""
        if self.connected is not False or reason != self._reason:
            log.warning(
                "%s: scanner not available at %s (%s); retrying", self.label, self.where, reason
            )
        self.connected = False
        self._reason = reason
