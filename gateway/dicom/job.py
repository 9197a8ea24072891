"""What the wrapping stage hands a DICOM writer, and what it gets back.

A writer turns one durable capture file into one DICOM Part 10 file. It is
blocking (the wrapping stage runs it on a worker thread), streams the capture
instead of loading it, and writes ``dest`` atomically
(:func:`gateway.core.files.atomic_writer`). It raises a
:class:`~gateway.dicom.errors.WrapError` for a capture that can never be wrapped
(kept and quarantined with the message as reason) and :class:`OSError` for I/O
trouble (retried later).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from gateway.core.capture import CaptureOffer, DeviceIdentity, GatewayIdentity, InstanceUIDs
from gateway.core.context import CaptureContext

__all__ = ["InlineStart", "ObjectWriter", "WrapJob", "WrittenObject"]


@dataclass(frozen=True, slots=True)
class WrapJob:
    """One capture to wrap: who sent it, what it is, and where its bytes are.

    ``offer.patient`` is the device-supplied patient identity, if any; ``now`` is
    the timezone-aware wrap time. ``patient_spool_id`` is the spool id that names
    the temporary patient when the device named none (the capture's own, or the
    first capture's of a shared study; see :mod:`gateway.core.patient`); ``None``
    outside the spool. ``context`` is the patient/order/lesion context the capture
    was bound to at intake (:mod:`gateway.core.context`); ``None`` without one.
    """

    identity: DeviceIdentity
    offer: CaptureOffer
    uids: InstanceUIDs
    source: Path
    gateway: GatewayIdentity
    now: datetime
    patient_spool_id: int | None = None
    context: CaptureContext | None = None


@dataclass(frozen=True, slots=True)
class WrittenObject:
    """The DICOM object a writer produced."""

    sop_class_uid: str
    transfer_syntax_uid: str


ObjectWriter = Callable[[WrapJob, Path], WrittenObject]


@dataclass(frozen=True, slots=True)
class InlineStart:
    """A DICOM file begun while its capture arrives (intake): what to write, and what it is.

    ``start`` comes first: the Part 10 header up to the value's first byte, then
    the bytes received so far (a JPEG's without its metadata segments, which are in
    the header). When ``gap`` is not 0, ``gap`` bytes are left unwritten after
    ``start`` and ``resume`` follows them (the rest of the header, then the bytes
    received so far); ``finish`` fills the gap at commit. The device's remaining
    bytes follow as they are; ``end`` closes the file after its last byte.

    ``finish(final_offer, file)`` (blocking, before the file is fsynced) completes
    what only the end of the capture tells (a confocal stack's frame depths); False
    when the final offer does not fit what was reserved: the device's bytes, at
    ``data_offset`` in the file, are then kept raw for the wrapping stage.
    """

    start: bytes
    end: bytes
    sop_class_uid: str
    transfer_syntax_uid: str
    gap: int = 0
    resume: bytes = b""
    finish: Callable[[CaptureOffer, BinaryIO], bool] | None = None
    data_offset: int = 0
