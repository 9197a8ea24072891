"""The ``clock_not_synchronised`` alarm: a box without a real-time clock (a Pi) starts in
the past until a time server sets its clock.

:func:`clock_synchronised` reads the system's own state, most certain first:

1. a clock before :data:`PLAUSIBLE_SINCE` is wrong whatever else says (a Pi that
   booted without network starts at its last shutdown's time or in 1970);
2. ``/run/systemd/timesync/synchronized`` exists: systemd-timesyncd set the clock
   (the file ``systemd-time-wait-sync`` waits for);
3. systemd-timesyncd runs (``/run/systemd/timesync`` exists) and has not synchronised:
   not synchronised. Otherwise (chrony, ntpd): cannot tell beyond (1), None, no alarm.

The kernel's own NTP state (adjtimex(2)) is not asked: the unit's ``ProtectClock=yes``
denies that call altogether.

:class:`ClockWatch` is a stage: it asks every ``interval`` seconds (off the event loop)
and raises the alarm while the answer is False, clearing it once True.

Captures meanwhile are accepted and kept as always (refusing them would push them back
to devices that may not offer them again); they carry the box's time, and the alarm's
raise and clear times (MQTT events, the page) tell which captures were taken while the
clock could not be trusted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from gateway.core.alarms import CLOCK_NOT_SYNCHRONISED
from gateway.core.events import AlarmCleared, AlarmRaised, EventSink

__all__ = ["PLAUSIBLE_SINCE", "ClockWatch", "clock_synchronised"]

log = logging.getLogger(__name__)

Ready = Callable[[], None]
ClockSource = Callable[[], bool | None]

#: 2025-01-01T00:00:00Z: no clock showing an earlier time is right (DermGate is younger).
PLAUSIBLE_SINCE = 1735689600.0
TIMESYNC_DIR = Path("/run/systemd/timesync")


def clock_synchronised(
    *,
    now: Callable[[], float] = time.time,
    timesync_dir: Path = TIMESYNC_DIR,
) -> bool | None:
    """True/False when the system can tell whether its clock is right, else None
    (see the module docstring for the order of the sources)."""
    if now() < PLAUSIBLE_SINCE:
        return False
    if (timesync_dir / "synchronized").exists():
        return True
    if timesync_dir.is_dir():
        return False
    return None


class ClockWatch:
    """Raises and clears ``clock_not_synchronised`` (subject "")."""

    def __init__(
        self, bus: EventSink, source: ClockSource = clock_synchronised, interval: float = 30.0
    ) -> None:
        self._bus = bus
        self._source = source
        self.interval = interval
        self.synchronised: bool | None = None

    async def check(self) -> bool | None:
        """Ask once; raise or clear the alarm on a change."""
        answer = await asyncio.to_thread(self._source)
        if answer is False and self.synchronised is not False:
            log.warning(
                "the system clock is not synchronised (no time server reached yet): "
                "capture times may be wrong until it is"
            )
            self._bus.publish(
                AlarmRaised(
                    code=CLOCK_NOT_SYNCHRONISED,
                    subject="",
                    message="the clock is not synchronised: capture times may be wrong",
                )
            )
        elif answer is True and self.synchronised is False:
            log.info("the system clock is synchronised")
            self._bus.publish(AlarmCleared(code=CLOCK_NOT_SYNCHRONISED, subject=""))
        if answer is not None:
            self.synchronised = answer
        return answer

    async def run(self, ready: Ready) -> None:
        """The stage: a first check before ready, then one every ``interval`` seconds."""
        await self.check()
        ready()
        while True:
            await asyncio.sleep(self.interval)
            await self.check()
