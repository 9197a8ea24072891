"""Write a DICOM Part 10 file whose encapsulated Pixel Data is streamed from a JPEG file.

pydicom writes the preamble, File Meta Information and every attribute except
Pixel Data; this module then appends Pixel Data (7FE0,0010) itself, copying the
JPEG in bounded chunks, so memory stays flat whatever the image size (DESIGN §2,
"stream, don't load"). The layout appended (PS3.5 A.4, little endian)::

    (7FE0,0010) "OB" 0000 FFFFFFFF        Pixel Data, undefined length
    (FFFE,E000) 00000000                  empty Basic Offset Table (one frame)
    (FFFE,E000) <even length>             one fragment: the JPEG without its
                                          metadata segments (EXIF, XMP, comments;
                                          see gateway.dicom.jpeg), its image data
                                          byte for byte, plus one 0x00 if its
                                          length is odd
    (FFFE,E0DD) 00000000                  Sequence Delimitation Item

Items must have even length, so an odd-sized JPEG gets one trailing 0x00. That is
harmless: a JPEG decoder stops at the End Of Image marker (FFD9) and ignores what
follows, and PS3.5 A.4 allows exactly this padding.

The file is written through :func:`gateway.core.files.atomic_writer`: it appears at
``dest`` only when complete and durable (tmp, fsync, rename, directory fsync).
Blocking; callers run it on a worker thread.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Final

from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID

from gateway.core.files import atomic_writer
from gateway.dicom.jpeg import copy_without_metadata, read_jpeg_info_from

__all__ = ["part10_prefix", "part10_suffix", "write_part10_encapsulated"]

_PIXEL_DATA: Final = 0x7FE00010
_MAX_ITEM_LENGTH: Final = 0xFFFFFFFE
_CHUNK: Final = 1 << 20
_PIXEL_DATA_HEADER: Final = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
_EMPTY_OFFSET_TABLE: Final = struct.pack("<HHI", 0xFFFE, 0xE000, 0)
_SEQUENCE_DELIMITER: Final = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def part10_prefix(dataset: Dataset, fragment_size: int) -> bytes:
    """Everything of the Part 10 file that comes before the JPEG's first byte.

    Preamble, File Meta Information, the data set, and the Pixel Data header up to
    the single fragment's item header (sized for ``fragment_size`` JPEG bytes, padded
    to even). Lets intake stream a device's JPEG straight into its DICOM file.
    """
    _check_dataset(dataset)
    if fragment_size <= 0:
        raise ValueError("the JPEG is empty")
    padded = fragment_size + (fragment_size & 1)
    if padded > _MAX_ITEM_LENGTH:
        raise ValueError("the JPEG is too large for one fragment")
    out = io.BytesIO()
    dcmwrite(out, dataset, enforce_file_format=True)
    out.write(_PIXEL_DATA_HEADER)
    out.write(_EMPTY_OFFSET_TABLE)
    out.write(struct.pack("<HHI", 0xFFFE, 0xE000, padded))
    return out.getvalue()


def part10_suffix(fragment_size: int) -> bytes:
    """What follows the JPEG's last byte: the pad byte if needed, then the delimiter."""
    return (b"\x00" if fragment_size & 1 else b"") + _SEQUENCE_DELIMITER


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
        if fragment + (fragment & 1) > _MAX_ITEM_LENGTH:
            raise ValueError(f"pixel source {pixel_source.name} is too large for one fragment")
        prefix = part10_prefix(dataset, fragment)
        with atomic_writer(dest) as out:
            out.write(prefix)
            copied = copy_without_metadata(src, out, info, chunk_size=_CHUNK)
            if copied != fragment:
                raise OSError(
                    f"pixel source {pixel_source.name} changed size while being copied "
                    f"({fragment} bytes expected, {copied} read)"
                )
            out.write(part10_suffix(fragment))
            return out.tell()


def _check_dataset(dataset: Dataset) -> None:
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None or not UID(syntax).is_compressed:
        raise ValueError("dataset needs file_meta with an encapsulated transfer syntax")
    if not UID(syntax).is_little_endian or UID(syntax).is_implicit_VR:
        raise ValueError("encapsulated transfer syntaxes are explicit VR little endian")
    last = max((int(elem.tag) for elem in dataset), default=0)
    if last >= _PIXEL_DATA:
        raise ValueError(
            "dataset must not contain Pixel Data or later attributes; they are appended"
        )
