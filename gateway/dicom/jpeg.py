"""What a device JPEG is, read from its header alone, and whether DICOM can carry it as-is.

DermGate never decodes or re-encodes a device image: the JPEG's image data goes
into the DICOM file unchanged (one fragment of encapsulated Pixel Data). So the only
questions are what the header says (size, precision, process, sampling) and whether
a transfer syntax and Photometric Interpretation exist that describe those exact
bytes. :func:`read_jpeg_info` answers the first by streaming through the marker
segments up to Start of Scan with bounded reads (at most one segment, <= 64 KiB, is
held at a time; the entropy-coded data is never read). :func:`encapsulation_for`
answers the second.

**Metadata segments are dropped** before encapsulation. A camera JPEG carries EXIF
(GPS position, owner/Artist, maker notes with serial numbers, a thumbnail), XMP,
IPTC (APP13) and comments in marker segments before its image data; de-identification
tools do not look inside Pixel Data, so none of it may travel there. Kept are the
segments a decoder needs, so the decoded pixels are identical: APP0 ``JFIF``, APP2
``ICC_PROFILE`` (colour), APP14 ``Adobe`` (colour transform), and every non-APP
segment (tables, restart interval, frame and scan headers); dropped are every other
APPn (APP1 Exif/XMP, APP2 MPF/FlashPix, APP13, JFXX thumbnails, vendor APPn) and
COM. The reader records where the dropped segments are (:attr:`JpegInfo.dropped`),
all before Start of Scan, so intake can drop them while streaming (:func:`strip_metadata`
on the buffered header) and the wrapping stage while copying
(:func:`copy_without_metadata`); :attr:`JpegInfo.encapsulated_size` is the length
of what is encapsulated, known before the first byte is written. The values
DermGate maps into DICOM attributes are read by the drivers from the source file,
which the spool keeps as the device sent it.

What is accepted (everything else raises :class:`UnsupportedJpeg`):

* Huffman-coded, 8-bit, 3-component YCbCr JPEGs whose chroma is subsampled
  4:2:0 (luma 2x2, chroma 1x1) or 4:2:2 (luma 2x1, chroma 1x1). The VL Image rules
  require Photometric Interpretation ``YBR_FULL_422`` for these (``RGB`` and
  ``YBR_FULL`` are errors), and the standard uses ``YBR_FULL_422`` for any JPEG whose
  chroma is subsampled horizontally, which covers 4:2:0 in practice.
* Baseline (SOF0) goes to JPEG Baseline ``1.2.840.10008.1.2.4.50``.
* Extended sequential (SOF1) with 8-bit samples is also accepted, as JPEG Extended
  ``1.2.840.10008.1.2.4.51``. SOF1 only differs from SOF0 by allowing more Huffman
  tables; it is not retired, Orthanc and pynetdicom know it, and refusing it would
  quarantine a perfectly describable image. The transfer syntax travels in the
  file meta, so the forwarder proposes whatever the file says.

Refused, with the reason shown to the technician: progressive and lossless
processes (their DICOM transfer syntaxes are retired or mean something else),
hierarchical and arithmetic-coded JPEGs, 12-bit precision, grayscale and
four-component images, RGB-coded JPEGs (Adobe transform 0) and 4:4:4 or unusual
sampling, which the VL Image rules cannot describe as ``YBR_FULL_422``.

Errors are the :mod:`gateway.dicom.errors` tree: :class:`NotAJpeg` for bytes that
are not a JPEG or whose header is damaged, :class:`UnsupportedJpeg` for real JPEGs
that cannot be carried as they are. An :class:`OSError` (file missing, unreadable)
is not a property of the capture and propagates unchanged.
"""

from __future__ import annotations

import enum
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from pydicom.uid import JPEGBaseline8Bit, JPEGExtended12Bit

from gateway.dicom.errors import NotAJpeg, UnsupportedJpeg

__all__ = [
    "JpegEncapsulation",
    "JpegInfo",
    "JpegProcess",
    "copy_without_metadata",
    "encapsulation_for",
    "read_jpeg_info",
    "read_jpeg_info_from",
    "strip_metadata",
]

_QUARANTINED: Final = (
    "DermGate does not transcode device images, so the capture is kept and quarantined"
)
#: Real JPEG headers have a few dozen segments; more means we are reading garbage.
_MAX_SEGMENTS: Final = 4096
_SOI: Final = 0xD8
_EOI: Final = 0xD9
_SOS: Final = 0xDA
_DHP: Final = 0xDE
_APP0: Final = 0xE0
_APP2: Final = 0xE2
_APP14: Final = 0xEE
_APP15: Final = 0xEF
_COM: Final = 0xFE
#: The APPn segments a decoder needs, by marker and identifier (all others go).
_KEPT_APP: Final = {_APP0: b"JFIF\x00", _APP2: b"ICC_PROFILE\x00", _APP14: b"Adobe"}
_APP_ID_BYTES: Final = 12
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})


