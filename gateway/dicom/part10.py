"""The one way DermGate writes a DICOM Part 10 file: header, then one streamed value.

Every builder makes a data set without its one long value (Pixel Data, or an
Encapsulated Document) and hands it to :func:`write_part10` with a
:class:`StreamedValue` that says where that value's bytes come from. The writer
then does the whole sequence, once for every IOD:

1. pydicom encodes the preamble, File Meta Information and every attribute that
   sorts before the streamed element;
2. a temporary file is opened (:func:`gateway.core.files.atomic_writer`) and the
   header written, then whatever must sit between the header and the value (a
   z-stack's per-frame groups, encoded one frame at a time);
3. the element header, then the value copied in bounded chunks (memory stays flat
   whatever the size; DESIGN §2, "stream, don't load"), checked against the length
   announced in the header;
4. one 0x00 when that length is odd (values have even length; PS3.5 7.1.1), then
   the attributes that sort after the value (an encapsulated document's MIME type
   and length);
5. fsync, rename, directory fsync: ``dest`` appears only complete and durable, and
   on any error the temporary file is removed and ``dest`` is left as it was.

A device's JPEG is one fragment of encapsulated Pixel Data (PS3.5 A.4, little
endian)::

    (7FE0,0010) "OB" 0000 FFFFFFFF        Pixel Data, undefined length
    (FFFE,E000) 00000000                  empty Basic Offset Table (one frame)
    (FFFE,E000) <even length>             one fragment: the JPEG without its
                                          metadata segments (EXIF, XMP, comments;
                                          see gateway.dicom.jpeg), its image data
                                          byte for byte, plus one 0x00 if its
                                          length is odd
    (FFFE,E0DD) 00000000                  Sequence Delimitation Item

The trailing 0x00 of an odd JPEG is harmless: a decoder stops at the End Of Image
marker (FFD9), and PS3.5 A.4 allows exactly this padding. Intake writes the same
layout while the bytes arrive (:func:`part10_prefix`, :func:`part10_suffix`).
Blocking; callers run it on a worker thread.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.uid import UID

from gateway.core.files import atomic_writer, copy_stream
from gateway.dicom.jpeg import JpegInfo, copy_without_metadata, read_jpeg_info_from

__all__ = [
    "PIXEL_DATA",
    "StreamedValue",
    "element_header",
    "encode_header",
    "file_value",
    "jpeg_fragment",
    "part10_prefix",
    "part10_suffix",
    "value_layout",
    "write_part10",
    "write_part10_encapsulated",
]

#: Pixel Data (7FE0,0010), the value most objects stream.
PIXEL_DATA: Final = 0x7FE00010
_MAX_LENGTH: Final = 0xFFFFFFFE
_CHUNK: Final = 1 << 20
_UNDEFINED: Final = 0xFFFFFFFF
_EMPTY_OFFSET_TABLE: Final = struct.pack("<HHI", 0xFFFE, 0xE000, 0)
_SEQUENCE_DELIMITER: Final = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def _changed_size(copied: int) -> Exception:
    return OSError(f"pixel source changed size while being copied ({copied})")


@dataclass(frozen=True, slots=True)
class StreamedValue:
    """The one long value of a Part 10 file and where its bytes come from.

    ``copy`` writes exactly ``length`` bytes to the file it is given (in bounded
    chunks) and returns how many it wrote; any other count makes the writer raise
    ``mismatch(count)`` (the source changed while being copied, or a decoder gave
    other pixels than it announced). ``encapsulated``: the bytes are the single
    fragment of encapsulated Pixel Data (a JPEG); otherwise they are the value of
    ``tag`` with an explicit length.
    """

    length: int
    copy: Callable[[BinaryIO], int]
    tag: int = PIXEL_DATA
    vr: Literal["OB", "OW"] = "OB"
    encapsulated: bool = False
    mismatch: Callable[[int], Exception] = _changed_size


def file_value(
    src: BinaryIO,
    length: int,
    *,
    tag: int = PIXEL_DATA,
    vr: Literal["OB", "OW"] = "OB",
    mismatch: Callable[[int], Exception] = _changed_size,
) -> StreamedValue:
    """A value copied byte for byte from ``src`` (from its current position)."""
    return StreamedValue(
        length=length,
        copy=lambda out: copy_stream(src, out, chunk_size=_CHUNK),
        tag=tag,
        vr=vr,
        mismatch=mismatch,
    )


def jpeg_fragment(src: BinaryIO, info: JpegInfo, name: str) -> StreamedValue:
    """The JPEG in ``src`` as one fragment: metadata segments dropped, image data as is."""
    expected = info.encapsulated_size

    def mismatch(copied: int) -> Exception:
        return OSError(
            f"pixel source {name} changed size while being copied "
            f"({expected} bytes expected, {copied} read)"
        )

    return StreamedValue(
        length=expected,
        copy=lambda out: copy_without_metadata(src, out, info, chunk_size=_CHUNK),
        encapsulated=True,
        mismatch=mismatch,
    )


def element_header(tag: int, vr: Literal["OB", "OW"], length: int) -> bytes:
    """The explicit VR little endian header of an OB/OW element of ``length`` bytes
    (the length written is padded to even)."""
    return struct.pack(
        "<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), 0, length + (length & 1)
    )


def write_part10(
    dest: Path,
    dataset: Dataset,
    value: StreamedValue,
    *,
    before_value: Callable[[BinaryIO], object] | None = None,
) -> int:
    """Write ``dataset`` with ``value`` streamed in as its element ``value.tag``.

    ``dataset`` carries ``file_meta`` with an explicit VR little endian transfer
    syntax (encapsulated for an encapsulated value, native otherwise) and does not
    contain ``value.tag``; its attributes after that tag are written after the
    value. It is not modified. ``before_value`` writes what goes between the data
    set and the value (it must sort just before ``value.tag``). Returns the number
    of bytes written. Raises :class:`ValueError` for a dataset or value that breaks
    those rules, ``value.mismatch(...)`` when the source does not give ``length``
    bytes, and :class:`OSError` for I/O trouble; ``dest`` is then untouched.
    """
    _check_syntax(dataset, encapsulated=value.encapsulated)
    if value.tag in dataset:
        raise ValueError(
            f"the dataset already holds ({value.tag >> 16:04X},{value.tag & 0xFFFF:04X})"
        )
    if value.length + (value.length & 1) > _MAX_LENGTH:
        raise ValueError("the value is too large for one DICOM element")
    head, tail = _split_at(dataset, value.tag)
    header = _encode_head(head)
    with atomic_writer(dest) as out:
        out.write(header)
        if before_value is not None:
            before_value(out)
        out.write(_value_start(value.tag, value.vr, value.length, value.encapsulated))
        copied = value.copy(out)
        if copied != value.length:
            raise value.mismatch(copied)
        out.write(_value_end(value.length, value.encapsulated))
        if tail is not None:
            out.write(_encode_tail(tail))
        return out.tell()


def value_layout(dataset: Dataset, value: StreamedValue) -> tuple[bytes, bytes]:
    """What :func:`write_part10` writes before and after ``value``'s bytes.

    For a writer whose value arrives later (intake streams a capture straight into
    its DICOM file): the first part goes before the value's first byte, the second
    after its last. Same checks as :func:`write_part10`; ``value.copy`` is not used.
    """
    _check_syntax(dataset, encapsulated=value.encapsulated)
    if value.tag in dataset:
        raise ValueError("the dataset already holds the streamed value")
    if value.length <= 0 or value.length + (value.length & 1) > _MAX_LENGTH:
        raise ValueError("the value is empty or too large for one DICOM element")
    head, tail = _split_at(dataset, value.tag)
    before = _encode_head(head) + _value_start(
        value.tag, value.vr, value.length, value.encapsulated
    )
    after = _value_end(value.length, value.encapsulated)
    return before, after + (_encode_tail(tail) if tail is not None else b"")


# --- a device's JPEG -----------------------------------------------------------------


def part10_prefix(dataset: Dataset, fragment_size: int) -> bytes:
    """Everything of the Part 10 file that comes before the JPEG's first byte.

    Preamble, File Meta Information, the data set, and the Pixel Data header up to
    the single fragment's item header (sized for ``fragment_size`` JPEG bytes, padded
    to even): what :func:`write_part10` writes before the value. Lets intake stream
    a device's JPEG straight into its DICOM file.
    """
    _check_dataset(dataset)
    if fragment_size <= 0:
        raise ValueError("the JPEG is empty")
    padded = fragment_size + (fragment_size & 1)
    if padded > _MAX_LENGTH:
        raise ValueError("the JPEG is too large for one fragment")
    return _encode_head(dataset) + _value_start(PIXEL_DATA, "OB", fragment_size, True)


def part10_suffix(fragment_size: int) -> bytes:
    """What follows the JPEG's last byte: the pad byte if needed, then the delimiter."""
    return _value_end(fragment_size, True)


