"""The event bus: what happened in the box, numbered, for MQTT and the page.

An event is a typed value (:class:`CaptureSaved`, :class:`AlarmRaised`, ...: one
frozen dataclass per kind). Stages publish on the bus they were given when they were
built (:mod:`gateway.service.app` makes one :class:`EventBus` and passes it to each
stage; a stage built without one, in a command-line tool or a unit test of another
part, gets :data:`NO_EVENTS`, which drops what it is given). :meth:`EventBus.publish`
never blocks. The bus gives every event the next sequence number of this run
(1, 2, 3, ...) and hands ``(seq, event)`` to every :class:`Subscription`, the event
as the JSON-ready mapping MQTT publishes. A subscription is a bounded buffer: when a
slow reader (or an MQTT broker that is away) lets it fill up, the *oldest* entry is
dropped and counted, so a reader always knows how many it missed.

Rules:

* An event carries only ids the box itself assigns — spool id, destination name,
  device name, driver id, SOP class name, alarm code — and counts. Never patient
  data, never device capture ids or file names (they may quote a patient). Each
  kind's fields are its dataclass's fields (:data:`EVENT_FIELDS` lists them), so a
  new field is a deliberate, reviewed change of this module.
* Values are JSON scalars (str, int, float, bool, None); :meth:`EventBus.publish`
  refuses anything else.
* :meth:`EventBus.publish` is safe from any thread (the disk-space check runs on a
  worker thread): off the event loop's thread it hands the event to the loop.

Kinds (fields beyond ``seq``, ``kind``, ``time``):

``capture_saved``        spool_id, driver, device_class, bytes — durable in the spool
``capture_delivered``    spool_id, destination, sop_class — the PACS stored it (C-STORE)
``capture_committed``    spool_id, destination — the PACS confirmed it keeps it
``capture_quarantined``  spool_id, stage ("wrap"|"refused"|"commitment"|"route"), destination,
                         sop_class (its name when a PACS refused it, else "")
``alarm_raised``         code, subject, message — see :mod:`gateway.core.alarms`
``alarm_cleared``        code, subject
``device_connected``     device, driver, state — a driver reached READY/TRANSFERRING
``device_gone``          device, driver, state — it left them (unplugged, error, stopped)
``session_opened``       session_id, device, source — a patient session began on a device
``session_ended``        session_id, device, captures — it ended (captures bound to it)
``capture_held``         spool_id, device — kept HELD, waiting for a patient
``captures_released``    count, how ("assigned"|"expired") — held captures left HELD
``worklist_refreshed``   items, ok — the worklist cache changed (count) or its SCP
                         became (un)reachable; counts only
``procedure_step_reported``  session_id, status — the MPPS SCP acknowledged IN PROGRESS,
                         COMPLETED or DISCONTINUED for a worklist session
``procedure_step_failed``    session_id, status, code — the MPPS SCP refused it for good
``barcode_scanned``      scanner, device, outcome — a scanner read something ("matched",
                         "no_match", "refused", "typed", ...); never the code itself

The bus also keeps the set of active alarms (from alarm_raised/alarm_cleared), so
the state snapshot shows them with the time they were raised.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Protocol

__all__ = [
    "EVENT_FIELDS",
    "EVENT_KINDS",
    "NO_EVENTS",
    "ActiveAlarm",
    "AlarmCleared",
    "AlarmRaised",
    "BarcodeScanned",
    "CaptureCommitted",
    "CaptureDelivered",
    "CaptureHeld",
    "CaptureQuarantined",
    "CaptureSaved",
    "CapturesReleased",
    "DeviceConnected",
    "DeviceGone",
    "Event",
    "EventBus",
    "EventSink",
    "ProcedureStepFailed",
    "ProcedureStepReported",
    "Scalar",
    "SessionEnded",
    "SessionOpened",
    "Subscription",
    "WorklistRefreshed",
]

Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Event:
    """An event of some kind (one subclass per kind; :attr:`kind` is its name on MQTT)."""

    kind: ClassVar[str] = ""

    def fields(self) -> dict[str, Scalar]:
        """The event's fields, in their declared order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureSaved(Event):
    """A capture is durable in the spool."""

    kind: ClassVar[str] = "capture_saved"
    spool_id: int
    driver: str
    device_class: str
    bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureDelivered(Event):
    """A PACS stored a capture (C-STORE); ``sop_class`` is the SOP class's name."""

    kind: ClassVar[str] = "capture_delivered"
    spool_id: int
    destination: str
    sop_class: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureCommitted(Event):
    """A PACS confirmed that it keeps a capture."""

    kind: ClassVar[str] = "capture_committed"
    spool_id: int
    destination: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureQuarantined(Event):
    """A capture was set aside; ``stage``: "wrap", "refused", "commitment" or "route"
    (no ``[[routes]]`` entry sends it anywhere).

    ``sop_class`` names the refused instance's SOP class for "refused" (a PACS that
    does not take that class is the commonest cause), "" for the other stages.
    """

    kind: ClassVar[str] = "capture_quarantined"
    spool_id: int
    stage: str
    destination: str
    sop_class: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmRaised(Event):
    """An alarm (:mod:`gateway.core.alarms`) about ``subject`` ("" for the box)."""

    kind: ClassVar[str] = "alarm_raised"
    code: str
    subject: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmCleared(Event):
    """An alarm's condition is over."""

    kind: ClassVar[str] = "alarm_cleared"
    code: str
    subject: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceConnected(Event):
    """A device's driver reached READY or TRANSFERRING."""

    kind: ClassVar[str] = "device_connected"
    device: str
    driver: str
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceGone(Event):
    """A device's driver left READY/TRANSFERRING (unplugged, error, stopped)."""

    kind: ClassVar[str] = "device_gone"
    device: str
    driver: str
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionOpened(Event):
    """A patient session began on ``device``; ``source``: worklist, barcode, manual or
    unidentified (never who the patient is)."""

    kind: ClassVar[str] = "session_opened"
    session_id: int
    device: str
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnded(Event):
    """A patient session ended; ``captures``: how many captures were bound to it."""

    kind: ClassVar[str] = "session_ended"
    session_id: int
    device: str
    captures: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureHeld(Event):
    """A capture is kept HELD (not sent) until a patient is assigned or the hold ends."""

    kind: ClassVar[str] = "capture_held"
    spool_id: int
    device: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CapturesReleased(Event):
    """Held captures left HELD: ``how`` is "assigned" (to a session) or "expired"
    (sent with a temporary patient)."""

    kind: ClassVar[str] = "captures_released"
    count: int
    how: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorklistRefreshed(Event):
    """The worklist cache now holds ``items``; ``ok``: the last refresh succeeded."""

    kind: ClassVar[str] = "worklist_refreshed"
    items: int
    ok: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcedureStepReported(Event):
    """The MPPS SCP acknowledged a worklist session's step in ``status`` (IN PROGRESS,
    COMPLETED or DISCONTINUED)."""

    kind: ClassVar[str] = "procedure_step_reported"
    session_id: int
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcedureStepFailed(Event):
    """The MPPS SCP refused a session's step in ``status`` for good; ``code`` says why
    (:class:`gateway.core.procedure_step.StepErrorCode`)."""

    kind: ClassVar[str] = "procedure_step_failed"
    session_id: int
    status: str
    code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BarcodeScanned(Event):
    """A barcode scanner (``scanner``: "barcodes[0]") read something for ``device``;
    ``outcome`` says what became of it (never the scanned code: patient data)."""

    kind: ClassVar[str] = "barcode_scanned"
    scanner: str
    device: str
    outcome: str


