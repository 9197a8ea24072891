"""An 8-bit confocal stack written straight into its DICOM file while it arrives.

Intake (:mod:`gateway.intake.staging`) streams the device's pixels into the file
the wrapping stage would otherwise write from ``raw/`` (:func:`write_confocal`):
the bytes on disk are the same, written once. What is not known when the first
pixels arrive is each frame's depth (the usb-confocal driver learns them during
the transfer and gives them with the final offer at commit), and with it the
top-level Image Acquisition Depth and every frame's Per-Frame Functional Groups
item. So the file is laid out at the start with room reserved for those:

1. the header (:func:`~gateway.dicom.part10.encode_header` of the data set without
   per-frame groups), built with provisional depths (0 µm; a mosaic's tiles row by
   row, the only order the USB protocol has);
2. a hole exactly as long as the per-frame groups (z-stack, sparse mosaic): a frame's
   item has the same length whatever its depth (FD values, a Frame Label padded to
   :data:`~gateway.dicom.confocal.DEPTH_LABEL_WIDTH`), so its size is known from
   the geometry and the acquisition time alone;
3. the Pixel Data header, then the device's pixels as they come.

At commit (:meth:`ConfocalInline.finish`, before the file is fsynced and its ledger
row committed) the final offer's stack is checked, the per-frame groups are written
into the hole and the header rewritten in place. When the final offer describes a
stack whose header or groups would not fit the reserved room (another geometry, a
sparse mosaic, a description DICOM cannot carry) ``finish`` says so and intake keeps
the pixels raw instead: the wrapping stage then wraps or quarantines them with the
reason, as for any raw capture.

A 16-bit stack is not written here: its Word Secondary Capture header carries a
window computed over every pixel of the stack and text vectors of every frame's
depth (:mod:`gateway.dicom.confocal_sc`), known only after the last byte, and of a
length that depends on them. It stays on the raw path (written twice).
"""

from __future__ import annotations

import base64
import dataclasses
import os
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Final, cast

from gateway.core.capture import CaptureOffer
from gateway.dicom.confocal import (
    build_without_per_frame_groups,
    per_frame_groups,
    pixel_data_header,
    write_per_frame_groups,
)
from gateway.dicom.confocal_stack import (
    CONFOCAL_IMAGE_SOP_CLASS,
    CONFOCAL_TILED_SOP_CLASS,
    MAX_FRAMES,
    ConfocalStack,
)
from gateway.dicom.elements import encode_item, sequence_header
from gateway.dicom.errors import WrapError
from gateway.dicom.job import InlineStart, WrapJob
from gateway.dicom.part10 import encode_header

__all__ = ["ConfocalInline", "begin_confocal", "may_write_confocal_inline"]

_ROW_MAJOR: Final = "row-major"


def may_write_confocal_inline(offer: CaptureOffer) -> bool:
    """An 8-bit stack (16-bit ones are Word SC: see the module docstring)."""
    return str(offer.extra.get("bits")) != "16"


@dataclass(frozen=True, slots=True)
class ConfocalInline:
    """The reserved layout of one stack's file, and how to complete it at commit."""

    job: WrapJob
    stack: ConfocalStack
    header_length: int
    groups_length: int

    def finish(self, offer: CaptureOffer, out: BinaryIO) -> bool:
        """Fill the reserved room from the final ``offer`` (blocking); False (nothing
        that matters written: the pixels are intact) when it does not fit."""
        try:
            stack = ConfocalStack.from_extra(offer.extra)
        except WrapError:
            return False
        if (stack.kind, stack.full_grid, stack.pixel_bytes) != (
            self.stack.kind,
            self.stack.full_grid,
            self.stack.pixel_bytes,
        ):
            return False
        job = dataclasses.replace(self.job, offer=offer)
        dataset, acquired = build_without_per_frame_groups(job, stack)
        header = encode_header(dataset)
        if len(header) != self.header_length:
            return False
        if self.groups_length:
            room = _Room(out, self.header_length, self.groups_length)
            try:
                written = write_per_frame_groups(cast(BinaryIO, room), stack, acquired)
            except _NoRoom:
                return False
            if written != self.groups_length:
                return False
        out.seek(0)
        out.write(header)
        out.seek(0, os.SEEK_END)
        return True


def begin_confocal(job: WrapJob) -> InlineStart:
    """The start of the file of the 8-bit stack ``job.offer`` announces (blocking).

    Raises :class:`WrapError` when it cannot be begun (the capture is then kept raw
    and the wrapping stage quarantines it with its reason).
    """
    stack = ConfocalStack.from_extra(_provisional(job.offer.extra))
    if stack.pixel_bytes != job.offer.length:
        raise WrapError("the announced length is not what the geometry says")
    dataset, acquired = build_without_per_frame_groups(job, stack)
    header = encode_header(dataset)
    groups = 0 if stack.full_grid else _groups_length(stack, acquired)
    inline = ConfocalInline(job, stack, len(header), groups)
    sop_class = CONFOCAL_TILED_SOP_CLASS if stack.kind == "mosaic" else CONFOCAL_IMAGE_SOP_CLASS
    pixels = pixel_data_header(stack)
    return InlineStart(
        start=header if groups else header + pixels,
        end=b"\x00" if stack.pixel_bytes & 1 else b"",
        sop_class_uid=sop_class,
        transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
        gap=groups,
        resume=pixels if groups else b"",
        finish=inline.finish,
        data_offset=len(header) + groups + len(pixels),
    )


def _provisional(extra: dict[str, object]) -> dict[str, object]:
    """The begin offer's description with what only the end knows made up: every
    depth 0 µm, a mosaic's tiles row by row."""
    provisional = dict(extra)
    frames = int(str(extra.get("frames") or 0))
    if not 0 < frames <= MAX_FRAMES:
        return provisional  # from_extra says why
    if extra.get("kind") == "z-stack":
        provisional.pop("depths_um", None)
        provisional["depths_um_f64"] = base64.b64encode(bytes(8 * frames)).decode("ascii")
    elif extra.get("kind") == "mosaic" and not extra.get("tiles"):
        provisional["tiles"] = _ROW_MAJOR
    return provisional


class _Counter:
    """A write-only sink that counts (to size the per-frame groups without keeping them)."""

    def __init__(self) -> None:
        self.position = 0

    def write(self, data: bytes) -> int:
        self.position += len(data)
        return len(data)


def _groups_length(stack: ConfocalStack, acquired: datetime) -> int:
    counter = _Counter()
    counter.write(sequence_header("PerFrameFunctionalGroupsSequence", 0))
    for group in per_frame_groups(stack, acquired):
        counter.write(encode_item(group))
    return counter.position


class _NoRoom(Exception):
    """The per-frame groups would run past their reserved room."""


class _Room:
    """The reserved room of ``out``: writes past its end raise :class:`_NoRoom`
    (the pixels after it are never touched)."""

    def __init__(self, out: BinaryIO, start: int, length: int) -> None:
        self._out = out
        self._start = start
        self._end = start + length
        out.seek(start)

    def tell(self) -> int:
        return self._out.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or not self._start <= offset <= self._end:
            raise _NoRoom
        return self._out.seek(offset)

    def write(self, data: bytes) -> int:
        if self._out.tell() + len(data) > self._end:
            raise _NoRoom
        return self._out.write(data)