def write_part10_encapsulated(dataset: Dataset, pixel_source: Path, dest: Path) -> int:
    """Write ``dataset`` plus the JPEG at ``pixel_source`` as one fragment to ``dest``.

    The JPEG's metadata segments are left out (:func:`copy_without_metadata`); its
    image data is copied byte for byte. ``dataset`` must carry ``file_meta`` with an
    encapsulated (compressed) transfer syntax and must not contain Pixel Data or
    anything after it; it is not modified. Returns the number of bytes written.
    Raises :class:`ValueError` for a dataset that breaks those rules,
    :class:`~gateway.dicom.errors.NotAJpeg` for a source that is not a JPEG, and
    :class:`OSError` for I/O failures (also when the JPEG changes size while being
    copied); ``dest`` is then untouched.
    """
    _check_dataset(dataset)
    with pixel_source.open("rb") as src:
        size = os.fstat(src.fileno()).st_size
        if size == 0:
            raise ValueError(f"pixel source {pixel_source.name} is empty")
        info = read_jpeg_info_from(src)
        src.seek(0)
        fragment = info.encapsulated_size
        if fragment <= 0:
            raise ValueError("the JPEG is empty")
        if fragment + (fragment & 1) > _MAX_LENGTH:
            raise ValueError(f"pixel source {pixel_source.name} is too large for one fragment")
        return write_part10(dest, dataset, jpeg_fragment(src, info, pixel_source.name))


