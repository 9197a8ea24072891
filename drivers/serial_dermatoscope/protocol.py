"""DermGate reference protocol for serial (USB-CDC) dermatoscopes, sans I/O.

This module is the specification of the wire protocol and its reference
implementation. It does no I/O and imports nothing from the gateway: callers feed it
bytes and send the bytes it returns. A vendor who wants a device to work with
DermGate out of the box implements the device side of what is written here.

Framing
=======
Every frame on the wire is ``COBS(body) + b"\\x00"``::

    body = type (u8) | seq (u16 BE) | payload (0..n bytes) | crc32 (u32 BE)

* COBS is Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999): the encoded
  body contains no 0x00 byte, so 0x00 always ends a frame and a receiver can
  resynchronise after garbage by waiting for the next 0x00.
* ``crc32`` is ``zlib.crc32(type + seq + payload)`` (CRC-32/ISO-HDLC, the one in
  zlib, Ethernet and PNG).
* ``seq`` counts the frames each side sends, starting at any value and adding 1 per
  frame, modulo 65536. It is for diagnostics (captures in both directions) only;
  correctness never depends on it: data frames carry their own byte offset.
* ``len(body)`` is at most :data:`MAX_BODY` (65536 + 64) bytes. A receiver discards
  any run of more than :data:`MAX_ENCODED` bytes without a 0x00 as garbage, so its
  memory stays bounded whatever arrives.
* Empty frames (a 0x00 right after a 0x00) are ignored. A sender may send a lone
  0x00 at any time to make sure its next frame starts cleanly; both sides do so
  before HOST_HELLO and HELLO.
* A frame that fails COBS decoding or the CRC, is too short or too long, has an
  unknown type or a malformed payload is dropped; the protocol recovers through
  offsets, lengths, checksums and NAK/re-offer, never by retransmitting frames.

Messages
========
JSON payloads are UTF-8 JSON objects. Field types are checked strictly (``true`` is
not a number, ``1.0`` is not an integer); unknown keys are ignored so later versions
can add fields. Keys marked "may be null" may also be left out.

=====  ==============  ======  ===============================================
type   name            dir     payload
=====  ==============  ======  ===============================================
0x01   HOST_HELLO      h → d   JSON ``{"host": str, "version": str}``
0x02   HELLO           d → h   JSON ``{"manufacturer": str, "model": str,
                               "serial": str, "firmware": str,
                               "capabilities": [str]}``
0x10   CAPTURE_BEGIN   d → h   JSON, see below
0x11   CAPTURE_DATA    d → h   binary ``u8 n | capture_id (n bytes UTF-8) |
                               u64 BE offset | chunk``
0x12   CAPTURE_END     d → h   JSON ``{"capture_id": str, "length": int,
                               "sha256": str (64 hex digits)}``
0x20   ACK             h → d   JSON ``{"capture_id": str}``
0x21   NAK             h → d   JSON ``{"capture_id": str, "reason": str}``
=====  ==============  ======  ===============================================

CAPTURE_BEGIN is ``{"capture_id": str, "length": int, "timestamp": str,
"polarization": str, "contact": str, "immersion": str, "magnification": number,
"color_temperature_k": int, "anatomic_site": str, "laterality": str,
"lesion_id": str}`` where every key after ``length`` may be null:

* ``timestamp``: ISO 8601 device time of the capture (``2024-05-01T10:31:07``,
  with or without UTC offset);
* ``polarization``: ``POLARIZED`` | ``NON_POLARIZED``;
* ``contact``: ``CONTACT`` | ``NON_CONTACT``;
* ``immersion``: ``ULTRASOUND_GEL`` | ``ALCOHOL`` | ``WATER`` | ``MINERAL_OIL`` |
  ``PLASTIC_CAP``, only meaningful with ``CONTACT``;
* ``magnification``: optical magnification factor, > 0;
* ``color_temperature_k``: illumination colour temperature in kelvin, > 0;
* ``anatomic_site``: a SNOMED CT code value (digits) from DICOM CID 4029
  "Dermatology Anatomic Site", chosen on the device;
* ``laterality``: ``R`` | ``L`` | ``U`` | ``B``;
* ``lesion_id``: the device's lesion label (1 to 64 printable characters).

A ``capture_id`` is 1 to 64 characters from ``A-Z a-z 0-9 . _ -``, not starting with
``.`` or ``-``, and unique per device serial number for the device's lifetime: the
pair (serial, capture_id) is how the host recognises a re-offered capture.
``length`` is the capture's size in bytes; ``sha256`` the lowercase (or uppercase)
hex SHA-256 of all its bytes. Capture data is a baseline JPEG (JFIF or EXIF) for a
dermatoscope, though the protocol does not depend on it.

Conversation
============
::

    host                                  device
    HOST_HELLO  ───────────────────────▶
                ◀───────────────────────  HELLO
                ◀───────────────────────  CAPTURE_BEGIN  (capture A)
                ◀───────────────────────  CAPTURE_DATA × k (offsets 0, c, 2c, …)
                ◀───────────────────────  CAPTURE_END
    (capture stored durably)
    ACK(A)      ───────────────────────▶
                ◀───────────────────────  CAPTURE_BEGIN  (capture B) …

1. The host sends HOST_HELLO whenever it opens the port (and may send it again at
   any time). The device abandons any transfer in progress, answers HELLO and then
   offers, from the start and oldest first, every capture not yet ACKed.
2. The device offers one capture at a time: BEGIN, DATA in increasing offset order
   without gaps (offset of each chunk = sum of the previous chunk sizes), END. It
   then waits for ACK or NAK of that capture before offering the next one.
3. The host checks that the data is gap-free, that the byte count matches BEGIN and
   END, and the SHA-256. It sends ACK **only after the capture is durably saved**.
   On ACK the device may delete the capture.
4. NAK carries a reason (:class:`NakReason`). The device keeps the capture and offers
   it again later (after a short delay, or on the next HOST_HELLO). A host may NAK a
   capture while its data is still arriving; the device should stop sending it.
   ``length`` in CAPTURE_BEGIN is a claim the host checks against its limits, never
   an allocation: a capture larger than the host accepts is NAKed ``TOO_LARGE``
   right at its BEGIN (a device should then offer its other captures first).
5. A host that sees a re-offer of a capture it already saved (same serial and
   capture id, same SHA-256) ACKs it again without storing a second copy. Same id
   with different content is refused with ``CONFLICT``.
6. A device that gets neither ACK nor NAK within its timeout (30 s suggested) treats
   the host as gone and waits for the next HOST_HELLO. A host whose transfer stalls
   (no new, in-order data for its stall timeout: lone 0x00 bytes, duplicated or
   unreadable frames do not count) NAKs the capture with ``TIMEOUT``.
7. Frames the host receives after sending HOST_HELLO and before the HELLO that
   answers it are stale (from before the reconnect) and are ignored. A duplicated
   DATA frame (same offset, same bytes) is ignored.

The host side of this conversation is
:class:`~drivers.serial_dermatoscope.session.HostSession`. The device side is small
enough to be written directly on top of :func:`encode_frame` and
:class:`FrameDecoder`; the simulator in this package does so.
"""

