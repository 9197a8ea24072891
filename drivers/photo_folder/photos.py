"""What a file dropped in the photo folder is, and whether DICOM can carry it.

:func:`examine` is the check done *before* anything is acknowledged. It opens the
file once, without following a link and only if it is a regular file with a single
name (:func:`gateway.driver_api.open_regular`; anything else raises
:class:`~gateway.driver_api.NotARegularFile` unopened), and, on that one
descriptor, decides:

* the kind, by content (never by name): JPEG (``FFD8``), TIFF (``II*\\0``/``MM\\0*``)
  or PNG (its signature); anything else is :class:`NotAPhoto`;
* for a JPEG: the header says DICOM can carry it as-is
  (:func:`gateway.driver_api.check_can_carry`: 4:2:0 or 4:2:2 baseline/extended),
  and the file ends with the End Of Image marker ``FFD9`` (a truncated copy does
  not; neither does a phone's "motion photo" that appends a video after the image,
  which is refused with the same reason rather than sent with hidden content);
* for a TIFF or PNG: the image is at most ``max_pixels`` by its header (checked
  before decoding), decodes, and can be carried losslessly (the same
  :func:`~gateway.driver_api.check_can_carry`);
* its EXIF (:mod:`.exif`), from the header only; a damaged EXIF block is not a
  reason to refuse the photo: it is then treated as absent;
* its SHA-256, which becomes the capture id: content, never the file name, which
  may hold a patient's name.

An empty file is treated as one that ends too early (``incomplete``): a copy that
created the file and stalled looks exactly like that.

Reasons are plain words without file names or patient data; they go into the
``.reason.txt`` file beside the refused entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from drivers.photo_folder.exif import CameraExif, ExifError, read_exif
from gateway.driver_api import (
    DEFAULT_MAX_PIXELS,
    CannotCarry,
    ContentType,
    check_can_carry,
    open_regular,
)

__all__ = ["FileIdentity", "NotAPhoto", "Photo", "examine", "file_identity"]

log = logging.getLogger(__name__)

_CHUNK: Final = 1 << 20
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


class NotAPhoto(Exception):
    """The file cannot become a DICOM photo; ``str(err)`` is the plain reason.

    ``incomplete`` marks defects a copy still in progress also shows (the file ends
    too early): the driver waits longer before refusing those, since a copy that
    stalls (a slow card reader, a network share) looks exactly like that.
    """

    def __init__(self, reason: str, *, incomplete: bool = False) -> None:
        super().__init__(reason)
        self.incomplete = incomplete


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file (inode) with which size and mtime: tells if a path was replaced."""

    device: int
    inode: int
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Photo:
    """A dropped file that DICOM can carry, with what the driver needs to offer it."""

    content_type: ContentType
    exif: CameraExif
    sha256: str
    file: FileIdentity

    @property
    def capture_id(self) -> str:
        """The device capture id: 128 bits of the content hash (never the file name)."""
        return f"photo-{self.sha256[:32]}"


def file_identity(st: os.stat_result) -> FileIdentity:
    """The :class:`FileIdentity` of a stat result."""
    return FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def examine(path: Path, *, accept_native: bool, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Check one settled file (blocking). Raises :class:`NotAPhoto` with the reason,
    :class:`~gateway.driver_api.NotARegularFile` for a link, pipe … (never
    opened), :class:`OSError` when the file cannot be read (it may be gone: try
    again later)."""
    with open_regular(path) as fh:
        st = os.fstat(fh.fileno())
        if st.st_size == 0:
            raise NotAPhoto("the file is empty (0 bytes)", incomplete=True)
        head = fh.read(8)
        fh.seek(0)
        if head[:2] == b"\xff\xd8":
            content_type = ContentType.JPEG
            try:
                check_can_carry(fh, content_type)
            except CannotCarry as err:
                raise NotAPhoto(str(err), incomplete=err.truncated) from err
            fh.seek(-2, os.SEEK_END)
            if fh.read(2) != b"\xff\xd9":
                raise NotAPhoto(
                    "the JPEG does not end with its End Of Image marker: the copy is "
                    "truncated (or other data was appended after the image)",
                    incomplete=True,
                )
        elif head[:4] in (b"II*\x00", b"MM\x00*") or head == _PNG_SIGNATURE:
            content_type = ContentType.PNG if head == _PNG_SIGNATURE else ContentType.TIFF
            if not accept_native:
                raise NotAPhoto(
                    f"{content_type.name} photos are not accepted by this folder's "
                    "configuration (accept_tiff_png = false); only JPEG"
                )
            try:
                check_can_carry(fh, content_type, max_pixels)
            except CannotCarry as err:
                raise NotAPhoto(str(err), incomplete=err.truncated) from err
        else:
            raise NotAPhoto("not a photo: the file is not a JPEG, TIFF or PNG image")
        fh.seek(0)
        try:
            exif = read_exif(fh)
        except ExifError as err:
            log.warning("a dropped photo's EXIF is damaged (%s); taken as absent", err)
            exif = CameraExif()
        fh.seek(0)
        digest = hashlib.sha256()
        size = 0
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        if size != st.st_size:
            raise OSError("the file changed size while being read")
        return Photo(content_type, exif, digest.hexdigest(), file_identity(st))
