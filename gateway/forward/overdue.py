"""The ``commitment_overdue`` alarm: the PACS stores, but its confirmations do not come.

When the PACS's entry for our AE title has a wrong address or port, or a firewall
is in the way, C-STORE and N-ACTION succeed but no N-EVENT-REPORT ever reaches our
listener: nothing is confirmed, so nothing is purged, and the disk slowly fills.
One watch per destination with storage commitment raises the alarm (subject: the
destination's name) once an instance has waited ``commitment_alarm_after`` seconds
since the PACS accepted to confirm it, and clears it when nothing waits that long
any more (the reports arrived, or the PACS answered with failures and the
instances are being sent again). A raise and a clear are logged once each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gateway.core.alarms import COMMITMENT_OVERDUE
from gateway.core.config import DicomDestination
from gateway.core.events import NO_EVENTS, AlarmCleared, AlarmRaised, EventSink
from gateway.spool import commitments as cdb
from gateway.spool.ledger import Ledger

log = logging.getLogger(__name__)


class CommitmentOverdueWatch:
    """Raises and clears ``commitment_overdue`` for one destination."""

    def __init__(
        self,
        ledger: Ledger,
        destination: DicomDestination,
        our_ae: str,
        listen_port: int,
        bus: EventSink = NO_EVENTS,
    ) -> None:
        self._ledger = ledger
        self._bus = bus
        self.destination = destination
        self._our_ae = our_ae
        self._listen_port = listen_port
        self._woken = asyncio.Event()
        self.overdue = 0
        """Instances waiting longer than allowed at the last look (0: alarm off)."""

    def reported(self) -> None:
        """A report from this destination was applied: look again now."""
        self._woken.set()

    async def run(self, ready: Callable[[], None]) -> None:
        """Watch until cancelled."""
        d = self.destination
        interval = min(30.0, max(0.5, d.commitment_alarm_after / 4))
        ready()
        while True:
            count = await self._ledger.call(
                cdb.overdue, d.name, time.time() - d.commitment_alarm_after
            )
            self._update(count)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):  # not wait_for (3.11 can swallow a stop)
                    await self._woken.wait()
            self._woken.clear()

    def _update(self, count: int) -> None:
        d = self.destination
        if count and not self.overdue:
            log.warning(
                "%s stores captures but does not confirm them: %d instance(s) without a "
                "storage commitment report for more than %.0f s; nothing is purged meanwhile. "
                "Check that the PACS knows AE title %s at this box's address and port %d, "
                "and that no firewall blocks it",
                d.name,
                count,
                d.commitment_alarm_after,
                self._our_ae,
                self._listen_port,
            )
            self._bus.publish(
                AlarmRaised(
                    code=COMMITMENT_OVERDUE,
                    subject=d.name,
                    message=f"{d.name} stores captures but does not confirm them "
                    f"(no commitment report for more than {d.commitment_alarm_after:.0f} s)",
                )
            )
        elif not count and self.overdue:
            log.info("%s confirms again: no commitment report overdue", d.name)
            self._bus.publish(AlarmCleared(code=COMMITMENT_OVERDUE, subject=d.name))
        self.overdue = count
