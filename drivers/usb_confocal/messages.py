"""The messages of the confocal USB protocol: ids, types, framing, encoding (sans I/O).

What both sides share, as specified in :mod:`drivers.usb_confocal.protocol`: the
device's USB ids and endpoints, the message and NAK types, the checked
:class:`StackHeader`, and the framing of a message
(``"DGCF" | type | flags | length | payload | CRC-32``) with its encoders.
"""

from __future__ import annotations

import enum
import json
import math
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "EP_IN",
    "EP_OUT",
    "GET_IDENTITY",
    "INTERFACE",
    "MAGIC",
    "MAX_PAYLOAD",
    "PRODUCT_ID",
    "REQUEST_TYPE_VENDOR_IN",
    "VENDOR_ID",
    "IdentityField",
    "MessageType",
    "NakReason",
    "StackHeader",
    "check_stack_id",
    "encode_frame_header",
    "encode_json",
    "encode_message",
    "partial_magic",
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
#: magic, type, flags, payload length: the start of every message.
PREFIX: Final = struct.Struct("<4sBBH")
#: The CRC-32 after the payload.
CRC: Final = struct.Struct("<I")
#: FRAME's payload: index, z (µm), tile row, tile column.
FRAME: Final = struct.Struct("<IdHH")
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
    anatomic_site: str | None = None
    laterality: str | None = None
    lesion_id: str | None = None

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
        for key in ("anatomic_site", "laterality", "lesion_id"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.kind == "mosaic":
            data["tile_rows"] = self.tile_rows
            data["tile_cols"] = self.tile_cols
        return data

    @classmethod
    def from_json(cls, data: object) -> StackHeader:
        """Check a decoded header; raises ValueError naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError("header is not an object")  # noqa: TRY004
        stack_id = check_stack_id(data.get("stack_id"))
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
            anatomic_site=_site(data.get("anatomic_site")),
            laterality=_laterality(data.get("laterality")),
            lesion_id=_lesion_id(data.get("lesion_id")),
        )


_SCT_CODE: Final = re.compile(r"[0-9]{6,18}")


def _site(value: object) -> str | None:
    """An optional SNOMED CT code value from CID 4029 (digits only)."""
    if value is None:
        return None
    if not isinstance(value, str) or _SCT_CODE.fullmatch(value) is None:
        raise ValueError("anatomic_site")
    return value


def _laterality(value: object) -> str | None:
    if value is None:
        return None
    if value not in ("R", "L", "B", "U"):
        raise ValueError("laterality")
    return str(value)


def _lesion_id(value: object) -> str | None:
    """An optional lesion label: 1-64 printable characters."""
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not value.isprintable():
        raise ValueError("lesion_id")
    return value


def check_stack_id(value: object) -> str:
    """``value`` if it is a valid stack id (1-64 printable ASCII); else ValueError."""
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
    return MAGIC + body + CRC.pack(zlib.crc32(body))


def encode_json(kind: MessageType, data: dict[str, Any]) -> bytes:
    """A framed message with a JSON payload."""
    return encode_message(kind, json.dumps(data, separators=(",", ":")).encode())


def encode_frame_header(index: int, z_um: float, tile_row: int = 0, tile_col: int = 0) -> bytes:
    """A FRAME message (the frame's pixels follow it unframed)."""
    return encode_message(MessageType.FRAME, FRAME.pack(index, z_um, tile_row, tile_col))


def partial_magic(buffer: bytearray) -> int:
    """How many trailing bytes of ``buffer`` could be the start of MAGIC."""
    for keep in range(min(len(MAGIC) - 1, len(buffer)), 0, -1):
        if buffer.endswith(MAGIC[:keep]):
            return keep
    return 0