EVENT_KINDS: tuple[type[Event], ...] = (
    CaptureSaved,
    CaptureDelivered,
    CaptureCommitted,
    CaptureQuarantined,
    AlarmRaised,
    AlarmCleared,
    DeviceConnected,
    DeviceGone,
    SessionOpened,
    SessionEnded,
    CaptureHeld,
    CapturesReleased,
    WorklistRefreshed,
    ProcedureStepReported,
    ProcedureStepFailed,
    BarcodeScanned,
)
"""Every kind of event there is."""

EVENT_FIELDS: dict[str, frozenset[str]] = {
    cls.kind: frozenset(f.name for f in dataclasses.fields(cls)) for cls in EVENT_KINDS
}
"""Kind → the fields its events carry (beyond ``seq``, ``kind``, ``time``)."""


class EventSink(Protocol):
    """Where a stage publishes its events (an :class:`EventBus`, or :data:`NO_EVENTS`)."""

    def publish(self, event: Event) -> None:
        """Publish one event; never blocks."""


class _Discard:
    """An event sink that drops everything (tools and tests without a bus)."""

    def publish(self, event: Event) -> None:
        """Drop ``event``."""


NO_EVENTS: Final[EventSink] = _Discard()
"""The sink of stages built without a bus: events go nowhere."""

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

    def publish(self, event: Event) -> None:
        """Publish one event (see the module docstring for kinds and fields)."""
        if type(event) not in EVENT_KINDS:
            raise TypeError(f"unknown event kind {type(event).__name__}")
        fields = event.fields()
        for value in fields.values():
            if not isinstance(value, str | int | float | bool | type(None)):
                raise TypeError(f"event {event.kind}: field values are JSON scalars")
        payload: dict[str, Any] = {"kind": event.kind, "time": _now(), **fields}
        if self._loop is not None and threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self._deliver, payload)
        else:
            self._deliver(payload)

    def _deliver(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind in (AlarmRaised.kind, AlarmCleared.kind):
            key = (str(event.get("code")), str(event.get("subject") or ""))
            if kind == AlarmRaised.kind:
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
