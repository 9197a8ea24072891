"""The barcode stage: each scanner's codes open its device's patient session.

:class:`BarcodeStage` runs one task per ``[[barcodes]]`` entry. A code must match
the entry's ``pattern`` as a whole; its named group ``patient_id`` or
``accession_number`` becomes a :class:`~gateway.context.desk.Scanned` request to
:meth:`ContextDesk.open_session` for the entry's ``for_device`` (which opens or
switches that device's session), on behalf of ``Actor("barcode", "barcodes[N]")``.

Nothing a scanner reads is silently dropped. Every read becomes a
:class:`ScanNotice` in a bounded list (:meth:`BarcodeStage.recent`, newest first)
that the page shows: matched (with the session), no_match (the pattern did not
match), refused (the desk said no: its code and plain message), typed (keys at a
person's pace), too_long, unreadable, incomplete. An unexpected failure of the desk
is a refusal too (logged by its type only): a scan, outside input, never stops the
box. A notice holds the scanned text, which is patient data: for the authenticated
page only. The log and the event bus (:class:`~gateway.core.events.BarcodeScanned`)
get the outcome, never the text.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.context.barcode.evdev_source import KeyEventSource, evdev_events, wedge_reads
from gateway.context.barcode.read import ReadKind, ScanRead
from gateway.context.barcode.serial_source import serial_reads
from gateway.context.barcode.wedge import WedgeDecoder
from gateway.context.desk import Actor, ContextDesk, ContextError, ContextErrorCode, Scanned
from gateway.core.config.context import BarcodeSettings
from gateway.core.events import NO_EVENTS, BarcodeScanned, EventSink

__all__ = ["KEEP", "BarcodeStage", "ScanNotice", "ScanOutcome", "match_code"]

log = logging.getLogger("dermgate.barcodes")

KEEP = 50
"""Notices kept for the page (the oldest go first)."""

Ready = Callable[[], None]

_FAILED = "the box could not open the session (an internal error, in its log)"


class ScanOutcome(enum.StrEnum):
    """What became of a read (the log's, the event's and the page's word for it)."""

    MATCHED = "matched"
    NO_MATCH = "no_match"
    REFUSED = "refused"
    TYPED = "typed"
    TOO_LONG = "too_long"
    UNREADABLE = "unreadable"
    INCOMPLETE = "incomplete"


_NOT_A_CODE = {
    ReadKind.TYPED: ScanOutcome.TYPED,
    ReadKind.TOO_LONG: ScanOutcome.TOO_LONG,
    ReadKind.UNREADABLE: ScanOutcome.UNREADABLE,
    ReadKind.INCOMPLETE: ScanOutcome.INCOMPLETE,
}


@dataclass(frozen=True, slots=True)
class ScanNotice:
    """One read and what became of it. ``text`` is patient data (authenticated page
    only; kept out of ``repr``); ``error`` and ``message`` say why the desk refused
    (a plain message without patient data), ``session_id`` which session it opened."""

    at: str
    scanner: str
    device: str
    outcome: ScanOutcome
    text: str = field(repr=False)
    session_id: int | None = None
    error: ContextErrorCode | None = None
    message: str = ""


def match_code(pattern: re.Pattern[str], text: str) -> Scanned | None:
    """The request a code makes: the whole code matches ``pattern`` and exactly one
    of its groups ``patient_id`` and ``accession_number`` took a non-empty value."""
    found = pattern.fullmatch(text)
    if found is None:
        return None
    groups = found.groupdict()
    patient_id = groups.get("patient_id") or None
    accession_number = groups.get("accession_number") or None
    if (patient_id is None) == (accession_number is None):
        return None
    return Scanned(patient_id=patient_id, accession_number=accession_number)


class BarcodeStage:
    """The ``[[barcodes]]`` scanners, opening sessions on a :class:`ContextDesk`."""

    def __init__(
        self,
        scanners: Sequence[BarcodeSettings],
        desk: ContextDesk,
        bus: EventSink = NO_EVENTS,
        *,
        key_events: KeyEventSource = evdev_events,
        keep: int = KEEP,
    ) -> None:
        """``key_events`` opens a keyboard wedge's event device (python-evdev unless a
        test gives synthetic events)."""
        self._scanners = list(scanners)
        self._patterns = [re.compile(s.pattern) for s in self._scanners]
        self._desk = desk
        self._bus = bus
        self._key_events = key_events
        self._notices: collections.deque[ScanNotice] = collections.deque(maxlen=keep)

    def recent(self) -> list[ScanNotice]:
        """The latest notices, newest first (patient data: authenticated page only)."""
        return list(reversed(self._notices))

    async def run(self, ready: Ready) -> None:
        """Read every scanner until cancelled (``ready`` once all are started)."""
        async with asyncio.TaskGroup() as group:
            for index in range(len(self._scanners)):
                group.create_task(self._serve(index), name=f"barcodes[{index}]")
            ready()

    def reads(self, index: int) -> AsyncIterator[ScanRead]:
        """Scanner ``index``'s reads, from its device or its port."""
        scanner = self._scanners[index]
        label = f"barcodes[{index}]"
        if scanner.device is not None:
            return wedge_reads(self._key_events(scanner.device, label), WedgeDecoder())
        assert scanner.port is not None  # the config model wants one of the two
        return serial_reads(scanner.port, scanner.baudrate, label)

    async def _serve(self, index: int) -> None:
        async for read in self.reads(index):
            await self.take(index, read)

    async def take(self, index: int, read: ScanRead) -> ScanNotice:
        """Act on one read of scanner ``index``: open a session or keep a notice."""
        scanner = self._scanners[index]
        label = f"barcodes[{index}]"
        outcome = _NOT_A_CODE.get(read.kind)
        session_id: int | None = None
        error: ContextErrorCode | None = None
        message = ""
        if outcome is None:
            request = match_code(self._patterns[index], read.text)
            if request is None:
                outcome = ScanOutcome.NO_MATCH
            else:
                try:
                    view = await self._desk.open_session(
                        scanner.for_device, request, Actor("barcode", label)
                    )
                except ContextError as err:
                    outcome, error, message = ScanOutcome.REFUSED, err.code, err.message
                except Exception as err:  # a scan (outside input) must not stop the box
                    # Only the type: a foreign error's message could quote the code.
                    log.error("%s: opening a session failed: %s", label, type(err).__name__)
                    outcome, message = ScanOutcome.REFUSED, _FAILED
                else:
                    outcome, session_id = ScanOutcome.MATCHED, view.id
        notice = ScanNotice(
            at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            scanner=label,
            device=scanner.for_device,
            outcome=outcome,
            text=read.text,
            session_id=session_id,
            error=error,
            message=message,
        )
        self._notices.append(notice)
        self._bus.publish(BarcodeScanned(scanner=label, device=scanner.for_device, outcome=outcome))
        if outcome is ScanOutcome.MATCHED:
            log.info("%s: scan opened session %s on %s", label, session_id, scanner.for_device)
        else:
            log.warning(
                "%s: scan for %s not used: %s%s",
                label,
                scanner.for_device,
                outcome,
                f" ({error})" if error else "",
            )
        return notice
