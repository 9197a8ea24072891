"""The messages of the serial dermatoscope protocol, as checked values (sans I/O).

Each message is a frozen dataclass that checks its fields when built, on the
encoding side and the decoding side alike; a wrong type or value raises
:class:`ProtocolValueError`. The wire format and the conversation are specified in
:mod:`drivers.serial_dermatoscope.protocol`; :mod:`.payloads` turns a message into
the payload bytes of its frame and back, :mod:`.framing` carries payloads in frames.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeAlias

__all__ = [
    "Ack",
    "CaptureBegin",
    "CaptureData",
    "CaptureEnd",
    "Hello",
    "HostHello",
    "Message",
    "MessageType",
    "Nak",
    "NakReason",
    "ProtocolValueError",
    "check_capture_id",
]

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


class ProtocolValueError(ValueError):
    """A message field has a wrong type or value (raised by message constructors)."""


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


def check_capture_id(value: object) -> str:
    """``value`` if it is a valid capture id; raises :class:`ProtocolValueError`."""
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
        check_capture_id(self.capture_id)
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
        check_capture_id(self.capture_id)
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
        check_capture_id(self.capture_id)
        _check_length("length", self.length)
        if not isinstance(self.sha256, str) or _SHA256.fullmatch(self.sha256) is None:
            raise ProtocolValueError("sha256 must be 64 hex digits")


@dataclass(frozen=True, slots=True)
class Ack:
    """ACK (0x20, host → device): the capture is durably saved; the device may drop it."""

    capture_id: str

    def __post_init__(self) -> None:
        check_capture_id(self.capture_id)


@dataclass(frozen=True, slots=True)
class Nak:
    """NAK (0x21, host → device): the capture was refused; the device offers it again."""

    capture_id: str
    reason: NakReason

    def __post_init__(self) -> None:
        check_capture_id(self.capture_id)
        if not isinstance(self.reason, NakReason):
            raise ProtocolValueError("reason must be a NakReason")


Message: TypeAlias = HostHello | Hello | CaptureBegin | CaptureData | CaptureEnd | Ack | Nak
"""Any message of the protocol."""
