"""What the kernel says about a drop folder: which files their writer has closed.

A folder driver decides when a file is complete by looking at it again and again
(:meth:`gateway.devices.folders.DropFolder.settled`). On a local folder Linux also
says when a writer closed a file it wrote (``IN_CLOSE_WRITE``) or renamed a
finished file into the folder (``IN_MOVED_TO``): :class:`FolderEvents` keeps, per
name, when that last happened with no write since, and wakes the driver at once
instead of at its next poll. Any later write (``IN_MODIFY``, also a truncation), a
new file of that name, a rename away or a removal forgets it, so a writer that
opens the file again is waited for like any other. Setting times or modes after
the close (``cp -p``) is not a write.

Writes on a network mount made by another machine raise no event here; there, and
wherever inotify is not available (:meth:`FolderEvents.open` returns None), the
driver keeps judging by its looks alone. Nothing here reads a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import struct
import time
from pathlib import Path
from typing import Final

from gateway.core.libc import c_function

__all__ = ["FolderEvents"]

log = logging.getLogger(__name__)

_IN_MODIFY: Final = 0x00000002
_IN_CLOSE_WRITE: Final = 0x00000008
_IN_MOVED_FROM: Final = 0x00000040
_IN_MOVED_TO: Final = 0x00000080
_IN_CREATE: Final = 0x00000100
_IN_DELETE: Final = 0x00000200
_IN_DELETE_SELF: Final = 0x00000400
_IN_MOVE_SELF: Final = 0x00000800
_IN_Q_OVERFLOW: Final = 0x00004000
_IN_IGNORED: Final = 0x00008000
_IN_NONBLOCK: Final = os.O_NONBLOCK
_IN_CLOEXEC: Final = os.O_CLOEXEC
_DONE: Final = _IN_CLOSE_WRITE | _IN_MOVED_TO
_CHANGED: Final = _IN_MODIFY | _IN_CREATE | _IN_MOVED_FROM | _IN_DELETE
_GONE: Final = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_IGNORED
_HEADER: Final = struct.Struct("iIII")


_INOTIFY_INIT1 = c_function("inotify_init1", (ctypes.c_int,))
_INOTIFY_ADD_WATCH = c_function(
    "inotify_add_watch", (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
)


class FolderEvents:
    """Close and change events of one folder's entries, read on the event loop."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        #: entry name -> when (monotonic) its writer last closed it, with no change since
        self._closed: dict[str, float] = {}
        self._woken = asyncio.Event()
        self.lost = False
        """True once the folder itself went away or events were dropped (overflow)."""

    @classmethod
    def open(cls, folder: Path) -> FolderEvents | None:
        """Watch ``folder`` (call on the event loop); None when inotify is unavailable."""
        if _INOTIFY_INIT1 is None or _INOTIFY_ADD_WATCH is None:
            return None
        fd = int(_INOTIFY_INIT1(_IN_NONBLOCK | _IN_CLOEXEC))
        if fd < 0:
            return None
        mask = _DONE | _CHANGED | _GONE
        if _INOTIFY_ADD_WATCH(fd, os.fsencode(folder), mask) < 0:
            os.close(fd)
            return None
        events = cls(fd)
        asyncio.get_running_loop().add_reader(fd, events._read)
        return events

    def closed_at(self, name: str) -> float | None:
        """When ``name``'s writer last closed it (or it was renamed in), if it has not
        changed since; None when no such close was seen."""
        return self._closed.get(name)

    async def wait(self, timeout: float) -> None:
        """Until a file was closed or renamed in (or ``timeout`` seconds passed)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout)):
                await self._woken.wait()
        self._woken.clear()

    def close(self) -> None:
        """Stop watching (idempotent)."""
        if self._fd >= 0:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _read(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        except OSError:
            self._lose()
            return
        now = time.monotonic()
        offset = 0
        while offset + _HEADER.size <= len(data):
            _wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            raw = data[offset + _HEADER.size : offset + _HEADER.size + length]
            offset += _HEADER.size + length
            name = os.fsdecode(raw.rstrip(b"\0"))
            if mask & (_IN_Q_OVERFLOW | _GONE):
                self._lose()
            elif mask & _DONE:
                self._closed[name] = now
                self._woken.set()
            elif mask & _CHANGED:
                self._closed.pop(name, None)

    def _lose(self) -> None:
        """Events were lost: forget every close seen (looks alone decide), and wake."""
        self._closed.clear()
        self.lost = True
        self._woken.set()
