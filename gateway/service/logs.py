"""Where the service's log lines go: the journal (with priorities) or a plain stderr.

Under systemd, stderr is a stream to journald and systemd sets ``$JOURNAL_STREAM`` to
that stream's ``device:inode`` (systemd.exec(5)). When it matches stderr (not a
redirected stderr inheriting the variable), each line starts with a ``<N>`` syslog
priority (sd-daemon(3)): ``<2>`` critical, ``<3>`` error, ``<4>`` warning, ``<6>``
info, ``<7>`` debug, so ``journalctl -p warning -u dermgate`` shows warnings and
worse; and no timestamp of our own (the journal has one). Elsewhere, lines carry the
time and the level as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TextIO

__all__ = ["PLAIN_FORMAT", "JournalFormatter", "journal_priority", "logs_to_journal"]

#: The format off systemd (a terminal, a file, a test).
PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def journal_priority(levelno: int) -> int:
    """The syslog priority of a logging level."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def logs_to_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal stream ``$JOURNAL_STREAM`` names."""
    env = os.environ if environ is None else environ
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (int(device), int(inode)) == (st.st_dev, st.st_ino)
    except (ValueError, OSError):  # unset or malformed, or a stream without a descriptor
        return False


class JournalFormatter(logging.Formatter):
    """``<N>logger: message``, every line of it (a traceback too) with the priority."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The record's lines, each prefixed with its priority."""
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())
