r"""The reference USB protocol of a reflectance confocal microscope, sans I/O.

Vendors publish no protocol for these devices, so DermGate defines this one; the
driver speaks it and so does the simulator, at the USB transfer level.

**Device**: vendor-specific class (bDeviceClass 0xFF), VID:PID ``0x1d50:0x6189``
(DermGate reference RCM-1), one configuration, one interface (class 0xFF) with two
bulk endpoints: ``0x81`` IN (device → host stream) and ``0x02`` OUT (host → device).

**Identity** by vendor control requests (bmRequestType 0xC0: IN, vendor, device),
bRequest ``0x01`` GET_IDENTITY, wValue = field, wIndex 0, answer UTF-8 (≤ 64 bytes):
0 manufacturer, 1 model, 2 serial number, 3 firmware version, 4 laser wavelength
in nm (decimal text).

**Messages** (both directions) are framed so a reader can resynchronise after
garbage::

    "DGCF" | type u8 | flags u8 (0) | length u16 LE | payload (length bytes) | CRC-32 u32 LE

The CRC-32 (zlib) covers type, flags, length and payload. A payload is at most
4096 bytes. JSON payloads are UTF-8 objects.

Device → host (bulk IN):

* ``0x01 STACK_HEADER`` JSON: ``stack_id`` (1–64 printable ASCII, unique per
  device), ``kind`` ("z-stack" | "mosaic"), ``frames``, ``width``, ``height``,
  ``bits`` (8 | 16), ``pixel_spacing_um``, ``z_step_um``, ``wavelength_nm``,
  ``objective`` (text), ``magnification``, optional ``numerical_aperture``,
  ``acquired_at`` (ISO 8601), optional ``frame_ms`` (time to acquire one frame,
  ms: DICOM needs it as Frame Acquisition Duration of each original frame), and
  for mosaics ``tile_rows``, ``tile_cols`` (rows × cols = frames; tiles are sent
  row by row).
* ``0x02 FRAME`` binary ``<IdHH``: frame index (0-based, in order), z position
  in µm below the surface, tile row, tile column. It is followed **immediately and
  unframed** by the frame's raw pixels: width × height × bits/8 bytes, little
  endian, row by row. The pixels are not CRC-protected; the stack's SHA-256 is.
* ``0x03 STACK_TRAILER`` JSON: ``stack_id``, ``length`` (all pixel bytes),
  ``sha256`` (hex digest of all pixel bytes of all frames, in order).

Host → device (bulk OUT): ``0x10 HOST_HELLO`` JSON ``{"host": …}`` (the device
restarts offering from its oldest unacknowledged stack); ``0x11 ACK`` JSON
``{"stack_id": …}`` sent **only after the stack is durable**; ``0x12 NAK`` JSON
``{"stack_id": …, "reason": …}`` (:class:`NakReason`).

The device keeps every stack until it is ACKed and offers unacknowledged stacks
again after a NAK, a reconnect or a HOST_HELLO; the host recognises a re-offer of
a stack it already saved and ACKs it again. A NAK may come while the stack is
still streaming (the host refuses it at its header, e.g. disk full, TOO_LARGE
when frames × width × height × bits/8 is more than it accepts, or TOO_MANY_FRAMES
when ``frames`` is more than it accepts, however small each frame): the device
then abandons that offer at once, and the host drops its reader state
(:meth:`StackReader.interrupt`) so the bytes still in flight are skipped as
garbage up to the next message. (Pixels are unframed, so a reader that kept
waiting for the rest of an abandoned frame would swallow the next header.)

:class:`StackReader` parses the IN stream: bytes in, :data:`Event`\ s out. It never
raises on garbage: bytes that are not a valid message are skipped until the next
valid one (``Resynchronised``); a stack that cannot complete (a message missing,
a frame out of order, a wrong checksum, an interrupted transfer) ends with
``StackFailed`` so the host can discard what it staged and NAK. Pixel bytes are
passed through in the pieces they arrive in, never accumulated: memory is bounded
by the largest message (4 KiB), whatever the stack size.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

__all__ = [
    "EP_IN",
    "EP_OUT",
    "MAGIC",
    "PRODUCT_ID",
    "VENDOR_ID",
    "Event",
    "FrameStarted",
    "IdentityField",
    "MessageType",
    "NakReason",
    "PixelBytes",
    "Resynchronised",
    "StackCompleted",
    "StackFailed",
    "StackHeader",
    "StackReader",
    "StackStarted",
    "encode_frame_header",
    "encode_json",
    "encode_message",
]

VENDOR_ID: Final = 0x1D50
PRODUCT_ID: Final = 0x6189
EP_IN: Final = 0x81
EP_OUT: Final = 0x02
INTERFACE: Final = 0
REQUEST_TYPE_VENDOR_IN: Final = 0xC0
GET_IDENTITY: Final = 0x01

MAGIC: Final = b"DGCF"
MAX_PAYLOAD: Final = 4096
_PREFIX: Final = struct.Struct("<4sBBH")
_CRC: Final = struct.Struct("<I")
_FRAME: Final = struct.Struct("<IdHH")
_MAX_FRAMES: Final = 1 << 20
_MAX_SIDE: Final = 0xFFFF


class IdentityField(enum.IntEnum):
    """wValue of GET_IDENTITY."""

    MANUFACTURER = 0
    MODEL = 1
    SERIAL = 2
    FIRMWARE = 3
    WAVELENGTH_NM = 4


class MessageType(enum.IntEnum):
    """Message types on the wire."""

    STACK_HEADER = 0x01
    FRAME = 0x02
    STACK_TRAILER = 0x03
    HOST_HELLO = 0x10
    ACK = 0x11
    NAK = 0x12


class NakReason(enum.StrEnum):
    """Why the host refused a stack (the device keeps it and offers it again)."""

    BAD_HEADER = "BAD_HEADER"
    SEQUENCE = "SEQUENCE"
    CHECKSUM = "CHECKSUM"
    LENGTH = "LENGTH"
    INTERRUPTED = "INTERRUPTED"
    TIMEOUT = "TIMEOUT"
    DISK_FULL = "DISK_FULL"
    STORAGE_ERROR = "STORAGE_ERROR"
    CONFLICT = "CONFLICT"
    #: The stack is larger than the host accepts (the size its header announces, or
    #: what it streams); refused at its header whenever offered.
    TOO_LARGE = "TOO_LARGE"
    #: The stack has more frames than the host accepts (the host's ``max_frames``;
    #: the header announces the count, and no frame beyond it is ever taken);
    #: refused at its header whenever offered.
    TOO_MANY_FRAMES = "TOO_MANY_FRAMES"


@dataclass(frozen=True, slots=True)
class StackHeader:
    """A checked STACK_HEADER."""

    stack_id: str
    kind: str
    frames: int
    width: int
    height: int
    bits: int
    pixel_spacing_um: float
    z_step_um: float
    wavelength_nm: int
    objective: str
    magnification: float | None
    numerical_aperture: float | None
    acquired_at: str
    tile_rows: int
    tile_cols: int
    frame_ms: float | None = None

    @property
    def frame_bytes(self) -> int:
        """Pixel bytes of one frame."""
        return self.width * self.height * (self.bits // 8)

    @property
    def length(self) -> int:
        """Pixel bytes of the whole stack."""
        return self.frames * self.frame_bytes

    def to_json(self) -> dict[str, Any]:
        """The header as the device sends it."""
        data: dict[str, Any] = {
            "stack_id": self.stack_id,
            "kind": self.kind,
            "frames": self.frames,
            "width": self.width,
            "height": self.height,
            "bits": self.bits,
            "pixel_spacing_um": self.pixel_spacing_um,
            "z_step_um": self.z_step_um,
            "wavelength_nm": self.wavelength_nm,
            "objective": self.objective,
            "magnification": self.magnification,
            "numerical_aperture": self.numerical_aperture,
            "acquired_at": self.acquired_at,
        }
        if self.frame_ms is not None:
            data["frame_ms"] = self.frame_ms
        if self.kind == "mosaic":
            data["tile_rows"] = self.tile_rows
            data["tile_cols"] = self.tile_cols
        return data

    @classmethod
    def from_json(cls, data: object) -> StackHeader:
        """Check a decoded header; raises ValueError naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError("header is not an object")  # noqa: TRY004
        stack_id = _stack_id(data.get("stack_id"))
        kind = data.get("kind")
        if kind not in ("z-stack", "mosaic"):
            raise ValueError("kind")
        frames = _int(data, "frames", 1, _MAX_FRAMES)
        width = _int(data, "width", 1, _MAX_SIDE)
        height = _int(data, "height", 1, _MAX_SIDE)
        bits = _int(data, "bits", 8, 16)
        if bits not in (8, 16):
            raise ValueError("bits")
        tile_rows = tile_cols = 0
        if kind == "mosaic":
            tile_rows = _int(data, "tile_rows", 1, _MAX_FRAMES)
            tile_cols = _int(data, "tile_cols", 1, _MAX_FRAMES)
            if tile_rows * tile_cols != frames:
                raise ValueError("tile grid")
        acquired_at = data.get("acquired_at") or ""
        objective = data.get("objective") or ""
        if not isinstance(acquired_at, str) or not isinstance(objective, str):
            raise ValueError("text field")  # noqa: TRY004
        return cls(
            stack_id=stack_id,
            kind=kind,
            frames=frames,
            width=width,
            height=height,
            bits=bits,
            pixel_spacing_um=_float(data, "pixel_spacing_um", positive=True),
            z_step_um=_float(data, "z_step_um"),
            wavelength_nm=_int(data, "wavelength_nm", 1, 100_000),
            objective=objective[:64],
            magnification=_opt_float(data, "magnification"),
            numerical_aperture=_opt_float(data, "numerical_aperture"),
            acquired_at=acquired_at[:40],
            tile_rows=tile_rows,
            tile_cols=tile_cols,
            frame_ms=_opt_float(data, "frame_ms"),
        )


