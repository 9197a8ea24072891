"""Frames of the serial dermatoscope protocol: COBS, type, seq and CRC (sans I/O).

``COBS(type u8 | seq u16 BE | payload | crc32 u32 BE) + b"\\x00"``, as specified in
:mod:`drivers.serial_dermatoscope.protocol`. :func:`encode_frame` builds the bytes of
one message; :class:`FrameDecoder` splits a received byte stream into
:class:`Frame` (or :class:`FrameError` for a frame it dropped), with bounded memory
and without ever raising on what arrives.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final

from drivers.serial_dermatoscope.messages import Message, MessageType, ProtocolValueError
from drivers.serial_dermatoscope.payloads import (
    decode_payload,
    encode_payload,
    salvage_capture_id,
)

__all__ = [
    "DATA_CHUNK",
    "MAX_BODY",
    "MAX_ENCODED",
    "CobsError",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "cobs_decode",
    "cobs_encode",
    "decode_body",
    "encode_body",
    "encode_frame",
]

MAX_BODY: Final = 65536 + 64
"""Largest frame body (type + seq + payload + crc) a receiver accepts."""

MAX_ENCODED: Final = MAX_BODY + MAX_BODY // 254 + 1
"""Largest COBS encoding of a :data:`MAX_BODY` body; longer runs are garbage."""

DATA_CHUNK: Final = 32 * 1024
"""Chunk size the reference device uses for CAPTURE_DATA (any size that fits works)."""

_HEADER = struct.Struct(">BH")
_CRC = struct.Struct(">I")
_OVERHEAD: Final = _HEADER.size + _CRC.size
_MAX_PAYLOAD: Final = MAX_BODY - _OVERHEAD


class CobsError(ValueError):
    """Input is not a valid COBS encoding."""


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded, CRC-checked frame."""

    seq: int
    message: Message


@dataclass(frozen=True, slots=True)
class FrameError:
    """A frame that was dropped, and why.

    ``reason`` is one of ``"cobs"``, ``"too-long"``, ``"short"``, ``"crc"``,
    ``"unknown-type"``, ``"bad-payload"``. For a ``"bad-payload"`` frame whose
    type and capture id could still be read, ``message_type`` and ``capture_id``
    say which capture it was about (so a malformed CAPTURE_BEGIN can be NAKed with
    ``BAD_METADATA``).
    """

    reason: str
    detail: str = ""
    message_type: int | None = None
    capture_id: str | None = None


# ---------------------------------------------------------------------------
# COBS


def cobs_encode(data: bytes) -> bytes:
    """Return the COBS encoding of ``data`` (no 0x00 byte in it, no delimiter added)."""
    out = bytearray()
    parts = bytes(data).split(b"\x00")
    last = len(parts) - 1
    for index, part in enumerate(parts):
        pos = 0
        while len(part) - pos >= 254:
            out.append(0xFF)
            out += part[pos : pos + 254]
            pos += 254
        rest = len(part) - pos
        # A full 254-byte block at the very end needs no trailing 0x01 code byte.
        if rest or pos == 0 or index != last:
            out.append(rest + 1)
            out += part[pos:]
    return bytes(out)


def cobs_decode(encoded: bytes) -> bytes:
    """Invert :func:`cobs_encode`; raise :class:`CobsError` on invalid input."""
    encoded = bytes(encoded)
    if b"\x00" in encoded:
        raise CobsError("0x00 inside a COBS block")
    out = bytearray()
    pos = 0
    size = len(encoded)
    while pos < size:
        code = encoded[pos]
        end = pos + code
        if end > size:
            raise CobsError("COBS block runs past the end of the frame")
        out += encoded[pos + 1 : end]
        pos = end
        if code != 0xFF and pos < size:
            out.append(0)
    return bytes(out)


# ---------------------------------------------------------------------------
# Bodies


def encode_body(message: Message, seq: int) -> bytes:
    """Return the frame body (type, seq, payload, CRC) of ``message``, before COBS."""
    if not 0 <= seq <= 0xFFFF:
        raise ValueError("seq must be in 0..65535")
    msg_type, payload = encode_payload(message)
    if len(payload) > _MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_BODY")
    head = _HEADER.pack(msg_type, seq) + payload
    return head + _CRC.pack(zlib.crc32(head))


def encode_frame(message: Message, seq: int) -> bytes:
    """Return ``message`` as wire bytes: ``COBS(body) + b"\\x00"``."""
    return cobs_encode(encode_body(message, seq)) + b"\x00"


def decode_body(body: bytes) -> Frame | FrameError:
    """Decode one frame body (already COBS-decoded); never raises on bad input."""
    body = bytes(body)
    if len(body) < _OVERHEAD:
        return FrameError("short", f"{len(body)}-byte frame")
    if len(body) > MAX_BODY:
        return FrameError("too-long", f"{len(body)}-byte frame")
    head, (crc,) = body[:-4], _CRC.unpack(body[-4:])
    if zlib.crc32(head) != crc:
        return FrameError("crc", "CRC-32 mismatch")
    type_byte, seq = _HEADER.unpack_from(head)
    try:
        msg_type = MessageType(type_byte)
    except ValueError:
        return FrameError("unknown-type", f"type 0x{type_byte:02x}")
    payload = head[_HEADER.size :]
    try:
        message = decode_payload(msg_type, payload)
    except (ProtocolValueError, TypeError) as err:
        return FrameError(
            "bad-payload",
            f"{msg_type.name}: {err}",
            message_type=int(msg_type),
            capture_id=salvage_capture_id(msg_type, payload),
        )
    return Frame(seq, message)


class FrameDecoder:
    """Split a byte stream into frames; bounded memory, never raises on bad input."""

    def __init__(self) -> None:
        """Start with an empty buffer, in sync (the first 0x00 ends the first frame)."""
        self._buffer = bytearray()
        self._discarding = False

    def reset(self) -> None:
        """Forget any partial frame (e.g. after the port was reopened)."""
        self._buffer.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        """Add received bytes; return the frames (and dropped frames) they complete."""
        data = bytes(data)
        results: list[Frame | FrameError] = []
        start = 0
        while True:
            end = data.find(0, start)
            if end < 0:
                self._collect(data, start, len(data), results)
                return results
            self._collect(data, start, end, results)
            start = end + 1
            if self._discarding:
                self._discarding = False
                continue
            encoded = bytes(self._buffer)
            self._buffer.clear()
            if encoded:
                results.append(self._decode(encoded))

    def _collect(
        self, data: bytes, start: int, end: int, results: list[Frame | FrameError]
    ) -> None:
        if self._discarding or start == end:
            return
        if len(self._buffer) + (end - start) > MAX_ENCODED:
            self._buffer.clear()
            self._discarding = True
            results.append(FrameError("too-long", f"no delimiter within {MAX_ENCODED} bytes"))
            return
        self._buffer += data[start:end]

    @staticmethod
    def _decode(encoded: bytes) -> Frame | FrameError:
        try:
            body = cobs_decode(encoded)
        except CobsError as err:
            return FrameError("cobs", str(err))
        return decode_body(body)
