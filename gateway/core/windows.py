"""Send windows: the local times of day a destination may be sent to.

``send_windows = ["19:00-07:00", "12:00-13:30"]`` on a destination: each window is
``HH:MM-HH:MM`` in the box's local time; a window whose end is not after its start
crosses midnight (``19:00-07:00`` is 19:00 to 07:00 the next morning); ``00:00`` as
an end means midnight. Several windows may overlap. No windows: always open.

Local time and DST. Each window is turned into real instants (epoch seconds) day
by day: the window of day *D* opens at *D* start-time and closes at *D* (or *D*+1
when it crosses midnight) end-time, each read in the zone. So a night window keeps
its wall-clock times across a DST change and is an hour shorter or longer that
night. A wall time that does not exist (the hour skipped in spring) is read with
the offset before the change, i.e. the same number of minutes after the jump
(02:30 becomes 03:30, and ``02:10-02:50`` is 03:10 to 03:50 that day); a wall time
that happens twice (autumn) is its first occurrence. A window that would end
before it starts that day (``02:30-03:00``: 03:30 to 03:00) does not open that
day. The zone is the box's own (``TZ`` or ``/etc/localtime``, as ``date`` shows
it) unless one is given (tests).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

__all__ = ["SendWindow", "SendWindows", "parse_window"]

_FORM = re.compile(r"^\s*(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})\s*$")
_LOOKBACK_DAYS = 400
"""How far back :meth:`SendWindows.open_since` walks (a year of tiny windows)."""


@dataclass(frozen=True, slots=True)
class SendWindow:
    """One ``HH:MM-HH:MM`` window of local time; ``end <= start`` crosses midnight."""

    start: time
    end: time

    @property
    def crosses_midnight(self) -> bool:
        """The window ends on the next day."""
        return self.end <= self.start

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_window(text: str) -> SendWindow:
    """``"19:00-07:00"`` → :class:`SendWindow`; ValueError with a plain message."""
    match = _FORM.match(text)
    if match is None:
        raise ValueError(f'send window "{text}": write it as "HH:MM-HH:MM", e.g. "19:00-07:00"')
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    for hour, minute in ((h1, m1), (h2, m2)):
        if hour > 23 or minute > 59:
            raise ValueError(
                f'send window "{text}": {hour:02d}:{minute:02d} is not a time of day '
                "(00:00 to 23:59)"
            )
    if (h1, m1) == (h2, m2):
        raise ValueError(
            f'send window "{text}": start and end are the same; for no limit leave '
            "send_windows empty"
        )
    return SendWindow(time(h1, m1), time(h2, m2))


class SendWindows:
    """A destination's windows, answering "open now?" and "when does it open?".

    ``tz`` is the zone the windows are in; None: the box's local time. Every method
    takes ``now`` (epoch seconds) so callers and tests choose the clock.
    """

    def __init__(self, windows: Sequence[SendWindow | str], tz: tzinfo | None = None) -> None:
        self.windows = tuple(w if isinstance(w, SendWindow) else parse_window(w) for w in windows)
        self._tz = tz

    @property
    def always(self) -> bool:
        """No windows: sending is never held back."""
        return not self.windows

    def __str__(self) -> str:
        return ", ".join(str(w) for w in self.windows) or "always"

    # ------------------------------------------------------------------ instants

    def _instant(self, day: date, at: time) -> float:
        # tzinfo=None: a naive datetime, whose timestamp() is the box's local time.
        return datetime.combine(day, at, tzinfo=self._tz).timestamp()

    def _day(self, now: float) -> date:
        return datetime.fromtimestamp(now, self._tz).date()

    def _intervals(self, first: date, days: int) -> Iterator[tuple[float, float]]:
        """Each window's (open, close) instants for the days from ``first`` on."""
        for offset in range(days):
            day = first + timedelta(days=offset)
            for w in self.windows:
                opens = self._instant(day, w.start)
                end_day = day + timedelta(days=1) if w.crosses_midnight else day
                closes = self._instant(end_day, w.end)
                if closes > opens:
                    yield opens, closes

    def _around(self, now: float) -> list[tuple[float, float]]:
        """The intervals of yesterday to tomorrow-but-one: every one that can hold ``now``
        or be the next to open."""
        return sorted(self._intervals(self._day(now) - timedelta(days=1), 4))

    # ------------------------------------------------------------------ answers

    def is_open(self, now: float) -> bool:
        """Whether sending is allowed at ``now``."""
        if self.always:
            return True
        return any(opens <= now < closes for opens, closes in self._around(now))

    def next_open(self, now: float) -> float | None:
        """When the next window opens after ``now``; None when open now (or always)."""
        if self.is_open(now):
            return None
        return min(opens for opens, _ in self._around(now) if opens > now)

    def closes_at(self, now: float) -> float | None:
        """When the window open at ``now`` closes (overlapping windows joined); None
        when closed now or always open."""
        if self.always:
            return None
        end: float | None = None
        for opens, closes in self._around(now):
            if opens <= (now if end is None else end) < closes:
                end = closes
        return end

    def open_since(self, now: float, seconds: float) -> float:
        """The instant from which ``seconds`` of open window pass until ``now``.

        What "``stuck_after`` seconds" means for a destination with windows: a
        capture that arrived before this instant has waited that long while
        sending was allowed. Always open: ``now - seconds``.
        """
        if self.always:
            return now - seconds
        first = self._day(now) - timedelta(days=_LOOKBACK_DAYS)
        # Latest close first: whatever of a span lies after the cursor is counted already.
        spans = sorted(self._intervals(first, _LOOKBACK_DAYS + 2), key=lambda s: -s[1])
        left = seconds
        cursor = now  # walk back; overlaps count once
        for opens, closes in spans:
            closes = min(closes, cursor)
            if closes <= opens:
                continue
            if closes - opens >= left:
                return closes - left
            left -= closes - opens
            cursor = min(cursor, opens)
        return self._instant(first, time(0, 0))