def _stack_id(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= 64
        or not value.isascii()
        or not value.isprintable()
    ):
        raise ValueError("stack_id")
    return value


def _int(data: dict[str, Any], key: str, low: int, high: int) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(key)
    return value


def _float(data: dict[str, Any], key: str, *, positive: bool = False) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(key)
    if value < 0 or (positive and value == 0):
        raise ValueError(key)
    return float(value)


def _opt_float(data: dict[str, Any], key: str) -> float | None:
    return None if data.get(key) is None else _float(data, key, positive=True)


# --- encoding --------------------------------------------------------------------


def encode_message(kind: MessageType, payload: bytes) -> bytes:
    """One framed message."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("payload too large")
    body = struct.pack("<BBH", kind, 0, len(payload)) + payload
    return MAGIC + body + _CRC.pack(zlib.crc32(body))


def encode_json(kind: MessageType, data: dict[str, Any]) -> bytes:
    """A framed message with a JSON payload."""
    return encode_message(kind, json.dumps(data, separators=(",", ":")).encode())


def encode_frame_header(index: int, z_um: float, tile_row: int = 0, tile_col: int = 0) -> bytes:
    """A FRAME message (the frame's pixels follow it unframed)."""
    return encode_message(MessageType.FRAME, _FRAME.pack(index, z_um, tile_row, tile_col))


# --- events ----------------------------------------------------------------------


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
                keep = _partial_magic(buffer)
                self._drop(len(buffer) - keep, "no message start", events)
                return None
            if start:
                self._drop(start, "bytes before a message", events)
            if len(buffer) < _PREFIX.size:
                return None
            _magic, kind, flags, length = _PREFIX.unpack_from(buffer)
            if length > MAX_PAYLOAD or flags != 0:
                self._drop(1, "implausible message header", events)
                continue
            end = _PREFIX.size + length + _CRC.size
            if len(buffer) < end:
                return None
            body = bytes(buffer[4 : _PREFIX.size + length])
            (crc,) = _CRC.unpack_from(buffer, _PREFIX.size + length)
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
            if stack is None or len(payload) != _FRAME.size:
                self._fail(NakReason.SEQUENCE, "unexpected frame", events)
                return
            index, z_um, row, col = _FRAME.unpack(payload)
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


def _partial_magic(buffer: bytearray) -> int:
    """How many trailing bytes could be the start of MAGIC."""
    for keep in range(min(len(MAGIC) - 1, len(buffer)), 0, -1):
        if buffer.endswith(MAGIC[:keep]):
            return keep
    return 0


def _loose_stack_id(payload: bytes) -> str | None:
    try:
        data = json.loads(payload)
        return _stack_id(data.get("stack_id")) if isinstance(data, dict) else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


# --- host → device ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostMessage:
    """A host → device message as the device decodes it."""

    kind: MessageType
    data: dict[str, Any]


class HostMessageReader:
    """Parses the host's bulk OUT stream (device side); skips garbage, never raises."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[HostMessage]:
        """Take bytes; return the complete, valid messages."""
        self._buffer += data
        out: list[HostMessage] = []
        buffer = self._buffer
        while True:
            start = buffer.find(MAGIC)
            if start < 0:
                del buffer[: len(buffer) - _partial_magic(buffer)]
                return out
            del buffer[:start]
            if len(buffer) < _PREFIX.size:
                return out
            _magic, kind, flags, length = _PREFIX.unpack_from(buffer)
            if length > MAX_PAYLOAD or flags != 0:
                del buffer[:1]
                continue
            end = _PREFIX.size + length + _CRC.size
            if len(buffer) < end:
                return out
            body = bytes(buffer[4 : _PREFIX.size + length])
            (crc,) = _CRC.unpack_from(buffer, _PREFIX.size + length)
            if zlib.crc32(body) != crc:
                del buffer[:1]
                continue
            del buffer[:end]
            try:
                data = json.loads(body[4:])
                message_type = MessageType(kind)
            except (ValueError, UnicodeDecodeError, RecursionError):
                continue
            if isinstance(data, dict):
                out.append(HostMessage(message_type, data))


def encode_stack(header: StackHeader, frames: Iterable[tuple[float, bytes]]) -> Iterator[bytes]:
    """The device side of one stack: header, each frame (z position, pixels), trailer.

    ``frames`` may be a generator, so a device can stream a stack larger than its
    memory; the SHA-256 of the trailer is computed on the way.
    """
    sha = hashlib.sha256()
    length = 0
    yield encode_json(MessageType.STACK_HEADER, header.to_json())
    for index, (z_um, pixels) in enumerate(frames):
        row, col = (
            (index // header.tile_cols, index % header.tile_cols)
            if header.kind == "mosaic"
            else (0, 0)
        )
        yield encode_frame_header(index, z_um, row, col)
        sha.update(pixels)
        length += len(pixels)
        yield pixels
    yield encode_json(
        MessageType.STACK_TRAILER,
        {"stack_id": header.stack_id, "length": length, "sha256": sha.hexdigest()},
    )
