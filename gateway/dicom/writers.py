"""Which DICOM object a capture becomes, and the writer that makes it.

The one place that picks an IOD for a capture, used by both stages that write
DICOM files: the wrapping stage (:func:`write_capture`, a capture in ``raw/``) and
intake (:func:`read_inline_header` and :func:`begin_inline`, a capture written
straight into its DICOM file while it arrives, so its bytes are written once: a
JPEG, an 8-bit confocal stack (:mod:`gateway.dicom.confocal_inline`: room reserved
for what only the end tells, filled at commit), an OBJ/MTL/STL model). Written
raw first and wrapped later: captures of unknown length, PNG/TIFF photos (decoded
to native pixels: the header needs the decoded image) and 16-bit confocal stacks
(their header needs a window over every pixel; see
:mod:`gateway.dicom.confocal_inline`).

============================  ======================  ================================
content type                  device class            DICOM object
============================  ======================  ================================
image/jpeg                    dermatoscope            Dermoscopic Photography (…77.1.7)
image/jpeg                    camera, body scanner    VL Photographic (…77.1.4)
image/tiff, image/png         camera, body scanner    VL Photographic, native pixels
raw pixels                    confocal microscope     Confocal Microscopy (…77.1.8/.9),
                                                      16-bit: Word SC (…7.3)
model/obj, model/mtl,         body scanner            Encapsulated OBJ, MTL, STL
model/stl                                             (…104.4, .5, .3)
============================  ======================  ================================

The content type decides first; a JPEG's builder then follows the device class.
Blocking (callers run these on a worker thread), except the two small checks
intake makes on the event loop (:func:`may_write_inline`, :func:`read_inline_header`).
"""

from __future__ import annotations

import dataclasses
import enum
import io
from datetime import datetime
from pathlib import Path
from typing import Final

from pydicom.dataset import Dataset

from gateway.core.capture import (
    CaptureOffer,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
)
from gateway.core.context import CaptureContext
from gateway.dicom.confocal import write_confocal
from gateway.dicom.confocal_inline import begin_confocal, may_write_confocal_inline
from gateway.dicom.dermoscopy import build_dermoscopic_photography
from gateway.dicom.errors import WrapError
from gateway.dicom.job import InlineStart, ObjectWriter, WrapJob, WrittenObject
from gateway.dicom.jpeg import JpegInfo, read_jpeg_info, read_jpeg_info_from, strip_metadata
from gateway.dicom.part10 import part10_prefix, part10_suffix, write_part10_encapsulated
from gateway.dicom.photo import build_vl_photographic, write_vl_photographic_native
from gateway.dicom.surface import begin_encapsulated_3d, write_encapsulated_3d

__all__ = [
    "INLINE_HEADER_LIMIT",
    "InlineHeader",
    "InlineStart",
    "begin_inline",
    "jpeg_dataset",
    "may_write_inline",
    "read_inline_header",
    "write_capture",
    "writer_for",
]

#: A JPEG header (markers up to Start of Scan, EXIF and ICC included) is found
#: within this many bytes, or the capture is spooled raw and the wrapping stage decides.
INLINE_HEADER_LIMIT: Final = 1 << 20

_WRITERS: Final[dict[ContentType, ObjectWriter]] = {
    ContentType.PIXELS: write_confocal,
    ContentType.OBJ: write_encapsulated_3d,
    ContentType.MTL: write_encapsulated_3d,
    ContentType.STL: write_encapsulated_3d,
    ContentType.TIFF: write_vl_photographic_native,
    ContentType.PNG: write_vl_photographic_native,
}


def writer_for(content_type: ContentType) -> ObjectWriter | None:
    """The writer for captures that are not JPEGs (JPEGs: :func:`jpeg_dataset`)."""
    return _WRITERS.get(content_type)


def write_capture(job: WrapJob, dest: Path) -> WrittenObject:
    """Write the DICOM file of one captured file to ``dest`` (blocking).

    Raises a :class:`WrapError` for a capture no DICOM object can carry (kept and
    quarantined with the message as reason) and :class:`OSError` for I/O trouble.
    """
    writer = writer_for(job.offer.content_type)
    if writer is not None:
        return writer(job, dest)
    if job.offer.content_type is not ContentType.JPEG:
        raise WrapError(f"no DICOM writer for content type {job.offer.content_type}")
    jpeg = read_jpeg_info(job.source)
    dataset = jpeg_dataset(
        identity=job.identity,
        offer=job.offer,
        uids=job.uids,
        jpeg=jpeg,
        gateway=job.gateway,
        now=job.now,
        patient_spool_id=job.patient_spool_id,
        context=job.context,
    )
    write_part10_encapsulated(dataset, job.source, dest)
    return _written(dataset)


