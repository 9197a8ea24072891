"""Whether a scanner is there, logged once per change (not once per retry)."""

from __future__ import annotations

import logging

__all__ = ["Presence"]

log = logging.getLogger("dermgate.barcodes")


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