class JpegProcess(enum.StrEnum):
    """The JPEG coding process, named after ISO/IEC 10918-1's frame types."""

    BASELINE = "baseline"
    EXTENDED = "extended"
    PROGRESSIVE = "progressive"
    LOSSLESS = "lossless"
    HIERARCHICAL = "hierarchical"


#: SOFn marker -> (process, arithmetic coding?). SOF5-7 and SOF13-15 are the
#: differential frames of a hierarchical image.
_SOF: Final[dict[int, tuple[JpegProcess, bool]]] = {
    0xC0: (JpegProcess.BASELINE, False),
    0xC1: (JpegProcess.EXTENDED, False),
    0xC2: (JpegProcess.PROGRESSIVE, False),
    0xC3: (JpegProcess.LOSSLESS, False),
    0xC5: (JpegProcess.HIERARCHICAL, False),
    0xC6: (JpegProcess.HIERARCHICAL, False),
    0xC7: (JpegProcess.HIERARCHICAL, False),
    0xC9: (JpegProcess.EXTENDED, True),
    0xCA: (JpegProcess.PROGRESSIVE, True),
    0xCB: (JpegProcess.LOSSLESS, True),
    0xCD: (JpegProcess.HIERARCHICAL, True),
    0xCE: (JpegProcess.HIERARCHICAL, True),
    0xCF: (JpegProcess.HIERARCHICAL, True),
}