def jpeg_dataset(
    *,
    identity: DeviceIdentity,
    offer: CaptureOffer,
    uids: InstanceUIDs,
    jpeg: JpegInfo,
    gateway: GatewayIdentity,
    now: datetime,
    patient_spool_id: int | None = None,
    context: CaptureContext | None = None,
) -> Dataset:
    """The DICOM data set (without Pixel Data) of one JPEG capture; raises WrapError.

    The device class picks the IOD: a camera's or body scanner's photo is VL
    Photographic, a dermatoscope's image Dermoscopic Photography.
    ``patient_spool_id`` names the temporary patient of a capture without a
    Patient ID; ``context`` is the capture's patient/order/lesion context.
    """
    if identity.device_class in (DeviceClass.CAMERA, DeviceClass.BODY_SCANNER):
        return build_vl_photographic(
            identity=identity,
            offer=offer,
            uids=uids,
            jpeg=jpeg,
            gateway=gateway,
            patient=offer.patient,
            now=now,
            patient_spool_id=patient_spool_id,
            context=context,
        )
    if identity.device_class is not DeviceClass.DERMATOSCOPE:
        raise WrapError(f"no JPEG builder for device class {identity.device_class}")
    return build_dermoscopic_photography(
        identity=identity,
        offer=offer,
        uids=uids,
        jpeg=jpeg,
        gateway=gateway,
        patient=offer.patient,
        now=now,
        # Without patient context every capture is its own study and series
        # (never merge two patients' images), so both numbers are 1.
        series_number=1,
        instance_number=1,
        patient_spool_id=patient_spool_id,
        context=context,
    )


# --- written while it arrives (intake) -----------------------------------------------


def may_write_inline(offer: CaptureOffer) -> bool:
    """May this capture be written straight into its DICOM file as it arrives?

    Only one whose length the device announced (the value's length is written
    before its first byte): a JPEG, an 8-bit confocal stack, an OBJ/MTL/STL model.
    """
    if offer.length is None:
        return False
    if offer.content_type is ContentType.PIXELS:
        return may_write_confocal_inline(offer)
    return offer.content_type in _INLINE


_INLINE: Final = frozenset({ContentType.JPEG, ContentType.OBJ, ContentType.MTL, ContentType.STL})


class InlineHeader(enum.Enum):
    """What the first bytes of a capture say when they hold no usable JPEG header."""

    #: Not (yet) a readable JPEG header: wait for more bytes.
    MORE = "more"
    #: It never will be: keep the capture as it came; the wrapping stage decides.
    RAW = "raw"
    #: Not a JPEG: no header to read, the DICOM file is begun at once.
    NOT_NEEDED = "not needed"


def read_inline_header(
    received: bytes | bytearray,
    length: int,
    *,
    final: bool,
    content_type: ContentType = ContentType.JPEG,
) -> JpegInfo | InlineHeader:
    """The JPEG header in the first ``received`` bytes of a capture of ``length`` bytes.

    ``final``: no more bytes will come. The header's ``size_bytes`` is the
    announced ``length`` (the rest of the JPEG has not arrived yet). Any other
    ``content_type``: :attr:`InlineHeader.NOT_NEEDED`.
    """
    if content_type is not ContentType.JPEG:
        return InlineHeader.NOT_NEEDED
    try:
        info = read_jpeg_info_from(io.BytesIO(received))
    except WrapError:
        if final or len(received) >= INLINE_HEADER_LIMIT:
            return InlineHeader.RAW
        return InlineHeader.MORE
    return dataclasses.replace(info, size_bytes=length)


def begin_inline(
    *,
    identity: DeviceIdentity,
    offer: CaptureOffer,
    uids: InstanceUIDs,
    jpeg: JpegInfo | None,
    received: bytes,
    gateway: GatewayIdentity,
    now: datetime,
    patient_spool_id: int | None,
    context: CaptureContext | None = None,
) -> InlineStart | None:
    """Begin the DICOM file of a capture whose first bytes are ``received`` (blocking).

    ``jpeg`` is :func:`read_inline_header`'s answer for a JPEG, ``None`` otherwise.
    ``None`` when no DICOM object can carry the capture as it is: it is then kept
    as it came and the wrapping stage quarantines it with the reason.
    """
    if jpeg is None:
        job = WrapJob(identity, offer, uids, Path(), gateway, now, patient_spool_id, context)
        try:
            if offer.content_type is ContentType.PIXELS:
                begun = begin_confocal(job)
            else:
                begun = begin_encapsulated_3d(job)
        except (WrapError, ValueError):
            return None
        if begun.gap:
            return dataclasses.replace(begun, resume=begun.resume + received)
        return dataclasses.replace(begun, start=begun.start + received)
    try:
        dataset = jpeg_dataset(
            identity=identity,
            offer=offer,
            uids=uids,
            jpeg=jpeg,
            gateway=gateway,
            now=now,
            patient_spool_id=patient_spool_id,
            context=context,
        )
        head = part10_prefix(dataset, jpeg.encapsulated_size)
        stripped = strip_metadata(received, jpeg)
    except (WrapError, ValueError):
        return None
    written = _written(dataset)
    return InlineStart(
        start=head + stripped,
        end=part10_suffix(jpeg.encapsulated_size),
        sop_class_uid=written.sop_class_uid,
        transfer_syntax_uid=written.transfer_syntax_uid,
    )


def _written(dataset: Dataset) -> WrittenObject:
    return WrittenObject(
        sop_class_uid=str(dataset.SOPClassUID),
        transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
    )