# --- the pieces ----------------------------------------------------------------------


def _value_start(tag: int, vr: Literal["OB", "OW"], length: int, encapsulated: bool) -> bytes:
    """The element header (and, encapsulated, the offset table and the item header)."""
    if not encapsulated:
        return element_header(tag, vr, length)
    return (
        struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), 0, _UNDEFINED)
        + _EMPTY_OFFSET_TABLE
        + struct.pack("<HHI", 0xFFFE, 0xE000, length + (length & 1))
    )


def _value_end(length: int, encapsulated: bool) -> bytes:
    """The pad byte of an odd value (and, encapsulated, the sequence delimiter)."""
    pad = b"\x00" if length & 1 else b""
    return pad + _SEQUENCE_DELIMITER if encapsulated else pad


def _split_at(dataset: Dataset, tag: int) -> tuple[Dataset, Dataset | None]:
    """The attributes before ``tag`` and (when there are any) those after it."""
    if max((int(elem.tag) for elem in dataset), default=0) < tag:
        return dataset, None
    head, tail = Dataset(), Dataset()
    head.file_meta = dataset.file_meta
    for elem in dataset:
        (head if int(elem.tag) < tag else tail).add(elem)
    return head, tail


def encode_header(dataset: Dataset) -> bytes:
    """Preamble, File Meta Information and ``dataset`` as pydicom writes them (the
    header :func:`write_part10` writes before the streamed value)."""
    return _encode_head(dataset)


def _encode_head(head: Dataset) -> bytes:
    out = io.BytesIO()
    dcmwrite(out, head, enforce_file_format=True)
    return out.getvalue()


def _encode_tail(tail: Dataset) -> bytes:
    """Attributes after the value, explicit VR little endian (no preamble, no meta)."""
    out = DicomBytesIO()
    out.is_little_endian = True
    out.is_implicit_VR = False
    write_dataset(out, tail)
    return out.getvalue()


def _check_syntax(dataset: Dataset, *, encapsulated: bool) -> None:
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None:
        raise ValueError("dataset needs file_meta with a transfer syntax")
    uid = UID(syntax)
    if not uid.is_little_endian or uid.is_implicit_VR:
        raise ValueError("DermGate writes explicit VR little endian files only")
    if uid.is_compressed != encapsulated:
        raise ValueError(
            "an encapsulated value needs an encapsulated transfer syntax"
            if encapsulated
            else "a native value needs a native transfer syntax"
        )


def _check_dataset(dataset: Dataset) -> None:
    """A JPEG's data set: encapsulated transfer syntax, nothing from Pixel Data on."""
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None or not UID(syntax).is_compressed:
        raise ValueError("dataset needs file_meta with an encapsulated transfer syntax")
    if not UID(syntax).is_little_endian or UID(syntax).is_implicit_VR:
        raise ValueError("encapsulated transfer syntaxes are explicit VR little endian")
    last = max((int(elem.tag) for elem in dataset), default=0)
    if last >= PIXEL_DATA:
        raise ValueError(
            "dataset must not contain Pixel Data or later attributes; they are appended"
        )
