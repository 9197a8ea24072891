r"""The host side of the serial dermatoscope protocol, sans I/O.

:class:`HostSession` turns the bytes a device sends into :data:`Event`\ s (device
identified, capture started, capture bytes in order, capture completed or failed)
and builds the frames the host answers with. The wire format and the conversation
are specified in :mod:`drivers.serial_dermatoscope.protocol`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, TypeAlias

from drivers.serial_dermatoscope.protocol import (
    Ack,
    CaptureBegin,
    CaptureData,
    CaptureEnd,
    FrameDecoder,
    FrameError,
    Hello,
    HostHello,
    Message,
    MessageType,
    Nak,
    NakReason,
    encode_frame,
)

__all__ = [
    "CaptureBytes",
    "CaptureCompleted",
    "CaptureFailed",
    "CaptureStarted",
    "DeviceIdentified",
    "Event",
    "FrameDropped",
    "HostSession",
]


@dataclass(frozen=True, slots=True)
class DeviceIdentified:
    """The device answered our HOST_HELLO; any earlier capture in progress is abandoned."""

    hello: Hello


@dataclass(frozen=True, slots=True)
class CaptureStarted:
    """A capture is being offered (possibly again: check for an earlier save)."""

    begin: CaptureBegin


@dataclass(frozen=True, slots=True)
class CaptureBytes:
    """The next bytes of the current capture, in order and without gaps."""

    capture_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class CaptureCompleted:
    """All bytes arrived and match the declared length and SHA-256: save, then ACK."""

    capture_id: str
    length: int
    sha256: str


@dataclass(frozen=True, slots=True)
class CaptureFailed:
    """The capture cannot complete: discard what arrived and NAK it with ``reason``."""

    capture_id: str
    reason: NakReason
    detail: str


@dataclass(frozen=True, slots=True)
class FrameDropped:
    """A frame was unreadable (``reason`` as in :class:`FrameError`) or unexpected."""

    reason: str
    detail: str = ""


Event: TypeAlias = (
    DeviceIdentified
    | CaptureStarted
    | CaptureBytes
    | CaptureCompleted
    | CaptureFailed
    | FrameDropped
)
"""What :meth:`HostSession.receive` reports."""

_RECENT_CHUNKS: Final = 64
_RECENT_FAILED: Final = 16


class _Transfer:
    """State of the capture currently being received."""

    __slots__ = ("begin", "received", "recent", "sha")

    def __init__(self, begin: CaptureBegin) -> None:
        self.begin = begin
        self.received = 0
        self.sha = hashlib.sha256()
        # offset -> (length, digest) of the last chunks, to recognise duplicates
        # without keeping the data.
        self.recent: OrderedDict[int, tuple[int, bytes]] = OrderedDict()


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class HostSession:
    """The host side of the protocol as a state machine (no I/O).

    Send :meth:`hello_frame` whenever the port is (re)opened, pass every received
    byte to :meth:`receive` and act on the events; send :meth:`ack_frame` once a
    completed capture is durably saved and :meth:`nak_frame` for a failed one.
    Memory stays bounded: capture bytes are passed on, never accumulated.
    """

    def __init__(self, host: str = "dermgate", version: str = "") -> None:
        """Create a session that waits for the device's HELLO."""
        self._host_hello = HostHello(host, version)
        self._decoder = FrameDecoder()
        self._seq = 0
        self._identity: Hello | None = None
        self._transfer: _Transfer | None = None
        self._failed: OrderedDict[str, None] = OrderedDict()

    @property
    def identity(self) -> Hello | None:
        """The device's HELLO since the last :meth:`hello_frame`, if it has answered."""
        return self._identity

    @property
    def current(self) -> CaptureBegin | None:
        """The capture being received, if any."""
        return self._transfer.begin if self._transfer else None

    @property
    def received(self) -> int:
        """Bytes of the current capture received so far (0 when idle)."""
        return self._transfer.received if self._transfer else 0

    def _frame(self, message: Message) -> bytes:
        frame = encode_frame(message, self._seq)
        self._seq = (self._seq + 1) & 0xFFFF
        return frame

    def hello_frame(self) -> bytes:
        """Return a HOST_HELLO to send on (re)connect; forgets all receive state."""
        self._decoder.reset()
        self._identity = None
        self._transfer = None
        self._failed.clear()
        return b"\x00" + self._frame(self._host_hello)

    def ack_frame(self, capture_id: str) -> bytes:
        """Return an ACK for a capture that is durably saved."""
        return self._frame(Ack(capture_id))

    def nak_frame(self, capture_id: str, reason: NakReason) -> bytes:
        """Return a NAK refusing a capture; the device keeps it and re-offers it."""
        return self._frame(Nak(capture_id, NakReason(reason)))

    def fail_current(self, reason: NakReason, detail: str = "") -> CaptureFailed | None:
        """Abandon the capture in progress (e.g. on a stall); ``None`` if idle."""
        if self._transfer is None:
            return None
        return self._fail(self._transfer.begin.capture_id, reason, detail or str(reason))

    def _fail(self, capture_id: str, reason: NakReason, detail: str) -> CaptureFailed:
        if self._transfer is not None and self._transfer.begin.capture_id == capture_id:
            self._transfer = None
        self._failed[capture_id] = None
        self._failed.move_to_end(capture_id)
        while len(self._failed) > _RECENT_FAILED:
            self._failed.popitem(last=False)
        return CaptureFailed(capture_id, reason, detail)

    def receive(self, data: bytes) -> list[Event]:
        """Process received bytes; return what happened, in order."""
        events: list[Event] = []
        for item in self._decoder.feed(data):
            if isinstance(item, FrameError):
                self._on_error(item, events)
            else:
                self._on_message(item.message, events)
        return events

    def _on_error(self, error: FrameError, events: list[Event]) -> None:
        events.append(FrameDropped(error.reason, error.detail))
        if (
            self._identity is not None
            and error.message_type == MessageType.CAPTURE_BEGIN
            and error.capture_id is not None
        ):
            self._abort_other(
                error.capture_id, events, "new CAPTURE_BEGIN while a capture was in progress"
            )
            events.append(self._fail(error.capture_id, NakReason.BAD_METADATA, error.detail))

    def _on_message(self, message: Message, events: list[Event]) -> None:
        if isinstance(message, Hello):
            self._identity = message
            self._transfer = None
            self._failed.clear()
            events.append(DeviceIdentified(message))
            return
        if self._identity is None:
            return  # stale: from before the HELLO that answers our HOST_HELLO
        match message:
            case CaptureBegin():
                self._on_begin(message, events)
            case CaptureData():
                self._on_data(message, events)
            case CaptureEnd():
                self._on_end(message, events)
            case _:
                events.append(FrameDropped("unexpected", type(message).__name__))

    def _abort_other(self, capture_id: str, events: list[Event], why: str) -> bool:
        """Fail the transfer in progress if it is not ``capture_id``; True if none left."""
        transfer = self._transfer
        if transfer is not None and transfer.begin.capture_id != capture_id:
            events.append(self._fail(transfer.begin.capture_id, NakReason.SEQUENCE, why))
        return self._transfer is None

    def _on_begin(self, begin: CaptureBegin, events: list[Event]) -> None:
        if self._transfer is not None:
            events.append(
                self._fail(
                    self._transfer.begin.capture_id,
                    NakReason.SEQUENCE,
                    "new CAPTURE_BEGIN while a capture was in progress",
                )
            )
        self._failed.pop(begin.capture_id, None)
        self._transfer = _Transfer(begin)
        events.append(CaptureStarted(begin))

    def _on_data(self, chunk: CaptureData, events: list[Event]) -> None:
        cid = chunk.capture_id
        if self._abort_other(cid, events, f"data for capture {cid} arrived"):
            if cid not in self._failed:
                events.append(self._fail(cid, NakReason.SEQUENCE, "data without CAPTURE_BEGIN"))
            return
        transfer = self._transfer
        assert transfer is not None
        size = len(chunk.data)
        if chunk.offset < transfer.received:
            known = transfer.recent.get(chunk.offset)
            if known is not None and known == (size, _digest(chunk.data)):
                return  # duplicate frame
            events.append(
                self._fail(cid, NakReason.SEQUENCE, f"data at offset {chunk.offset} out of order")
            )
            return
        if chunk.offset > transfer.received:
            events.append(
                self._fail(
                    cid,
                    NakReason.SEQUENCE,
                    f"gap: expected offset {transfer.received}, got {chunk.offset}",
                )
            )
            return
        if chunk.offset + size > transfer.begin.length:
            events.append(
                self._fail(
                    cid,
                    NakReason.LENGTH,
                    f"data past the declared length of {transfer.begin.length} bytes",
                )
            )
            return
        if not size:
            return
        transfer.sha.update(chunk.data)
        transfer.received += size
        transfer.recent[chunk.offset] = (size, _digest(chunk.data))
        if len(transfer.recent) > _RECENT_CHUNKS:
            transfer.recent.popitem(last=False)
        events.append(CaptureBytes(cid, chunk.data))

    def _on_end(self, end: CaptureEnd, events: list[Event]) -> None:
        cid = end.capture_id
        if self._abort_other(cid, events, f"CAPTURE_END for capture {cid} arrived"):
            if cid not in self._failed:
                events.append(self._fail(cid, NakReason.SEQUENCE, "end without CAPTURE_BEGIN"))
            return
        transfer = self._transfer
        assert transfer is not None
        declared = transfer.begin.length
        if not end.length == declared == transfer.received:
            events.append(
                self._fail(
                    cid,
                    NakReason.LENGTH,
                    f"received {transfer.received} bytes; BEGIN said {declared},"
                    f" END said {end.length}",
                )
            )
            return
        digest = transfer.sha.hexdigest()
        self._transfer = None
        if digest != end.sha256.lower():
            events.append(self._fail(cid, NakReason.CHECKSUM, "SHA-256 mismatch"))
            return
        events.append(CaptureCompleted(cid, declared, digest))