from __future__ import annotations

import enum
import json
import math
import re
import struct
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeAlias

__all__ = [
    "DATA_CHUNK",
    "MAX_BODY",
    "MAX_ENCODED",
    "Ack",
    "CaptureBegin",
    "CaptureData",
    "CaptureEnd",
    "CobsError",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "Hello",
    "HostHello",
    "Message",
    "MessageType",
    "Nak",
    "NakReason",
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
_OFFSET = struct.Struct(">Q")
_OVERHEAD: Final = _HEADER.size + _CRC.size
_MAX_PAYLOAD: Final = MAX_BODY - _OVERHEAD

_CAPTURE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_SCT_CODE = re.compile(r"[0-9]{6,18}")

_POLARIZATIONS: Final = frozenset({"POLARIZED", "NON_POLARIZED"})
_CONTACTS: Final = frozenset({"CONTACT", "NON_CONTACT"})
_IMMERSIONS: Final = frozenset({"ULTRASOUND_GEL", "ALCOHOL", "WATER", "MINERAL_OIL", "PLASTIC_CAP"})
_LATERALITIES: Final = frozenset({"R", "L", "U", "B"})


class MessageType(enum.IntEnum):
    """The type byte of a frame."""

    HOST_HELLO = 0x01
    HELLO = 0x02
    CAPTURE_BEGIN = 0x10
    CAPTURE_DATA = 0x11
    CAPTURE_END = 0x12
    ACK = 0x20
    NAK = 0x21


class NakReason(enum.StrEnum):
    """Why the host refuses a capture; the device keeps it and offers it again."""

    CHECKSUM = "CHECKSUM"
    """SHA-256 of the received bytes differs from CAPTURE_END."""
    LENGTH = "LENGTH"
    """Byte count differs between BEGIN, END and the data, or data past the length."""
    SEQUENCE = "SEQUENCE"
    """Gap or out-of-order data (e.g. after a dropped corrupt frame)."""
    TIMEOUT = "TIMEOUT"
    """The transfer stalled."""
    DISK_FULL = "DISK_FULL"
    """The host has no room for this capture now; try again later."""
    TOO_LARGE = "TOO_LARGE"
    """The capture is larger than the host accepts (its configured limit); it is
    refused whenever offered, until the host's limit is raised."""
    STORAGE_ERROR = "STORAGE_ERROR"
    """The host could not store the capture for another reason."""
    CONFLICT = "CONFLICT"
    """The capture id was already saved with different content."""
    BAD_METADATA = "BAD_METADATA"
    """CAPTURE_BEGIN was malformed or its metadata unusable."""


_NAK_REASONS: Final = frozenset(reason.value for reason in NakReason)


class ProtocolValueError(ValueError):
    """A message field has a wrong type or value (raised by message constructors)."""


class CobsError(ValueError):
    """Input is not a valid COBS encoding."""


# ---------------------------------------------------------------------------
# Field checks shared by constructors (encode side) and the decoder.


def _check_str(name: str, value: object, *, max_len: int = 256) -> str:
    if not isinstance(value, str):
        raise ProtocolValueError(f"{name} must be a string")
    if len(value) > max_len:
        raise ProtocolValueError(f"{name} longer than {max_len} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ProtocolValueError(f"{name} contains control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolValueError(f"{name} is not valid Unicode") from None
    return value


def _check_capture_id(value: object) -> str:
    if not isinstance(value, str) or _CAPTURE_ID.fullmatch(value) is None:
        raise ProtocolValueError("capture_id must be 1-64 characters of A-Z a-z 0-9 . _ -")
    return value


def _check_length(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise ProtocolValueError(f"{name} must be an integer in 0..2^64-1")
    return value


def _check_choice(name: str, value: object, allowed: frozenset[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise ProtocolValueError(f"{name} must be one of {sorted(allowed)} or null")
    return value


def _check_optional_str(name: str, value: object, *, max_len: int) -> str | None:
    if value is None:
        return None
    text = _check_str(name, value, max_len=max_len)
    if not text:
        raise ProtocolValueError(f"{name} must not be empty (use null)")
    return text


@dataclass(frozen=True, slots=True)
class HostHello:
    """HOST_HELLO (0x01, host → device): identify and (re)offer all unACKed captures."""

    host: str
    version: str

    def __post_init__(self) -> None:
        _check_str("host", self.host)
        _check_str("version", self.version)


@dataclass(frozen=True, slots=True)
class Hello:
    """HELLO (0x02, device → host): the device's identity, answering HOST_HELLO."""

    manufacturer: str
    model: str
    serial: str
    firmware: str
    capabilities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_str("manufacturer", self.manufacturer)
        _check_str("model", self.model)
        _check_str("serial", self.serial)
        _check_str("firmware", self.firmware)
        if not isinstance(self.capabilities, tuple):
            raise ProtocolValueError("capabilities must be a tuple of strings")
        if len(self.capabilities) > 64:
            raise ProtocolValueError("more than 64 capabilities")
        for item in self.capabilities:
            _check_str("capability", item, max_len=64)


@dataclass(frozen=True, slots=True)
class CaptureBegin:
    """CAPTURE_BEGIN (0x10, device → host): a capture's metadata, before its bytes.

    Fields stay plain strings and numbers (the values listed in the module
    docstring); the driver adapter turns them into gateway types.
    """

    capture_id: str
    length: int
    timestamp: str | None = None
    polarization: str | None = None
    contact: str | None = None
    immersion: str | None = None
    magnification: float | None = None
    color_temperature_k: int | None = None
    anatomic_site: str | None = None
    laterality: str | None = None
    lesion_id: str | None = None

    def __post_init__(self) -> None:
        _check_capture_id(self.capture_id)
        _check_length("length", self.length)
        if self.timestamp is not None:
            _check_str("timestamp", self.timestamp, max_len=64)
            try:
                datetime.fromisoformat(self.timestamp)
            except ValueError:
                raise ProtocolValueError("timestamp is not ISO 8601") from None
        _check_choice("polarization", self.polarization, _POLARIZATIONS)
        _check_choice("contact", self.contact, _CONTACTS)
        _check_choice("immersion", self.immersion, _IMMERSIONS)
        if self.magnification is not None and (
            isinstance(self.magnification, bool)
            or not isinstance(self.magnification, int | float)
            or not math.isfinite(self.magnification)
            or self.magnification <= 0
        ):
            raise ProtocolValueError("magnification must be a positive number or null")
        if self.color_temperature_k is not None and (
            isinstance(self.color_temperature_k, bool)
            or not isinstance(self.color_temperature_k, int)
            or not 0 < self.color_temperature_k < 100_000
        ):
            raise ProtocolValueError("color_temperature_k must be a positive integer or null")
        if self.anatomic_site is not None and (
            not isinstance(self.anatomic_site, str)
            or _SCT_CODE.fullmatch(self.anatomic_site) is None
        ):
            raise ProtocolValueError("anatomic_site must be a SNOMED CT code value or null")
        _check_choice("laterality", self.laterality, _LATERALITIES)
        _check_optional_str("lesion_id", self.lesion_id, max_len=64)


@dataclass(frozen=True, slots=True)
class CaptureData:
    """CAPTURE_DATA (0x11, device → host): ``data`` belongs at ``offset`` of a capture."""

    capture_id: str
    offset: int
    data: bytes

    def __post_init__(self) -> None:
        _check_capture_id(self.capture_id)
        _check_length("offset", self.offset)
        if not isinstance(self.data, bytes):
            raise ProtocolValueError("data must be bytes")


@dataclass(frozen=True, slots=True)
class CaptureEnd:
    """CAPTURE_END (0x12, device → host): total length and SHA-256 of a capture."""

    capture_id: str
    length: int
    sha256: str

    def __post_init__(self) -> None:
        _check_capture_id(self.capture_id)
        _check_length("length", self.length)
        if not isinstance(self.sha256, str) or _SHA256.fullmatch(self.sha256) is None:
            raise ProtocolValueError("sha256 must be 64 hex digits")


@dataclass(frozen=True, slots=True)
class Ack:
    """ACK (0x20, host → device): the capture is durably saved; the device may drop it."""

    capture_id: str

    def __post_init__(self) -> None:
        _check_capture_id(self.capture_id)


@dataclass(frozen=True, slots=True)
class Nak:
    """NAK (0x21, host → device): the capture was refused; the device offers it again."""

    capture_id: str
    reason: NakReason

    def __post_init__(self) -> None:
        _check_capture_id(self.capture_id)
        if not isinstance(self.reason, NakReason):
            raise ProtocolValueError("reason must be a NakReason")


Message: TypeAlias = HostHello | Hello | CaptureBegin | CaptureData | CaptureEnd | Ack | Nak
"""Any message of the protocol."""


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
# Encoding


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _payload(message: Message) -> tuple[MessageType, bytes]:
    match message:
        case HostHello():
            return MessageType.HOST_HELLO, _json({"host": message.host, "version": message.version})
        case Hello():
            return MessageType.HELLO, _json(
                {
                    "manufacturer": message.manufacturer,
                    "model": message.model,
                    "serial": message.serial,
                    "firmware": message.firmware,
                    "capabilities": list(message.capabilities),
                }
            )
        case CaptureBegin():
            return MessageType.CAPTURE_BEGIN, _json(
                {
                    "capture_id": message.capture_id,
                    "length": message.length,
                    "timestamp": message.timestamp,
                    "polarization": message.polarization,
                    "contact": message.contact,
                    "immersion": message.immersion,
                    "magnification": message.magnification,
                    "color_temperature_k": message.color_temperature_k,
                    "anatomic_site": message.anatomic_site,
                    "laterality": message.laterality,
                    "lesion_id": message.lesion_id,
                }
            )
        case CaptureData():
            cid = message.capture_id.encode()
            return MessageType.CAPTURE_DATA, (
                bytes([len(cid)]) + cid + _OFFSET.pack(message.offset) + message.data
            )
        case CaptureEnd():
            return MessageType.CAPTURE_END, _json(
                {
                    "capture_id": message.capture_id,
                    "length": message.length,
                    "sha256": message.sha256,
                }
            )
        case Ack():
            return MessageType.ACK, _json({"capture_id": message.capture_id})
        case Nak():
            return MessageType.NAK, _json(
                {"capture_id": message.capture_id, "reason": str(message.reason)}
            )
    raise TypeError(f"not a protocol message: {message!r}")  # pragma: no cover


def encode_body(message: Message, seq: int) -> bytes:
    """Return the frame body (type, seq, payload, CRC) of ``message``, before COBS."""
    if not 0 <= seq <= 0xFFFF:
        raise ValueError("seq must be in 0..65535")
    msg_type, payload = _payload(message)
    if len(payload) > _MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_BODY")
    head = _HEADER.pack(msg_type, seq) + payload
    return head + _CRC.pack(zlib.crc32(head))


def encode_frame(message: Message, seq: int) -> bytes:
    """Return ``message`` as wire bytes: ``COBS(body) + b"\\x00"``."""
    return cobs_encode(encode_body(message, seq)) + b"\x00"


# ---------------------------------------------------------------------------
# Decoding


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _load_object(payload: bytes) -> dict[str, Any]:
    try:
        text = payload.decode("utf-8")
        obj = json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ProtocolValueError(f"payload is not UTF-8 JSON: {type(err).__name__}") from None
    if not isinstance(obj, dict):
        raise ProtocolValueError("payload is not a JSON object")
    return obj


def _required(obj: dict[str, Any], key: str) -> Any:
    if key not in obj:
        raise ProtocolValueError(f"missing key {key!r}")
    return obj[key]


def _parse_payload(msg_type: MessageType, payload: bytes) -> Message:
    if msg_type is MessageType.CAPTURE_DATA:
        if not payload:
            raise ProtocolValueError("empty CAPTURE_DATA payload")
        n = payload[0]
        if len(payload) < 1 + n + _OFFSET.size:
            raise ProtocolValueError("CAPTURE_DATA payload too short")
        try:
            capture_id = payload[1 : 1 + n].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolValueError("capture_id is not UTF-8") from None
        (offset,) = _OFFSET.unpack_from(payload, 1 + n)
        return CaptureData(capture_id, offset, payload[1 + n + _OFFSET.size :])

    obj = _load_object(payload)
    if msg_type is MessageType.HOST_HELLO:
        return HostHello(_required(obj, "host"), _required(obj, "version"))
    if msg_type is MessageType.HELLO:
        caps = _required(obj, "capabilities")
        if not isinstance(caps, list):
            raise ProtocolValueError("capabilities must be a list")
        return Hello(
            manufacturer=_required(obj, "manufacturer"),
            model=_required(obj, "model"),
            serial=_required(obj, "serial"),
            firmware=_required(obj, "firmware"),
            capabilities=tuple(caps),
        )
    if msg_type is MessageType.CAPTURE_BEGIN:
        return CaptureBegin(
            capture_id=_required(obj, "capture_id"),
            length=_required(obj, "length"),
            timestamp=obj.get("timestamp"),
            polarization=obj.get("polarization"),
            contact=obj.get("contact"),
            immersion=obj.get("immersion"),
            magnification=obj.get("magnification"),
            color_temperature_k=obj.get("color_temperature_k"),
            anatomic_site=obj.get("anatomic_site"),
            laterality=obj.get("laterality"),
            lesion_id=obj.get("lesion_id"),
        )
    if msg_type is MessageType.CAPTURE_END:
        return CaptureEnd(
            _required(obj, "capture_id"), _required(obj, "length"), _required(obj, "sha256")
        )
    if msg_type is MessageType.ACK:
        return Ack(_required(obj, "capture_id"))
    reason = _required(obj, "reason")
    if not isinstance(reason, str) or reason not in _NAK_REASONS:
        raise ProtocolValueError("unknown NAK reason")
    return Nak(_required(obj, "capture_id"), NakReason(reason))


def _salvage_capture_id(msg_type: MessageType, payload: bytes) -> str | None:
    """Best effort: the capture id of a frame whose payload failed validation."""
    try:
        if msg_type is MessageType.CAPTURE_DATA:
            raw: object = payload[1 : 1 + payload[0]].decode("utf-8")
        else:
            raw = _load_object(payload).get("capture_id")
        return _check_capture_id(raw)
    except (ProtocolValueError, UnicodeDecodeError, IndexError):
        return None


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
        message = _parse_payload(msg_type, payload)
    except (ProtocolValueError, TypeError) as err:
        return FrameError(
            "bad-payload",
            f"{msg_type.name}: {err}",
            message_type=int(msg_type),
            capture_id=_salvage_capture_id(msg_type, payload),
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
