r"""The host side of the confocal USB protocol: the device's bulk IN stream, sans I/O.

:class:`StackReader` takes the bytes of the stream as they arrive and returns
:data:`Event`\ s (a stack offered, each frame with its position, its pixel bytes in
order, the stack completed or failed, garbage skipped), as specified in
:mod:`drivers.usb_confocal.protocol`. It never raises on what arrives and holds at
most one message (4 KiB), whatever the stack size.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from dataclasses import dataclass
from typing import TypeAlias

from drivers.usb_confocal.messages import (
    CRC,
    FRAME,
    MAGIC,
    MAX_PAYLOAD,
    PREFIX,
    MessageType,
    NakReason,
    StackHeader,
    check_stack_id,
    partial_magic,
)

__all__ = [
    "Event",
    "FrameStarted",
    "PixelBytes",
    "Resynchronised",
    "StackCompleted",
    "StackFailed",
    "StackReader",
    "StackStarted",
]


@dataclass(frozen=True, slots=True)
class StackStarted:
    """A stack is offered (possibly again)."""

    header: StackHeader


@dataclass(frozen=True, slots=True)
class FrameStarted:
    """The next frame of the current stack: its pixels follow as PixelBytes."""

    stack_id: str
    index: int
    z_um: float
    tile_row: int
    tile_col: int


@dataclass(frozen=True, slots=True)
class PixelBytes:
    """The next pixel bytes of the current stack, in order, without gaps."""

    stack_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class StackCompleted:
    """Every frame arrived and the SHA-256 matches: save, then ACK."""

    stack_id: str
    length: int
    sha256: str


@dataclass(frozen=True, slots=True)
class StackFailed:
    """The stack cannot complete: discard it and NAK ``stack_id`` (if known)."""

    stack_id: str | None
    reason: NakReason
    detail: str


@dataclass(frozen=True, slots=True)
class Resynchronised:
    """``skipped`` bytes that were not a valid message were dropped."""

    skipped: int
    reason: str


Event: TypeAlias = (
    StackStarted | FrameStarted | PixelBytes | StackCompleted | StackFailed | Resynchronised
)


class _Stack:
    __slots__ = ("header", "next_frame", "pixels_left", "received", "sha")

    def __init__(self, header: StackHeader) -> None:
        self.header = header
        self.next_frame = 0
        self.pixels_left = 0
        self.received = 0
        self.sha = hashlib.sha256()


class StackReader:
    """Parses the device's bulk IN stream into events (never raises on input)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._stack: _Stack | None = None
        self._skipped = 0
        self._last_reason = ""

    @property
    def current_stack(self) -> str | None:
        """The id of the stack being received, if any."""
        return self._stack.header.stack_id if self._stack is not None else None

    def feed(self, data: bytes) -> list[Event]:
        """Take the next bytes of the stream; return what they complete."""
        events: list[Event] = []
        view = memoryview(data)
        while True:
            stack = self._stack
            if stack is not None and stack.pixels_left:
                # Pixel bytes pass straight through (buffer is empty in this state).
                if not view:
                    break
                take = view[: stack.pixels_left].tobytes()
                view = view[len(take) :]
                stack.pixels_left -= len(take)
                stack.received += len(take)
                stack.sha.update(take)
                events.append(PixelBytes(stack.header.stack_id, take))
                continue
            if view:
                self._buffer += view
                view = view[len(view) :]
            message = self._next_message(events)
            if message is None:
                break
            kind, payload, rest = message
            # Anything after the message goes back through the loop (may be pixels).
            view = memoryview(bytes(rest))
            self._buffer.clear()
            self._handle(kind, payload, events)
        return events

    def interrupt(self, detail: str) -> list[Event]:
        """The link went away: the stack in progress (if any) fails; state is reset."""
        events: list[Event] = []
        if self._stack is not None:
            events.append(StackFailed(self._stack.header.stack_id, NakReason.INTERRUPTED, detail))
        self._stack = None
        self._buffer.clear()
        return events

    # -- framing --------------------------------------------------------------------

    def _next_message(self, events: list[Event]) -> tuple[int, bytes, bytes] | None:
        buffer = self._buffer
        while True:
            start = buffer.find(MAGIC)
            if start < 0:
                keep = partial_magic(buffer)
                self._drop(len(buffer) - keep, "no message start", events)
                return None
            if start:
                self._drop(start, "bytes before a message", events)
            if len(buffer) < PREFIX.size:
                return None
            _magic, kind, flags, length = PREFIX.unpack_from(buffer)
            if length > MAX_PAYLOAD or flags != 0:
                self._drop(1, "implausible message header", events)
                continue
            end = PREFIX.size + length + CRC.size
            if len(buffer) < end:
                return None
            body = bytes(buffer[4 : PREFIX.size + length])
            (crc,) = CRC.unpack_from(buffer, PREFIX.size + length)
            if zlib.crc32(body) != crc:
                self._drop(1, "message checksum", events)
                continue
            self._flush_skipped(events)
            payload = body[4:]
            rest = bytes(buffer[end:])
            return kind, payload, rest

    def _drop(self, count: int, reason: str, events: list[Event]) -> None:
        if count <= 0:
            return
        del self._buffer[:count]
        self._skipped += count
        self._last_reason = reason
        if self._skipped >= 1 << 16:
            self._flush_skipped(events)

    def _flush_skipped(self, events: list[Event]) -> None:
        if self._skipped:
            events.append(Resynchronised(self._skipped, self._last_reason))
            self._skipped = 0

    # -- conversation ---------------------------------------------------------------

    def _fail(self, reason: NakReason, detail: str, events: list[Event]) -> None:
        if self._stack is not None:
            events.append(StackFailed(self._stack.header.stack_id, reason, detail))
            self._stack = None

    def _handle(self, kind: int, payload: bytes, events: list[Event]) -> None:
        if kind == MessageType.STACK_HEADER:
            self._fail(NakReason.INTERRUPTED, "a new stack began", events)
            try:
                header = StackHeader.from_json(json.loads(payload))
            except (ValueError, UnicodeDecodeError, RecursionError) as err:
                stack_id = _loose_stack_id(payload)
                events.append(StackFailed(stack_id, NakReason.BAD_HEADER, f"field {err}"))
                return
            self._stack = _Stack(header)
            events.append(StackStarted(header))
            return
        stack = self._stack
        if kind == MessageType.FRAME:
            if stack is None or len(payload) != FRAME.size:
                self._fail(NakReason.SEQUENCE, "unexpected frame", events)
                return
            index, z_um, row, col = FRAME.unpack(payload)
            header = stack.header
            expected_tile = (
                (index // header.tile_cols, index % header.tile_cols)
                if header.kind == "mosaic"
                else (0, 0)
            )
            if index != stack.next_frame or index >= header.frames:
                self._fail(NakReason.SEQUENCE, f"frame {index} out of order", events)
                return
            if (row, col) != expected_tile or not math.isfinite(z_um):
                self._fail(NakReason.SEQUENCE, f"frame {index} position", events)
                return
            stack.next_frame += 1
            stack.pixels_left = header.frame_bytes
            events.append(FrameStarted(header.stack_id, index, z_um, row, col))
            return
        if kind == MessageType.STACK_TRAILER:
            if stack is None:
                return
            try:
                trailer = json.loads(payload)
                stack_id = trailer["stack_id"]
                length = int(trailer["length"])
                sha = str(trailer["sha256"]).lower()
            except (ValueError, UnicodeDecodeError, KeyError, TypeError, RecursionError):
                self._fail(NakReason.SEQUENCE, "unreadable trailer", events)
                return
            header = stack.header
            if stack_id != header.stack_id or stack.next_frame != header.frames:
                self._fail(NakReason.SEQUENCE, "trailer before the last frame", events)
            elif length != stack.received or length != header.length:
                self._fail(NakReason.LENGTH, f"{stack.received} bytes, {length} declared", events)
            elif sha != stack.sha.hexdigest():
                self._fail(NakReason.CHECKSUM, "SHA-256 mismatch", events)
            else:
                events.append(StackCompleted(header.stack_id, length, sha))
                self._stack = None
            return
        self._fail(NakReason.SEQUENCE, f"unexpected message type {kind}", events)


def _loose_stack_id(payload: bytes) -> str | None:
    try:
        data = json.loads(payload)
        return check_stack_id(data.get("stack_id")) if isinstance(data, dict) else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
