"""The worklist cache and its refresher: what the page, the API and sessions search.

:class:`WorklistSource` queries the worklist SCP (:mod:`.worklist_fetch`) every
``[worklist] refresh`` seconds and on demand, keeps the answer in the ledger
(:mod:`gateway.spool.worklist_cache`: it survives restarts and outages) and tells
how fresh it is (:class:`~gateway.core.context.WorklistStatus`). When the SCP cannot
be reached the cached items stay in use and are shown stale, with their age.

It logs changes of state only (the SCP became unreachable, it is back, the answer
was cut, items were skipped and why), never an item's content, and publishes
:class:`~gateway.core.events.WorklistRefreshed` (counts only) when the number of
items or the outcome changes. ``dermgate worklist refresh`` writes the same cache
from the command line; the running source notices it within :data:`RELOAD_EVERY`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable
from datetime import date
from typing import TYPE_CHECKING

from gateway.context.worklist_fetch import WorklistAnswer, WorklistError, fetch_worklist
from gateway.core.config.context import WorklistSettings
from gateway.core.context import WorklistEntry, WorklistStatus
from gateway.core.events import NO_EVENTS, EventSink, WorklistRefreshed
from gateway.spool.worklist_cache import cached_items, fetch_record, record_failure, replace_items

if TYPE_CHECKING:
    from gateway.spool.ledger import Ledger

__all__ = ["RELOAD_EVERY", "WorklistSource", "search", "status_from_record"]

log = logging.getLogger(__name__)

RELOAD_EVERY = 10.0
"""Seconds between looks at the ledger's fetch record (a refresh from the command line)."""

FetchRecord = tuple[float | None, float | None, str | None, int, bool]


def status_from_record(record: FetchRecord, stale_after: float, now: float) -> WorklistStatus:
    """The status shown for a fetch record (:func:`~gateway.spool.worklist_cache.fetch_record`)."""
    tried_at, ok_at, error, items, truncated = record
    stale = ok_at is None or now - ok_at > stale_after
    return WorklistStatus(items, ok_at, tried_at, error, stale, truncated)


# --------------------------------------------------------------------------- search

_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[\s^=,]+", text.casefold()) if w]


def search(items: Iterable[WorklistEntry], text: str) -> list[WorklistEntry]:
    """The items ``text`` finds, case-insensitively, in their order.

    Each word of ``text`` must match: the start of a name part (family, given,
    middle…), or a whole Patient ID, accession number or birth date (``YYYYMMDD`` or
    ``YYYY-MM-DD``); a word also finds a Patient ID or accession number it starts.
    An empty ``text`` finds everything.
    """
    words = _words(text)
    found = []
    for item in items:
        parts = _words(item.patient.patient_name)
        ids = [item.patient.patient_id.casefold(), item.accession_number.casefold()]
        ok = True
        for word in words:
            day = _DATE.match(word)
            if day is not None and item.patient.birth_date == "".join(day.groups()):
                continue
            if any(p.startswith(word) for p in parts):
                continue
            if any(i and i.startswith(word) for i in ids):
                continue
            ok = False
            break
        if ok:
            found.append(item)
    return found


# --------------------------------------------------------------------------- source


