"""The in-process event bus: what happened in the box, numbered, for MQTT and the page.

Any part of the gateway calls :func:`emit` (``events.emit("capture_saved",
spool_id=12, ...)``); it never blocks, and raises only for a programming error (an
unknown kind or field). The bus gives every
event the next sequence number of this run (1, 2, 3, ...) and hands ``(seq, event)``
to every :class:`Subscription`. A subscription is a bounded buffer: when a slow
reader (or an MQTT broker that is away) lets it fill up, the *oldest* entry is
dropped and counted, so a reader always knows how many it missed.

Rules:

* An event carries only ids the box itself assigns — spool id, destination name,
  device name, driver id, SOP class name, alarm code — and counts. Never patient
  data, never device capture ids or file names (they may quote a patient).
  :data:`EVENT_FIELDS` lists the fields each kind may have; :func:`emit` rejects
  anything else, so a new field is a deliberate, reviewed change.
* Values are JSON scalars (str, int, float, bool, None).
* :func:`emit` is safe from any thread (the disk-space check runs on a worker
  thread): off the event loop's thread it hands the event to the loop.
* With no bus installed (command-line tools, unit tests of other parts) emitting
  does nothing.

Kinds (fields beyond ``seq``, ``kind``, ``time``):

``capture_saved``        spool_id, driver, device_class, bytes — durable in the spool
``capture_delivered``    spool_id, destination, sop_class — the PACS stored it (C-STORE)
``capture_committed``    spool_id, destination — the PACS confirmed it keeps it
``capture_quarantined``  spool_id, stage ("wrap"|"refused"|"commitment"), destination
``alarm_raised``         code, subject, message — see :mod:`gateway.status.snapshot`
``alarm_cleared``        code, subject
``device_connected``     device, driver, state — a driver reached READY/TRANSFERRING
``device_gone``          device, driver, state — it left them (unplugged, error, stopped)

The bus also keeps the set of active alarms (from alarm_raised/alarm_cleared), so
the state snapshot shows them with the time they were raised.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Scalar = str | int | float | bool | None

EVENT_FIELDS: dict[str, frozenset[str]] = {
    "capture_saved": frozenset({"spool_id", "driver", "device_class", "bytes"}),
    "capture_delivered": frozenset({"spool_id", "destination", "sop_class"}),
    "capture_committed": frozenset({"spool_id", "destination"}),
    "capture_quarantined": frozenset({"spool_id", "stage", "destination"}),
    "alarm_raised": frozenset({"code", "subject", "message"}),
    "alarm_cleared": frozenset({"code", "subject"}),
    "device_connected": frozenset({"device", "driver", "state"}),
    "device_gone": frozenset({"device", "driver", "state"}),
}

DEFAULT_BUFFER = 1000


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    """An alarm raised and not yet cleared."""

    code: str
    subject: str
    message: str
    since: str


class Subscription:
    """One reader's bounded buffer of ``(seq, event)``; the oldest is dropped when full.

    Readers that must not lose an entry before it is handled (the MQTT outbox) use
    :meth:`peek` and :meth:`pop`; others simply ``await get()``.
    """

    def __init__(self, bus: EventBus, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError("a subscription holds at least one event")
        self._bus = bus
        self._items: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()
        self.maxlen = maxlen
        self.dropped = 0
        """Events dropped (buffer full) since the start; never reset."""
        self.unreported_drops = 0
        """Drops not yet reported to the reader (see :meth:`take_drops`)."""
        self._ready = asyncio.Event()

    def _put(self, seq: int, event: dict[str, Any]) -> None:
        if len(self._items) >= self.maxlen:
            self._items.popleft()
            self.dropped += 1
            self.unreported_drops += 1
        self._items.append((seq, event))
        self._ready.set()

    def __len__(self) -> int:
        return len(self._items)

    async def wait(self) -> None:
        """Return when at least one entry is buffered."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()

    def peek(self) -> tuple[int, dict[str, Any]]:
        """The oldest buffered entry, left in the buffer (IndexError if empty)."""
        return self._items[0]

    def pop(self, seq: int) -> bool:
        """Remove the oldest entry if it is still ``seq``; False if it was dropped
        meanwhile (the buffer overflowed while the reader was handling it)."""
        if self._items and self._items[0][0] == seq:
            self._items.popleft()
            return True
        return False

    def undrop(self) -> None:
        """An entry counted as dropped was handled after all (see :meth:`pop`)."""
        self.dropped -= 1
        self.unreported_drops -= 1

    def take_drops(self) -> int:
        """Drops since the last call (reported with the next event sent)."""
        n, self.unreported_drops = self.unreported_drops, 0
        return n

    async def get(self) -> tuple[int, dict[str, Any]]:
        """Wait for and remove the oldest entry."""
        await self.wait()
        return self._items.popleft()

    def close(self) -> None:
        """Stop receiving events."""
        self._bus.unsubscribe(self)


class EventBus:
    """Numbers events and fans them out to subscriptions (one event loop)."""

    def __init__(self) -> None:
        self.seq = 0
        self._subs: list[Subscription] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self.alarms: dict[tuple[str, str], ActiveAlarm] = {}
        self._watchers: list[asyncio.Event] = []

    def watch(self) -> asyncio.Event:
        """An event of the caller's own, set on every bus event (the caller clears it)."""
        flag = asyncio.Event()
        self._watchers.append(flag)
        return flag

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver on ``loop`` (events emitted on other threads are passed to it)."""
        self._loop = loop
        self._thread = threading.get_ident()

    def subscribe(self, maxlen: int = DEFAULT_BUFFER) -> Subscription:
        """A new subscription receiving every event from now on."""
        sub = Subscription(self, maxlen)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove ``sub`` (no error if it is already gone)."""
        if sub in self._subs:
            self._subs.remove(sub)

    def emit(self, kind: str, **fields: Scalar) -> None:
        """Publish one event (see the module docstring for kinds and fields)."""
        allowed = EVENT_FIELDS.get(kind)
        if allowed is None:
            raise ValueError(f"unknown event kind {kind!r}")
        extra = set(fields) - allowed
        if extra:
            raise ValueError(f"event {kind} has no field(s) {', '.join(sorted(extra))}")
        for value in fields.values():
            if not isinstance(value, str | int | float | bool | type(None)):
                raise TypeError(f"event {kind}: field values are JSON scalars")
        event: dict[str, Any] = {"kind": kind, "time": _now(), **fields}
        if self._loop is not None and threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self._deliver, event)
        else:
            self._deliver(event)

    def _deliver(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind in ("alarm_raised", "alarm_cleared"):
            key = (str(event.get("code")), str(event.get("subject") or ""))
            if kind == "alarm_raised":
                if key in self.alarms:
                    return  # already active: one event per raise
                self.alarms[key] = ActiveAlarm(
                    key[0], key[1], str(event.get("message") or ""), event["time"]
                )
            else:
                if key not in self.alarms:
                    return
                del self.alarms[key]
        self.seq += 1
        event = {"seq": self.seq, **event}
        for sub in self._subs:
            sub._put(self.seq, event)
        for flag in self._watchers:
            flag.set()


_bus: EventBus | None = None


def install(bus: EventBus | None) -> None:
    """Make ``bus`` the one :func:`emit` uses (None: emitting does nothing)."""
    global _bus
    _bus = bus


def current() -> EventBus | None:
    """The installed bus, if any."""
    return _bus


def emit(kind: str, **fields: Scalar) -> None:
    """Emit on the installed bus; a no-op without one. Never raises for delivery."""
    bus = _bus
    if bus is not None:
        bus.emit(kind, **fields)
