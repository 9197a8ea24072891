"""The users file as the running page sees it: read again whenever it changes.

``dermgate user add`` and ``dermgate user remove`` rewrite the file while the
service runs; the page must notice at once, without a restart, so that a new
password or a removed user ends that user's sessions. Each request costs one
``stat`` of the file (on the event loop: a local file's metadata, microseconds);
the file is parsed again only when its identity (device, inode, size, mtime,
ctime) differs from the last read. The atomic rewrite gives every new version a
new inode, so no change goes unseen.

When nobody can log in (no file, no users in it, or a file that cannot be read)
that is :class:`Unavailable`, logged once when it starts and once when it ends,
never once per request.
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from gateway.status.web.users import Users, UsersError

log = logging.getLogger(__name__)

_Stamp = tuple[int, ...]


class Why(enum.Enum):
    """Why nobody can log in."""

    NO_USERS = "no_users"  # no file, or a file without users
    UNREADABLE = "unreadable"  # damaged, or closed to the service's user


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Nobody can log in now; ``detail`` names the file and the problem (for the log)."""

    why: Why
    detail: str


class LoginFile:
    """The current content of the users file, or why there is none."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generation = 0  # +1 whenever the file was read again
        self._stamp: _Stamp | None = None
        self._current: Users | Unavailable = Unavailable(Why.NO_USERS, "not read yet")
        self._reported: Unavailable | None = None

    def current(self) -> Users | Unavailable:
        """The users now (read again if the file changed since the last call)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            stamp: _Stamp = (-1,)
        except OSError as err:
            stamp = (-2, err.errno or 0)
        else:
            stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if stamp != self._stamp:
            self._stamp = stamp
            self._current = self._read()
            self.generation += 1
            self._report(self._current)
        return self._current

    def _read(self) -> Users | Unavailable:
        try:
            users = Users.load(self.path)
        except UsersError as err:
            return Unavailable(Why.UNREADABLE, str(err))
        if not users.users:
            return Unavailable(Why.NO_USERS, f"no users file at {self.path} (or no users in it)")
        return users

    def _report(self, now: Users | Unavailable) -> None:
        """Log a change of state only."""
        before = self._reported
        if isinstance(now, Unavailable):
            if now == before:
                return
            if now.why is Why.UNREADABLE:
                log.error("%s: nobody can log in to the page until it is fixed", now.detail)
            else:
                log.warning(
                    "%s: nobody can log in to the page (add a login with dermgate user add)",
                    now.detail,
                )
            self._reported = now
        elif before is not None:
            log.info("users file %s usable again: %d user(s)", self.path, len(now.users))
            self._reported = None
