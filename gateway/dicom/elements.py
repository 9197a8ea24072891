"""Small data sets written element by element, for objects with many frames.

A confocal z-stack has one Per-Frame Functional Groups item per frame. Built as
pydicom ``Dataset`` objects, 100,000 one-pixel frames took wrapping to 797 MB (a
few kB of Python objects per frame, then the whole encoded header in memory
again); so the items of a long sequence are described as plain
:data:`Element` lists, encoded one at a time straight into the file, and dropped.

:func:`encode_item` gives exactly the bytes pydicom writes for the same item in
Explicit VR Little Endian (tests compare them): elements in tag order, text values
joined by ``\\`` and padded with a space to even length, binary values packed
little endian, nested sequences and items with explicit lengths. :func:`to_dataset`
turns the same description into a pydicom ``Dataset`` (the pure builders' form).
Only the value representations these items use are supported (text, UL, US, SL, FD,
SQ); anything else is a programming error (``ValueError``).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Sequence
from typing import Final, TypeAlias

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

__all__ = [
    "Element",
    "Value",
    "encode_item",
    "sequence_header",
    "tag_of",
    "to_dataset",
]

Value: TypeAlias = "str | int | float | Sequence[str] | Sequence[int] | list[list[Element]]"
#: One attribute: its keyword and value (a sequence's value is a list of items).
Element: TypeAlias = tuple[str, Value]

_ITEM: Final = struct.Struct("<HHI")
_SHORT: Final = struct.Struct("<HH2sH")
_LONG: Final = struct.Struct("<HH2sHI")
_TEXT_VRS: Final = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "SH", "TM"})
_BINARY: Final = {"UL": "I", "US": "H", "SL": "i", "FD": "d"}


def tag_of(keyword: str) -> int:
    """The tag of a keyword of the DICOM dictionary (ValueError if unknown)."""
    return _entry(keyword)[0]


@functools.cache
def _entry(keyword: str) -> tuple[int, str]:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"unknown DICOM keyword {keyword!r}")
    return tag, dictionary_VR(tag)


def _header(tag: int, vr: str, length: int) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if vr == "SQ":
        return _LONG.pack(group, element, vr.encode(), 0, length)
    if length > 0xFFFF:
        raise ValueError(f"value of ({group:04X},{element:04X}) too long for {vr}")
    return _SHORT.pack(group, element, vr.encode(), length)


def _encode_element(keyword: str, value: Value) -> tuple[int, bytes]:
    tag, vr = _entry(keyword)
    if vr == "SQ":
        assert isinstance(value, list)
        body = b"".join(encode_item(item) for item in value)
        return tag, _header(tag, vr, len(body)) + body
    values = list(value) if isinstance(value, list | tuple) else [value]
    if vr in _TEXT_VRS:
        data = "\\".join(str(v) for v in values).encode("ascii")
        data += b" " * (len(data) & 1)
    elif vr in _BINARY:
        data = struct.pack(f"<{len(values)}{_BINARY[vr]}", *values)
    else:
        raise ValueError(f"{keyword}: value representation {vr} is not supported here")
    return tag, _header(tag, vr, len(data)) + data


def encode_item(elements: Iterable[Element]) -> bytes:
    """One sequence item (Explicit VR Little Endian, explicit length), header included."""
    encoded = sorted(_encode_element(keyword, value) for keyword, value in elements)
    body = b"".join(data for _, data in encoded)
    return _ITEM.pack(0xFFFE, 0xE000, len(body)) + body


def sequence_header(keyword: str, length: int) -> bytes:
    """The header of a sequence element whose items (``length`` bytes) follow."""
    tag, vr = _entry(keyword)
    if vr != "SQ":
        raise ValueError(f"{keyword} is not a sequence")
    if not 0 <= length < 0xFFFFFFFF:
        raise ValueError(f"{keyword}: {length} bytes do not fit an explicit length")
    return _header(tag, "SQ", length)


def to_dataset(elements: Iterable[Element]) -> Dataset:
    """The same item as a pydicom Dataset."""
    ds = Dataset()
    for keyword, value in elements:
        if _entry(keyword)[1] == "SQ":
            assert isinstance(value, list)
            setattr(ds, keyword, DicomSequence([to_dataset(item) for item in value]))
        else:
            setattr(ds, keyword, list(value) if isinstance(value, tuple) else value)
    return ds
