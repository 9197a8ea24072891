"""Whether a destination may be sent to now: its send windows and the "send now" override.

The forwarder asks :meth:`WindowGate.allows` before each batch. Outside the
windows (and without an override) its workers wait in :meth:`WindowGate.wait`:
they sleep until the next window opens (waking exactly then), a poke (the page's
"Send now", a new capture) or the service's polling interval, whichever comes
first. Waiting is not failing: no attempt is made, none is counted, no backoff is
scheduled, no alarm is raised, and the ``stuck_after`` clock only runs inside the
windows (:meth:`stuck_cutoff`). A batch already on its association when a window
closes is finished (an instance is never cut off); the next one waits.

The override (:mod:`gateway.spool.send_now`) holds while something waits for the
destination: once nothing does, or once a window opens, the gate removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.core.windows import SendWindows
from gateway.spool import ledger as db
from gateway.spool.admin import SERVICE_POLL_SECONDS
from gateway.spool.ledger import Ledger
from gateway.spool.send_now import SendNow, SendNowStore

__all__ = ["WindowGate"]

log = logging.getLogger(__name__)


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


class WindowGate:
    """One destination's send windows and override, as its forwarder sees them."""

    def __init__(
        self,
        name: str,
        windows: SendWindows,
        store: SendNowStore,
        ledger: Ledger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.windows = windows
        self._store = store
        self._ledger = ledger
        self._clock = clock
        self.send_now: SendNow | None = None
        """The override in force as last seen (the state document shows it)."""
        self._was_open: bool | None = None
        self._announced = False

    async def allows(self) -> bool:
        """True when a batch may be sent now (inside a window, or overridden)."""
        if self.windows.always:
            return True
        now = self._clock()
        if self.windows.is_open(now):
            if self._was_open is not True:  # a window opened: the windows rule again
                self._was_open = True  # before the await: one worker logs it
                self._announced = False
                log.info("destination %s: send window open (%s)", self.name, self.windows)
                if await asyncio.to_thread(self._store.clear, self.name):
                    log.info("destination %s: send now ended by the window", self.name)
                self.send_now = None
            return True
        self._was_open = False
        override = await asyncio.to_thread(self._store.get, self.name)
        if override is not None:
            pending = await self._ledger.call(db.next_attempt_time, self.name)
            if pending is None:
                await asyncio.to_thread(self._store.clear, self.name)
                log.info("destination %s: send now done, nothing left waiting", self.name)
                override = None
            elif self.send_now is None:
                log.info("destination %s: send now (outside its send windows)", self.name)
        self.send_now = override
        if override is not None:
            self._announced = False
            return True
        if not self._announced:
            log.info(
                "destination %s: outside its send windows (%s); waiting until %s",
                self.name,
                self.windows,
                datetime.fromtimestamp(self.windows.next_open(now) or now).strftime(
                    "%Y-%m-%d %H:%M"
                ),
            )
            self._announced = True
        return False

    async def wait(self, wanted: asyncio.Event) -> None:
        """Sleep until the next window opens, ``wanted`` is set, or the polling
        interval has passed (an override written by the command line)."""
        if wanted.is_set():  # a poke came while we looked: look again at once
            wanted.clear()
            return
        now = self._clock()
        opens = self.windows.next_open(now)
        delay = SERVICE_POLL_SECONDS if opens is None else min(SERVICE_POLL_SECONDS, opens - now)
        if delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):  # not wait_for (3.11 can swallow a stop)
                await wanted.wait()

    def stuck_cutoff(self, stuck_after: float) -> datetime:
        """Captures that arrived before this have waited ``stuck_after`` seconds of
        open window (of plain time, without windows)."""
        return datetime.fromtimestamp(self.windows.open_since(self._clock(), stuck_after), UTC)

    def status(self, pending: int | None = None) -> dict[str, Any]:
        """The state document's window fields (``pending``: deliveries waiting)."""
        now = self._clock()
        is_open = self.windows.is_open(now)
        waiting = not is_open and self.send_now is None and bool(pending)
        return {
            "send_windows": [str(w) for w in self.windows.windows],
            "window_open": is_open,
            "next_window": _iso(self.windows.next_open(now)),
            "waiting_for_window": waiting,
            "send_now": self.send_now is not None,
        }