class WorklistSource:
    """The worklist cache of one box: refreshed on a timer and on demand.

    ``calling_ae`` is ``[gateway] ae_title`` (also the station matched unless
    ``[worklist] station_ae_title`` says otherwise); ``bus`` gets
    :class:`WorklistRefreshed` events.
    """

    def __init__(
        self,
        ledger: Ledger,
        settings: WorklistSettings,
        calling_ae: str,
        bus: EventSink = NO_EVENTS,
        *,
        clock: Callable[[], float] = time.time,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.calling_ae = calling_ae
        self.bus = bus
        self._clock = clock
        self._today = today
        self._record: FetchRecord = (None, None, None, 0, False)
        self._running: asyncio.Task[WorklistStatus] | None = None
        self._reachable: bool | None = None
        self._truncated = False
        self._skipped = ""
        self._published: tuple[int, bool] | None = None

    search = staticmethod(search)
    """:func:`search`, for callers holding only the source."""

    # ------------------------------------------------------------ reading

    def status(self) -> WorklistStatus:
        """The cache's state now (from the last fetch record; no patient data)."""
        return status_from_record(self._record, self.settings.stale_after, self._clock())

    def section(self) -> dict[str, object]:
        """The ``worklist`` section of the state document: counts and ages only."""
        s = self.status()
        age = s.age(self._clock())
        return {
            "configured": True,
            "items": s.items,
            "age_s": None if age is None else round(age, 1),
            "stale": s.stale,
            "truncated": s.truncated,
            "last_error": None if s.error is None else s.error.split(":", 1)[0],
        }

    async def items(self) -> list[WorklistEntry]:
        """Every cached item (patient data: for the authenticated page and API only)."""
        return await self.ledger.call(cached_items)

    async def reload(self) -> WorklistStatus:
        """Read the fetch record again (another process may have refreshed the cache)."""
        self._record = await self.ledger.call(fetch_record)
        return self.status()

    # ------------------------------------------------------------ refreshing

    async def refresh(self) -> WorklistStatus:
        """Query the SCP now and update the cache; concurrent calls share one query.

        A failure is recorded (the cache stays) and shows in the returned status's
        ``error``; it does not raise.
        """
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._refresh(), name="worklist-refresh")
        return await asyncio.shield(self._running)

    async def _refresh(self) -> WorklistStatus:
        now = self._clock()
        try:
            answer = await fetch_worklist(
                self.settings, self.calling_ae, today=self._today(), now=now
            )
        except WorklistError as err:
            await self.ledger.call(record_failure, str(err), now=now)
            self._record = await self.ledger.call(fetch_record)
            self._note_failure(err)
        else:
            await self.ledger.call(
                replace_items,
                answer.entries,
                source_ae=self.settings.ae_title,
                now=now,
                truncated=answer.truncated,
            )
            self._record = await self.ledger.call(fetch_record)
            self._note_success(answer)
        status = self.status()
        self._publish(status)
        return status

    def _note_failure(self, err: WorklistError) -> None:
        if self._reachable is not False:
            log.warning(
                "worklist: %s; the cached worklist (%d item(s)) stays in use",
                err,
                self._record[3],
            )
        self._reachable = False

    def _note_success(self, answer: WorklistAnswer) -> None:
        if self._reachable is False:
            log.info("worklist: %s answers again", self.settings.ae_title)
        elif self._reachable is None:
            log.info("worklist: %d item(s) from %s", len(answer.entries), self.settings.ae_title)
        self._reachable = True
        if answer.truncated != self._truncated:
            if answer.truncated:
                log.warning(
                    "worklist: more than %d answers; the rest was cancelled (raise "
                    "[worklist] max_items or narrow the query)",
                    self.settings.max_items,
                )
            else:
                log.info("worklist: the answer fits within max_items again")
            self._truncated = answer.truncated
        if answer.skipped != self._skipped:
            if answer.skipped:
                log.warning("worklist: items skipped: %s", answer.skipped)
            self._skipped = answer.skipped

    def _publish(self, status: WorklistStatus) -> None:
        now = (status.items, status.error is None)
        if now != self._published:
            self._published = now
            self.bus.publish(WorklistRefreshed(items=now[0], ok=now[1]))

    async def run(self, ready: Callable[[], None]) -> None:
        """Refresh every ``[worklist] refresh`` seconds until cancelled.

        Ready once the cached state is read (before the first query: an SCP that
        is away must not hold up the gateway's start).
        """
        await self.reload()
        ready()
        next_at = 0.0
        try:
            while True:
                if self._clock() >= next_at:
                    await self.refresh()
                    next_at = self._clock() + self.settings.refresh
                else:
                    await self.reload()
                await asyncio.sleep(min(RELOAD_EVERY, max(0.0, next_at - self._clock())))
        finally:
            if self._running is not None and not self._running.done():
                self._running.cancel()  # a query in flight ends with its own timeouts