@dataclass(frozen=True, slots=True)
class JpegInfo:
    """What a JPEG's header says about the image, read without decoding it.

    ``sampling`` holds each component's (horizontal, vertical) sampling factors in
    frame order; ``component_ids`` the component identifiers. ``adobe_transform`` is
    the colour transform flag of an Adobe APP14 segment (0: RGB/CMYK as stored,
    1: YCbCr, 2: YCCK), ``None`` without one. ``size_bytes`` is the whole file size.
    ``dropped`` lists the metadata segments (offset from the JPEG's first byte,
    length, fill bytes included) that are left out of the DICOM object.
    """

    rows: int
    columns: int
    components: int
    bits: int
    process: JpegProcess
    arithmetic: bool
    sampling: tuple[tuple[int, int], ...]
    component_ids: tuple[int, ...]
    jfif: bool
    adobe_transform: int | None
    size_bytes: int
    dropped: tuple[tuple[int, int], ...] = ()

    @property
    def encapsulated_size(self) -> int:
        """Bytes of the JPEG as encapsulated: the whole JPEG without its metadata
        segments (the Lossy Image Compression Ratio's compressed size)."""
        return self.size_bytes - sum(length for _, length in self.dropped)

    @property
    def is_ycbcr(self) -> bool:
        """Whether the three components are Y, Cb, Cr (as decoders decide it).

        Follows libjpeg: a JFIF marker means YCbCr; otherwise an Adobe marker's
        transform flag decides; otherwise component ids "R", "G", "B" mean RGB and
        anything else YCbCr.
        """
        if self.components != 3:
            return False
        if self.jfif:
            return True
        if self.adobe_transform is not None:
            return self.adobe_transform == 1
        return self.component_ids != (ord("R"), ord("G"), ord("B"))

    @property
    def chroma_subsampling(self) -> str:
        """The chroma subsampling as usually written: "4:2:0", "4:2:2", "4:4:4" or "other".

        Computed from ratios, so luma 4x4 with chroma 2x2 is still "4:2:0". Anything
        that is not three components with identical chroma sampling is "other".
        """
        if self.components != 3 or self.sampling[1] != self.sampling[2]:
            return "other"
        (yh, yv), (ch, cv) = self.sampling[0], self.sampling[1]
        if yh % ch or yv % cv:
            return "other"
        return {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0"}.get(
            (yh // ch, yv // cv), "other"
        )


@dataclass(frozen=True, slots=True)
class JpegEncapsulation:
    """How an accepted JPEG is described in DICOM."""

    transfer_syntax_uid: str
    photometric_interpretation: str


def read_jpeg_info(path: Path) -> JpegInfo:
    """Read the header of the JPEG at ``path`` (never the whole file).

    Raises :class:`NotAJpeg` when the file is not a JPEG or its header is damaged.
    """
    with path.open("rb") as fh:
        return read_jpeg_info_from(fh)


def read_jpeg_info_from(stream: BinaryIO) -> JpegInfo:
    """Read a JPEG header from a seekable binary stream positioned at its start."""
    start = stream.tell()
    size = stream.seek(0, io.SEEK_END) - start
    stream.seek(start)
    return _HeaderReader(stream, start, size).read()


def strip_metadata(jpeg: bytes | bytearray, info: JpegInfo | None = None) -> bytes:
    """``jpeg`` (the whole JPEG, or its first bytes up to at least Start of Scan)
    without the metadata segments ``info`` found (read here when not given)."""
    if info is None:
        info = read_jpeg_info_from(io.BytesIO(jpeg))
    view = memoryview(jpeg)
    out = bytearray()
    position = 0
    for offset, length in info.dropped:
        out += view[position:offset]
        position = offset + length
    out += view[position:]
    return bytes(out)


def copy_without_metadata(
    src: BinaryIO, out: BinaryIO, info: JpegInfo, *, chunk_size: int = 1 << 20
) -> int:
    """Copy the JPEG ``src`` (positioned at its first byte) to ``out`` without the
    metadata segments ``info`` found in it, ``chunk_size`` bytes at a time; return
    the bytes written (``info.encapsulated_size`` unless ``src`` changed)."""
    start = src.tell()
    written = 0

    def copy(count: int | None) -> None:
        nonlocal written
        while count is None or count > 0:
            block = src.read(chunk_size if count is None else min(chunk_size, count))
            if not block:
                return
            out.write(block)
            written += len(block)
            if count is not None:
                count -= len(block)

    position = 0
    for offset, length in info.dropped:
        copy(offset - position)
        position = offset + length
        src.seek(start + position)
    copy(None)
    return written


def encapsulation_for(info: JpegInfo) -> JpegEncapsulation:
    """Say how ``info``'s JPEG is carried unchanged in DICOM, or raise :class:`UnsupportedJpeg`.

    The message of the exception is the quarantine reason for the technician.
    """
    if info.arithmetic:
        raise UnsupportedJpeg(
            "JPEG uses arithmetic coding, which DICOM viewers and PACS do not support; "
            + _QUARANTINED
        )
    if info.process is JpegProcess.PROGRESSIVE:
        raise UnsupportedJpeg(
            "JPEG is progressive, for which DICOM has only retired transfer syntaxes "
            "that PACS refuse; " + _QUARANTINED
        )
    if info.process in (JpegProcess.LOSSLESS, JpegProcess.HIERARCHICAL):
        raise UnsupportedJpeg(
            f"JPEG uses the {info.process.value} process, which DermGate cannot carry "
            "as a lossy VL image; " + _QUARANTINED
        )
    if info.bits != 8:
        raise UnsupportedJpeg(
            f"JPEG has {info.bits}-bit samples; VL Image objects hold 8-bit colour only; "
            + _QUARANTINED
        )
    if info.components != 3:
        kind = "grayscale" if info.components == 1 else f"{info.components}-component"
        raise UnsupportedJpeg(f"JPEG is {kind}, not a 3-component colour image; " + _QUARANTINED)
    if not info.is_ycbcr:
        raise UnsupportedJpeg(
            "JPEG stores RGB instead of YCbCr, which the VL Image rules cannot describe "
            "as YBR_FULL_422; " + _QUARANTINED
        )
    subsampling = info.chroma_subsampling
    if subsampling not in ("4:2:0", "4:2:2"):
        sampling = " ".join(f"{h}x{v}" for h, v in info.sampling)
        described = (
            "4:4:4 chroma subsampling"
            if subsampling == "4:4:4"
            else f"unusual chroma sampling ({sampling})"
        )
        raise UnsupportedJpeg(
            f"JPEG uses {described}, which the VL Image rules cannot describe as "
            "YBR_FULL_422; " + _QUARANTINED
        )
    syntax = JPEGBaseline8Bit if info.process is JpegProcess.BASELINE else JPEGExtended12Bit
    return JpegEncapsulation(str(syntax), "YBR_FULL_422")


class _HeaderReader:
    """Walks marker segments from SOI to SOS, holding at most one segment in memory."""

    def __init__(self, stream: BinaryIO, start: int, size: int) -> None:
        self._stream = stream
        self._start = start
        self._end = start + size
        self._dropped: list[tuple[int, int]] = []
        self._size = size
        self._jfif = False
        self._adobe_transform: int | None = None
        self._frame: tuple[int, bytes] | None = None

    def read(self) -> JpegInfo:
        head = self._stream.read(4)
        if not head:
            raise NotAJpeg("capture is empty (0 bytes), not a JPEG")
        if head[:2] != b"\xff\xd8":
            raise NotAJpeg(f"capture is not a JPEG (starts with {head.hex()})")
        self._stream.seek(-len(head) + 2, io.SEEK_CUR)
        for _ in range(_MAX_SEGMENTS):
            begins = self._stream.tell()
            marker = self._next_marker()
            if marker in _STANDALONE:
                continue
            if marker in (_SOI, _EOI):
                raise NotAJpeg(
                    f"JPEG header is damaged: unexpected marker ff{marker:02x} "
                    "before the image data"
                )
            length = int.from_bytes(self._exact(2, "a segment length"), "big")
            if length < 2:
                raise NotAJpeg(
                    f"JPEG header is damaged: segment ff{marker:02x} has length {length}"
                )
            if marker == _SOS:
                return self._info()
            if not self._segment(marker, length - 2):
                self._dropped.append((begins - self._start, self._stream.tell() - begins))
        raise NotAJpeg(
            f"JPEG header is damaged: more than {_MAX_SEGMENTS} segments before the image data"
        )

    def _segment(self, marker: int, length: int) -> bool:
        """Read or skip one segment's payload; False for a metadata segment to drop."""
        if marker in _SOF or marker == _DHP:
            payload = self._exact(length, "the frame header")
            if self._frame is None:
                self._frame = (marker, payload)
            return True
        if marker == _COM:
            self._skip(length)
            return False
        if not _APP0 <= marker <= _APP15:
            self._skip(length)
            return True
        head = self._exact(min(length, _APP_ID_BYTES), "an APP segment")
        if marker == _APP14 and head[:5] == b"Adobe" and length >= 12:
            self._adobe_transform = head[11]
        if marker == _APP0 and head[:5] == b"JFIF\x00":
            self._jfif = True
        self._skip(length - len(head))
        wanted = _KEPT_APP.get(marker)
        return wanted is not None and head.startswith(wanted)

    def _info(self) -> JpegInfo:
        if self._frame is None:
            raise NotAJpeg("JPEG header is damaged: image data starts before any frame header")
        marker, payload = self._frame
        process, arithmetic = _SOF.get(marker, (JpegProcess.HIERARCHICAL, False))
        if len(payload) < 6:
            raise NotAJpeg("JPEG header is damaged: frame header too short")
        bits = payload[0]
        rows = int.from_bytes(payload[1:3], "big")
        columns = int.from_bytes(payload[3:5], "big")
        count = payload[5]
        if count == 0 or len(payload) != 6 + 3 * count:
            raise NotAJpeg("JPEG header is damaged: frame header does not match its components")
        ids = tuple(payload[6 + 3 * i] for i in range(count))
        sampling = tuple((payload[7 + 3 * i] >> 4, payload[7 + 3 * i] & 0x0F) for i in range(count))
        if any(not (1 <= h <= 4 and 1 <= v <= 4) for h, v in sampling):
            raise NotAJpeg("JPEG header is damaged: invalid sampling factors")
        if columns == 0:
            raise NotAJpeg("JPEG header is damaged: image width is 0")
        if rows == 0:
            raise UnsupportedJpeg(
                "JPEG gives its height only after the image data (DNL marker), which "
                "DermGate cannot read without decoding; " + _QUARANTINED
            )
        return JpegInfo(
            rows=rows,
            columns=columns,
            components=count,
            bits=bits,
            process=process,
            arithmetic=arithmetic,
            sampling=sampling,
            component_ids=ids,
            jfif=self._jfif,
            adobe_transform=self._adobe_transform,
            size_bytes=self._size,
            dropped=tuple(self._dropped),
        )

    def _next_marker(self) -> int:
        byte = self._exact(1, "a marker")
        if byte != b"\xff":
            raise NotAJpeg(
                f"JPEG header is damaged: expected a marker at byte {self._stream.tell() - 1}, "
                f"found {byte.hex()}"
            )
        while (byte := self._exact(1, "a marker")) == b"\xff":
            pass  # fill bytes before a marker are allowed
        if byte == b"\x00":
            raise NotAJpeg("JPEG header is damaged: stray ff00 before the image data")
        return byte[0]

    def _exact(self, count: int, what: str) -> bytes:
        data = self._stream.read(count)
        if len(data) != count:
            raise NotAJpeg(f"JPEG is truncated: the file ends inside {what}, before the image data")
        return data

    def _skip(self, count: int) -> None:
        if self._stream.tell() + count > self._end:
            raise NotAJpeg("JPEG is truncated: the file ends inside a header segment")
        self._stream.seek(count, os.SEEK_CUR)
