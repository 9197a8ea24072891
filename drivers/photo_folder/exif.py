"""EXIF camera metadata, read from a photo's header alone (sans-I/O parsing, bounded reads).

What the photo-folder driver needs from a camera file is who made it (Make,
Model, BodySerialNumber, Software), when (DateTimeOriginal with
OffsetTimeOriginal and SubSecTimeOriginal) and how (lens, exposure). This module
finds the EXIF block and parses its TIFF structure itself:

* JPEG: the ``Exif\\0\\0`` APP1 segment, found by walking marker segments from SOI
  until Start of Scan; at most one segment (<= 64 KiB) is read at a time and the
  entropy-coded image data is never touched, so pixels are never decoded.
* TIFF: the file *is* a TIFF structure; IFD0 and the EXIF IFD are read with seeks
  wherever they are, entry tables and values bounded in size (strips never read).
* PNG: the ``eXIf`` chunk (a TIFF structure), found by walking chunks up to the
  first ``IDAT``.

:func:`parse_tiff_exif` is pure (bytes in, :class:`CameraExif` out) and is what the
fuzz tests hammer. Every malformed input raises :class:`ExifError` and nothing else;
the driver then treats the photo as having no EXIF (the image itself may be fine).

Deliberately *not* read: GPS, Artist, Copyright, CameraOwnerName, UserComment and
MakerNote. They may name a person or a place, and DermGate never carries them into
DICOM. ImageDescription is read only for a DermGate lesion tag
(:mod:`.lesion_tag`): any other description is dropped here, unread by anything
else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import BinaryIO, Final

from drivers.photo_folder.lesion_tag import is_lesion_tag

__all__ = [
    "CameraExif",
    "ExifError",
    "parse_tiff_exif",
    "read_exif",
]

#: Largest EXIF block read from a PNG eXIf chunk.
MAX_EXIF_BYTES: Final = 1 << 20
_MAX_ENTRIES: Final = 512
_MAX_STRING: Final = 256
_MAX_VALUE_BYTES: Final = 4096
_MAX_SEGMENTS: Final = 4096
_MAX_CHUNKS: Final = 4096

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"

# IFD0
_IMAGE_DESCRIPTION: Final = 0x010E
_MAKE: Final = 0x010F
_MODEL: Final = 0x0110
_ORIENTATION: Final = 0x0112
_SOFTWARE: Final = 0x0131
_DATE_TIME: Final = 0x0132
_EXIF_IFD: Final = 0x8769
# EXIF IFD
_EXPOSURE_TIME: Final = 0x829A
_F_NUMBER: Final = 0x829D
_ISO: Final = 0x8827
_EXIF_VERSION: Final = 0x9000
_DATE_TIME_ORIGINAL: Final = 0x9003
_DATE_TIME_DIGITIZED: Final = 0x9004
_OFFSET_TIME: Final = 0x9010
_OFFSET_TIME_ORIGINAL: Final = 0x9011
_OFFSET_TIME_DIGITIZED: Final = 0x9012
_FOCAL_LENGTH: Final = 0x920A
_SUB_SEC_ORIGINAL: Final = 0x9291
_SUB_SEC_DIGITIZED: Final = 0x9292
_FOCAL_LENGTH_35MM: Final = 0xA405
_BODY_SERIAL: Final = 0xA431
_LENS_SPECIFICATION: Final = 0xA432
_LENS_MAKE: Final = 0xA433
_LENS_MODEL: Final = 0xA434
_LENS_SERIAL: Final = 0xA435

_IFD0_TAGS: Final = frozenset(
    {_IMAGE_DESCRIPTION, _MAKE, _MODEL, _ORIENTATION, _SOFTWARE, _DATE_TIME, _EXIF_IFD}
)
_EXIF_TAGS: Final = frozenset(
    {
        _EXPOSURE_TIME,
        _F_NUMBER,
        _ISO,
        _EXIF_VERSION,
        _DATE_TIME_ORIGINAL,
        _DATE_TIME_DIGITIZED,
        _OFFSET_TIME,
        _OFFSET_TIME_ORIGINAL,
        _OFFSET_TIME_DIGITIZED,
        _FOCAL_LENGTH,
        _SUB_SEC_ORIGINAL,
        _SUB_SEC_DIGITIZED,
        _FOCAL_LENGTH_35MM,
        _BODY_SERIAL,
        _LENS_SPECIFICATION,
        _LENS_MAKE,
        _LENS_MODEL,
        _LENS_SERIAL,
    }
)

#: TIFF field type -> size in bytes of one value.
_TYPE_SIZES: Final = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}

_Value = str | bytes | tuple[int, ...] | tuple[float, ...]


class ExifError(Exception):
    """The EXIF block (or the file's header around it) is malformed."""


@dataclass(frozen=True, slots=True)
class CameraExif:
    """What a camera said about itself and one exposure; ``None`` = not said."""

    make: str | None = None
    model: str | None = None
    body_serial_number: str | None = None
    software: str | None = None
    lens_make: str | None = None
    lens_model: str | None = None
    lens_serial_number: str | None = None
    lens_specification: tuple[float, float, float, float] | None = None
    focal_length_mm: float | None = None
    focal_length_35mm: int | None = None
    f_number: float | None = None
    exposure_time_s: float | None = None
    iso: int | None = None
    exif_version: str | None = None
    date_time_original: str | None = None
    offset_time_original: str | None = None
    sub_sec_time_original: str | None = None
    orientation: int | None = None
    lesion_tag: str | None = None  # ImageDescription, only when a DermGate lesion tag

    def taken_at(self) -> datetime | None:
        """When the photo was taken: DateTimeOriginal (+SubSec, +Offset), as a datetime.

        Aware when the camera recorded its UTC offset, naive (camera local time)
        otherwise; ``None`` when absent or not a real date.
        """
        moment = _exif_datetime(self.date_time_original)
        if moment is None:
            return None
        sub_sec = self.sub_sec_time_original
        if sub_sec and sub_sec.isascii() and sub_sec.isdigit():
            digits = (sub_sec + "000000")[:6]
            moment = moment.replace(microsecond=int(digits))
        zone = _exif_offset(self.offset_time_original)
        return moment.replace(tzinfo=zone) if zone is not None else moment


def read_exif(stream: BinaryIO) -> CameraExif:
    """The EXIF of the JPEG, TIFF or PNG in ``stream`` (seekable, at its start).

    A file without EXIF gives an empty :class:`CameraExif`; a malformed header or
    EXIF block raises :class:`ExifError`. Reads are bounded; pixels are never read.
    """
    try:
        head = stream.read(8)
        stream.seek(0)
        if head[:2] == b"\xff\xd8":
            blob = _jpeg_exif_block(stream)
            return parse_tiff_exif(blob) if blob is not None else CameraExif()
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            size = stream.seek(0, 2)
            return _parse_guarded(_StreamSource(stream, size))
        if head == _PNG_SIGNATURE:
            blob = _png_exif_block(stream)
            return parse_tiff_exif(blob) if blob is not None else CameraExif()
    except (OSError, ValueError, OverflowError) as err:
        raise ExifError(f"cannot read the file header ({type(err).__name__})") from err
    raise ExifError("not a JPEG, TIFF or PNG file")


# --- locating the EXIF block --------------------------------------------------------------


def _exact(stream: BinaryIO, count: int) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise ExifError("the file ends inside its header")
    return data


def _jpeg_exif_block(stream: BinaryIO) -> bytes | None:
    """The TIFF structure of the first ``Exif`` APP1 segment, or None before SOS."""
    _exact(stream, 2)  # SOI
    for _ in range(_MAX_SEGMENTS):
        if _exact(stream, 1) != b"\xff":
            raise ExifError("JPEG header is damaged: a marker was expected")
        marker = _exact(stream, 1)[0]
        while marker == 0xFF:
            marker = _exact(stream, 1)[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if marker in (0xD8, 0xD9, 0xDA):
            return None  # image data (or the end) before any EXIF
        length = struct.unpack(">H", _exact(stream, 2))[0]
        if length < 2:
            raise ExifError("JPEG header is damaged: a segment is too short")
        if marker == 0xE1 and length >= 8:
            payload = _exact(stream, length - 2)
            if payload[:6] == b"Exif\x00\x00":
                return payload[6:]
            continue
        stream.seek(length - 2, 1)
    raise ExifError("JPEG header has too many segments")


def _png_exif_block(stream: BinaryIO) -> bytes | None:
    """The ``eXIf`` chunk's data, or None if the image data starts first."""
    _exact(stream, 8)
    for _ in range(_MAX_CHUNKS):
        head = stream.read(8)
        if len(head) < 8:
            return None
        length, kind = struct.unpack(">I4s", head)
        if kind in (b"IDAT", b"IEND"):
            return None
        if kind == b"eXIf":
            if length > MAX_EXIF_BYTES:
                raise ExifError("PNG eXIf chunk is implausibly large")
            return _exact(stream, length)
        stream.seek(length + 4, 1)  # data and CRC
    raise ExifError("PNG has too many chunks before its image data")


# --- parsing the TIFF structure ---------------------------------------------------------------


def parse_tiff_exif(blob: bytes) -> CameraExif:
    """Parse a TIFF-structured EXIF block (byte order mark, IFD0, EXIF IFD).

    Pure. Raises :class:`ExifError`, and only that, for anything malformed.
    """
    return _parse_guarded(_BytesSource(blob))


def _parse_guarded(source: _Source) -> CameraExif:
    try:
        return _parse(source)
    except ExifError:
        raise
    except (struct.error, ValueError, IndexError, OverflowError, ZeroDivisionError) as err:
        raise ExifError(f"EXIF block is malformed ({type(err).__name__})") from err


class _Source:
    """Random access to a TIFF structure (absolute offsets), every read bounded."""

    size: int

    def read_at(self, offset: int, count: int) -> bytes:
        raise NotImplementedError


class _BytesSource(_Source):
    def __init__(self, blob: bytes) -> None:
        self._blob = blob
        self.size = len(blob)

    def read_at(self, offset: int, count: int) -> bytes:
        return self._blob[offset : offset + count]


class _StreamSource(_Source):
    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self.size = size

    def read_at(self, offset: int, count: int) -> bytes:
        self._stream.seek(offset)
        return self._stream.read(count)


def _parse(source: _Source) -> CameraExif:
    head = source.read_at(0, 8)
    if len(head) < 8:
        raise ExifError("EXIF block is too short")
    if head[:2] == b"II":
        order = "<"
    elif head[:2] == b"MM":
        order = ">"
    else:
        raise ExifError("EXIF block has no byte order mark")
    if struct.unpack(order + "H", head[2:4])[0] != 42:
        raise ExifError("EXIF block is not a TIFF structure")
    ifd0_offset = struct.unpack(order + "I", head[4:8])[0]
    ifd0 = _read_ifd(source, order, ifd0_offset, _IFD0_TAGS)
    exif: dict[int, _Value] = {}
    pointer = ifd0.get(_EXIF_IFD)
    if (
        isinstance(pointer, tuple)
        and pointer
        and isinstance(pointer[0], int)
        and pointer[0] != ifd0_offset
    ):
        exif = _read_ifd(source, order, pointer[0], _EXIF_TAGS)
    offset = _text(exif.get(_OFFSET_TIME_ORIGINAL))
    original = _text(exif.get(_DATE_TIME_ORIGINAL))
    sub_sec = _text(exif.get(_SUB_SEC_ORIGINAL))
    if original is None:  # fall back to the digitized time (same moment for a camera)
        original = _text(exif.get(_DATE_TIME_DIGITIZED))
        offset = _text(exif.get(_OFFSET_TIME_DIGITIZED))
        sub_sec = _text(exif.get(_SUB_SEC_DIGITIZED))
    if offset is None:
        offset = _text(exif.get(_OFFSET_TIME))
    return CameraExif(
        make=_text(ifd0.get(_MAKE)),
        model=_text(ifd0.get(_MODEL)),
        body_serial_number=_text(exif.get(_BODY_SERIAL)),
        software=_text(ifd0.get(_SOFTWARE)),
        lens_make=_text(exif.get(_LENS_MAKE)),
        lens_model=_text(exif.get(_LENS_MODEL)),
        lens_serial_number=_text(exif.get(_LENS_SERIAL)),
        lens_specification=_four(exif.get(_LENS_SPECIFICATION)),
        focal_length_mm=_positive(exif.get(_FOCAL_LENGTH)),
        focal_length_35mm=_positive_int(exif.get(_FOCAL_LENGTH_35MM)),
        f_number=_positive(exif.get(_F_NUMBER)),
        exposure_time_s=_positive(exif.get(_EXPOSURE_TIME)),
        iso=_positive_int(exif.get(_ISO)),
        exif_version=_version(exif.get(_EXIF_VERSION)),
        date_time_original=original,
        offset_time_original=offset,
        sub_sec_time_original=sub_sec,
        orientation=_orientation(ifd0.get(_ORIENTATION)),
        lesion_tag=_lesion_tag(_text(ifd0.get(_IMAGE_DESCRIPTION))),
    )


def _lesion_tag(description: str | None) -> str | None:
    """The description if it is a DermGate lesion tag; any other text is dropped."""
    return description if description is not None and is_lesion_tag(description) else None


def _read_ifd(
    source: _Source, order: str, offset: int, wanted: frozenset[int]
) -> dict[int, _Value]:
    if offset < 8 or offset + 2 > source.size:
        raise ExifError("EXIF directory offset points outside the block")
    count = struct.unpack(order + "H", source.read_at(offset, 2))[0]
    if count > _MAX_ENTRIES or offset + 2 + 12 * count > source.size:
        raise ExifError("EXIF directory is larger than the block")
    table = source.read_at(offset + 2, 12 * count)
    values: dict[int, _Value] = {}
    for index in range(count):
        entry = table[12 * index : 12 * index + 12]
        tag, kind, number = struct.unpack(order + "HHI", entry[:8])
        if tag not in wanted or kind not in _TYPE_SIZES:
            continue
        size = _TYPE_SIZES[kind] * number
        if size <= 4:
            data = entry[8 : 8 + size]
        else:
            where = struct.unpack(order + "I", entry[8:12])[0]
            if size > _MAX_VALUE_BYTES or where + size > source.size:
                continue  # an implausible value: ignore that field only
            data = source.read_at(where, size)
        value = _decode(kind, number, data, order)
        if value is not None:
            values[tag] = value
    return values


def _decode(kind: int, number: int, data: bytes, order: str) -> _Value | None:
    if kind == 2:  # ASCII, NUL-terminated
        return data.split(b"\x00", 1)[0][: _MAX_STRING * 4].decode("utf-8", "replace")
    if kind in (1, 6, 7):
        return bytes(data[:_MAX_STRING])
    if number == 0 or number > 64:
        return None
    if kind == 3:
        return struct.unpack(f"{order}{number}H", data)
    if kind == 4:
        return struct.unpack(f"{order}{number}I", data)
    if kind in (5, 10):
        code = "I" if kind == 5 else "i"
        parts = struct.unpack(f"{order}{2 * number}{code}", data)
        return tuple(
            parts[2 * i] / parts[2 * i + 1] if parts[2 * i + 1] else float("nan")
            for i in range(number)
        )
    if kind == 8:
        return struct.unpack(f"{order}{number}h", data)
    if kind == 9:
        return struct.unpack(f"{order}{number}i", data)
    if kind == 11:
        return struct.unpack(f"{order}{number}f", data)
    if kind == 12:
        return struct.unpack(f"{order}{number}d", data)
    return None


# --- values -------------------------------------------------------------------------------------


def _text(value: _Value | None) -> str | None:
    """A printable, trimmed string of at most 256 characters, or None when empty."""
    if isinstance(value, bytes):
        value = value.split(b"\x00", 1)[0].decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    cleaned = "".join(c for c in value if c.isprintable() and c != "\ufffd").strip()
    return cleaned[:_MAX_STRING] or None


def _number(value: _Value | None) -> float | None:
    if isinstance(value, tuple) and value:
        first = value[0]
        if isinstance(first, (int, float)):
            number = float(first)
            if number == number and abs(number) != float("inf"):
                return number
    return None


def _positive(value: _Value | None) -> float | None:
    number = _number(value)
    return number if number is not None and 0 < number < 1e9 else None


def _positive_int(value: _Value | None) -> int | None:
    number = _number(value)
    return int(number) if number is not None and 1 <= number < 2**31 else None


def _four(value: _Value | None) -> tuple[float, float, float, float] | None:
    if not isinstance(value, tuple) or len(value) != 4:
        return None
    numbers = [float(v) for v in value]
    if not all(0 < v < 1e6 for v in numbers):  # also drops NaN (0/0 = unknown)
        return None
    return (numbers[0], numbers[1], numbers[2], numbers[3])


def _orientation(value: _Value | None) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number in range(1, 9) else None


def _version(value: _Value | None) -> str | None:
    if isinstance(value, bytes) and len(value) == 4 and value.isdigit():  # ASCII digits only
        return value.decode("ascii")
    return None


def _exif_datetime(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text.strip()[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def _exif_offset(text: str | None) -> timezone | None:
    """EXIF OffsetTime ``+HH:MM`` as a zone; None when absent or malformed."""
    if not text or len(text) != 6 or text[0] not in "+-" or text[3] != ":":
        return None
    hours, minutes = text[1:3], text[4:6]
    if (
        not (hours.isascii() and minutes.isascii() and hours.isdigit() and minutes.isdigit())
        or int(hours) > 14
        or int(minutes) > 59
    ):
        return None
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-delta if text[0] == "-" else delta)
