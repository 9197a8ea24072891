"""The ``clock_not_synchronised`` alarm, raised while the box's clock cannot be trusted
(:func:`gateway.core.clock.clock_synchronised` says why it can or cannot).

:class:`ClockWatch` is a stage: it asks every ``interval`` seconds (off the event loop)
and raises the alarm while the answer is False, clearing it once True (None, cannot
tell: no change).

Captures meanwhile are accepted and kept as always (refusing them would push them back
to devices that may not offer them again); they carry the box's time, and the alarm's
raise and clear times (MQTT events, the page) tell which captures were taken while the
clock could not be trusted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.core.alarms import CLOCK_NOT_SYNCHRONISED
from gateway.core.clock import clock_synchronised
from gateway.core.events import AlarmCleared, AlarmRaised, EventSink

__all__ = ["ClockWatch"]

log = logging.getLogger(__name__)

Ready = Callable[[], None]
ClockSource = Callable[[], bool | None]


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
