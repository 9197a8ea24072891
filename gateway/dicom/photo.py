"""VL Photographic Image Storage (PS3.3 A.32.4): clinical photos and 3D textures.

Two ways in, one object:

* :func:`build_vl_photographic` describes a camera's (or a scanner texture's) JPEG
  *without* Pixel Data; :func:`gateway.dicom.part10.write_part10_encapsulated` (or
  intake, inline) appends the JPEG as one fragment, its metadata segments (EXIF,
  XMP, comments) dropped and its image data byte for byte. Same photometric
  rules as dermoscopy (:func:`gateway.dicom.jpeg.encapsulation_for`): 4:2:0 / 4:2:2
  baseline or extended JPEGs as ``YBR_FULL_422``, Lossy Image Compression ``01``,
  method ``ISO_10918_1``; 4:4:4, progressive, grayscale … are refused
  (:class:`~gateway.dicom.errors.UnsupportedJpeg`), never transcoded.
* :func:`write_vl_photographic_native` takes a TIFF or PNG (scanner textures, some
  cameras), decodes it with Pillow and writes its pixels *losslessly* as native
  ``RGB`` (or ``MONOCHROME2``) in Explicit VR Little Endian, streamed band by band.
  Images that cannot be carried without loss are refused: more than 8 bits per
  sample (VL images are 8-bit), transparent pixels, CMYK/LAB/float, several pages.
  A fully opaque alpha channel is dropped (no information is lost) and a palette
  is expanded to RGB. Decoding holds the whole image once (Pillow cannot decode a
  PNG in strips), so the declared size (read from the header, before anything is
  decoded) is checked first: images above the device's ``max_pixels``
  (``PhotoExtra.max_pixels``, default :data:`DEFAULT_MAX_PIXELS`, at most
  :data:`MAX_NATIVE_PIXELS`) are refused with a reason naming the limit; that
  bounds memory at about 4 bytes per pixel, and a small file declaring a huge
  image (a decompression bomb) costs nothing.

The builder is pure (no I/O, no clock reads; the Frame of Reference is not used)
and the same inputs give an equal dataset, so a re-wrap after a crash gives the
same object. Decisions, with the rule behind each:

* **Modality** ``XC`` (external-camera photography), as the IOD defines.
* **Equipment**: the VL Photographic IOD has General Equipment (M), where only
  Manufacturer is required (type 2: empty when unknown); Manufacturer's Model
  Name, Device Serial Number and Software Versions are type 3. So, unlike the
  dermoscopic builder, nothing here is refused for a camera that does not name
  itself: what the device (EXIF, or the driver's configured fallback) said is
  written, what it did not say is left out, never invented. Software Versions is
  the device's own (firmware); DermGate, the software that made the object, is the
  item of Contributing Equipment Sequence (:func:`~gateway.dicom.modules.add_dermgate_equipment`).
* **Patient**: only the ``patient`` argument (a scanner export's patient fields);
  a photo without a Patient ID gets a temporary patient
  ``TMP-<gateway id>-<spool id>`` (:mod:`gateway.core.patient`).
* **Numbers**: Series Number and Instance Number come from ``offer.extra``
  (``series_number``, ``instance_number``: a scanner numbers its textures). Without
  them, a capture whose UIDs intake minted is alone in its study and series, so
  both are 1; a capture with driver-chosen UIDs shares a series with others and
  gets them empty (type 2) rather than a guessed number.
* **Dates**: the acquisition time is the offer's (the driver reads EXIF
  DateTimeOriginal with OffsetTimeOriginal). Study, Series and Content Date/Time
  use it; without it they use the wrap time and Acquisition DateTime (type 3) is
  left out rather than claiming a moment nobody recorded.
* **EXIF**: :class:`PhotoExtra` is the typed view of ``offer.extra``. Lens make,
  model, serial and specification fill VL Photographic Equipment; exposure time,
  f-number, focal lengths, ISO and the EXIF version fill VL Photographic
  Acquisition (group 0016, mirrors of the EXIF tags). GPS position, camera owner,
  user comments and maker notes are never copied: they may identify a person or a
  place and the clinic did not ask for them.
* **Orientation**: a camera held sideways stores the pixels unrotated and says
  so in EXIF Orientation; DICOM has no display-rotation attribute for this IOD and
  rotating would mean re-encoding (or, for JPEG, changing the device's bytes), so
  the pixels stay as they are and Image Comments (0020,4000) tells the reader
  how to turn the photo upright.
* **Recognizable Visual Features** (0028,0302) is YES: a clinical overview photo
  usually shows enough of a body to identify the patient, and the gateway never
  looks at the pixels, so it cannot vouch for NO.
* **Laterality and anatomy** as for dermoscopy: Image Laterality when the device
  names a side, else Series Laterality present and empty; a CID 4029 site code
  fills Anatomic Region Sequence, an unknown one is left out.
* **Session context** (:mod:`gateway.dicom.context`): patient, order, request
  attributes and the lesion's site and side; no Tracking ID/UID (the VL
  Photographic IOD has no module holding them).
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, VLPhotographicImageStorage
from pydicom.valuerep import format_number_as_ds

from gateway.core.capture import (
    CaptureOffer,
    ContentType,
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
    Laterality,
    PatientContext,
)
from gateway.core.context import CaptureContext
from gateway.core.patient import object_patient
from gateway.dicom.context import apply_context
from gateway.dicom.errors import InconsistentSettings, WrapError
from gateway.dicom.job import WrapJob, WrittenObject
from gateway.dicom.jpeg import JpegInfo, encapsulation_for
from gateway.dicom.modules import (
    add_anatomic_region,
    add_dermgate_equipment,
    da,
    device_string,
    dt,
    in_zone_of,
    new_instance,
    station_name,
    tm,
)
from gateway.dicom.native_image import (
    DEFAULT_MAX_PIXELS,
    MAX_NATIVE_PIXELS,
    QUARANTINED,
    bands,
    check_native_image,
    decoded,
)
from gateway.dicom.part10 import StreamedValue, write_part10

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_NATIVE_PIXELS",
    "MODALITY",
    "VL_PHOTOGRAPHIC_SOP_CLASS",
    "ExifFields",
    "PhotoExtra",
    "build_vl_photographic",
    "check_native_image",
    "write_vl_photographic_native",
]

#: VL Photographic Image Storage.
VL_PHOTOGRAPHIC_SOP_CLASS: Final = str(VLPhotographicImageStorage)
#: External-camera photography.
MODALITY: Final = "XC"

_LO_MAX: Final = 64
#: EXIF Orientation -> what a viewer must do to show the photo upright (Image Comments).
_ORIENTATION_HINTS: Final = {
    2: "Camera orientation: mirror left-right to display as taken",
    3: "Camera orientation: rotate 180 degrees to display upright",
    4: "Camera orientation: mirror top-bottom to display as taken",
    5: "Camera orientation: mirror left-right, then rotate 90 degrees counter-clockwise "
    "to display upright",
    6: "Camera orientation: rotate 90 degrees clockwise to display upright",
    7: "Camera orientation: mirror left-right, then rotate 90 degrees clockwise to display upright",
    8: "Camera orientation: rotate 90 degrees counter-clockwise to display upright",
}


# --- the typed view of offer.extra ---------------------------------------------------


class ExifFields(BaseModel):
    """The EXIF fields a driver read from a photo's header, as JSON-compatible values.

    Strings are as the camera wrote them (trimmed); ``date_time_original`` is EXIF's
    ``YYYY:MM:DD HH:MM:SS`` and ``offset_time_original`` its ``+HH:MM``. The driver
    also turns both into ``CaptureOffer.acquired_at``; they are kept here as the
    camera's own record. ``lens_specification`` is EXIF LensSpecification: minimum
    and maximum focal length (mm), minimum f-number at each.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    make: str | None = None
    model: str | None = None
    body_serial_number: str | None = None
    software: str | None = None
    lens_make: str | None = None
    lens_model: str | None = None
    lens_serial_number: str | None = None
    lens_specification: tuple[float, float, float, float] | None = None
    focal_length_mm: float | None = Field(default=None, gt=0)
    focal_length_35mm: int | None = Field(default=None, gt=0)
    f_number: float | None = Field(default=None, gt=0)
    exposure_time_s: float | None = Field(default=None, gt=0)
    iso: int | None = Field(default=None, gt=0)
    exif_version: str | None = None
    date_time_original: str | None = None
    offset_time_original: str | None = None
    orientation: int | None = Field(default=None, ge=1, le=8)


class PhotoExtra(BaseModel):
    """What a VL Photographic capture carries in ``CaptureOffer.extra``.

    ``series_number`` / ``instance_number`` number a 3D scanner's textures within
    its series; ``exif`` is what a camera said about itself and the exposure.
    Unknown keys are ignored (other metadata may travel alongside).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    series_number: int | None = Field(default=None, ge=0, le=2**31 - 1)
    instance_number: int | None = Field(default=None, ge=0, le=2**31 - 1)
    exif: ExifFields | None = None
    #: The device's limit for images DermGate decodes (TIFF, PNG); None: the default.
    max_pixels: int | None = Field(default=None, gt=0, le=MAX_NATIVE_PIXELS)

    def to_extra(self) -> dict[str, Any]:
        """The JSON-compatible dict for ``CaptureOffer.extra`` (unset fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> PhotoExtra:
        """Read ``offer.extra`` back; a malformed value is a driver bug (WrapError)."""
        try:
            return cls.model_validate(extra)
        except ValidationError as err:
            fields = sorted({".".join(str(p) for p in e["loc"]) for e in err.errors()})
            raise InconsistentSettings(
                f"the device driver sent malformed photo metadata ({', '.join(fields)}); "
                f"check the device driver; {QUARANTINED}"
            ) from err


# --- the JPEG path ---------------------------------------------------------------------


def build_vl_photographic(
    *,
    identity: DeviceIdentity,
    offer: CaptureOffer,
    uids: InstanceUIDs,
    jpeg: JpegInfo,
    gateway: GatewayIdentity,
    patient: PatientContext | None,
    now: datetime,
    patient_spool_id: int | None = None,
    context: CaptureContext | None = None,
) -> Dataset:
    """The VL Photographic dataset of one JPEG, without Pixel Data.

    ``now`` (timezone-aware) is the wrap time; ``patient_spool_id`` names the
    temporary patient when ``patient`` has no Patient ID; ``context`` is the
    capture's patient/order/lesion context. Raises a
    :class:`~gateway.dicom.errors.WrapError` subclass (its message is the
    quarantine reason) when the JPEG cannot be carried as-is or the offer's
    metadata is malformed.
    """
    encapsulation = encapsulation_for(jpeg)
    ds = _photo_dataset(
        identity,
        offer,
        uids,
        gateway,
        patient,
        now,
        patient_spool_id,
        transfer_syntax_uid=encapsulation.transfer_syntax_uid,
        context=context,
    )
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = encapsulation.photometric_interpretation
    ds.PlanarConfiguration = 0
    ds.Rows = jpeg.rows
    ds.Columns = jpeg.columns
    _eight_bits(ds)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    if jpeg.encapsulated_size > 0:
        # Uncompressed size (3 samples of 8 bits) over the JPEG as encapsulated.
        ratio = jpeg.rows * jpeg.columns * 3 / jpeg.encapsulated_size
        ds.LossyImageCompressionRatio = format_number_as_ds(round(ratio, 2))
    return ds


# --- the TIFF/PNG path ------------------------------------------------------------------


def write_vl_photographic_native(job: WrapJob, dest: Path) -> WrittenObject:
    """A TIFF or PNG image, losslessly transcoded to native pixels, written to ``dest``.

    Blocking. Raises :class:`WrapError` for an image that is damaged, too large
    (``max_pixels`` in ``offer.extra``, else :data:`DEFAULT_MAX_PIXELS`) or cannot
    be carried without loss, and
    :class:`OSError` for I/O trouble (the source cannot be opened, the disk).
    """
    content = ContentType(job.offer.content_type)
    if content not in (ContentType.TIFF, ContentType.PNG):
        raise WrapError(f"the native photo writer does not take {content.value}; {QUARANTINED}")
    kind = "TIFF" if content is ContentType.TIFF else "PNG"
    # Build (and check the metadata) before decoding anything.
    ds = _photo_dataset(
        job.identity,
        job.offer,
        job.uids,
        job.gateway,
        job.offer.patient,
        job.now,
        job.patient_spool_id,
        context=job.context,
    )
    limit = PhotoExtra.from_extra(job.offer.extra).max_pixels or DEFAULT_MAX_PIXELS
    with job.source.open("rb") as fh, decoded(fh, kind, limit) as (image, monochrome):
        columns, rows = image.size
        samples = 1 if monochrome else 3
        ds.SamplesPerPixel = samples
        ds.PhotometricInterpretation = "MONOCHROME2" if monochrome else "RGB"
        if not monochrome:
            ds.PlanarConfiguration = 0
        ds.Rows = rows
        ds.Columns = columns
        _eight_bits(ds)
        ds.LossyImageCompression = "00"
        length = rows * columns * samples
        if length + (length & 1) > 0xFFFFFFFE:
            raise WrapError(f"the {kind} image is too large for one DICOM object; {QUARANTINED}")

        def copy_bands(out: BinaryIO) -> int:
            written = 0
            for band in bands(image, "L" if monochrome else "RGB", kind):
                out.write(band)
                written += len(band)
            return written

        def mismatch(_written: int) -> WrapError:
            return WrapError(f"the {kind} image decoded to an unexpected size; {QUARANTINED}")

        write_part10(dest, ds, StreamedValue(length, copy_bands, mismatch=mismatch))
    return WrittenObject(
        sop_class_uid=VL_PHOTOGRAPHIC_SOP_CLASS, transfer_syntax_uid=str(ExplicitVRLittleEndian)
    )


def _photo_dataset(
    identity: DeviceIdentity,
    offer: CaptureOffer,
    uids: InstanceUIDs,
    gateway: GatewayIdentity,
    patient: PatientContext | None,
    now: datetime,
    patient_spool_id: int | None,
    *,
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
    context: CaptureContext | None = None,
) -> Dataset:
    """Every module (and the File Meta) except the image pixel description."""
    extra = PhotoExtra.from_extra(offer.extra)
    laterality = _laterality(offer.laterality)
    acquired = in_zone_of(offer.acquired_at, now) if offer.acquired_at is not None else None
    started = acquired or in_zone_of(now, now)
    own_series = offer.uids is None
    series_number = extra.series_number
    instance_number = extra.instance_number
    if own_series:
        series_number = 1 if series_number is None else series_number
        instance_number = 1 if instance_number is None else instance_number

    ds = new_instance(
        sop_class_uid=VL_PHOTOGRAPHIC_SOP_CLASS,
        uids=uids,
        modality=MODALITY,
        patient=object_patient(patient, gateway.gateway_id, patient_spool_id).context,
        acquired=started,
        now=now,
        series_number=series_number,
        transfer_syntax_uid=transfer_syntax_uid,
    )
    if laterality is None:
        ds.Laterality = ""  # Series Laterality (0020,0060), type 2C
    _add_general_equipment(ds, identity, gateway, now)
    exif = extra.exif or ExifFields()
    _add_vl_photographic_equipment(ds, exif)

    # General Acquisition, General Image, VL Image (pixel description added by callers)
    if acquired is not None:
        ds.AcquisitionDateTime = dt(acquired)
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ""
    ds.ContentDate = da(started)
    ds.ContentTime = tm(started)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if laterality is not None:
        ds.ImageLaterality = laterality.value
    add_anatomic_region(ds, offer.anatomic_site, laterality)
    ds.RecognizableVisualFeatures = "YES"
    if hint := _ORIENTATION_HINTS.get(exif.orientation or 1):
        ds.ImageComments = hint

    ds.AcquisitionContextSequence = Sequence()
    _add_vl_photographic_acquisition(ds, exif)
    if context is not None:
        apply_context(ds, context, offer)
    return ds


def _laterality(value: object) -> Laterality | None:
    if value is None:
        return None
    try:
        return Laterality(str(value))
    except ValueError as err:
        raise InconsistentSettings(
            f"the device reported a laterality DICOM does not define ({value!r}); check "
            f"the device driver; {QUARANTINED}"
        ) from err


def _add_general_equipment(
    ds: Dataset, identity: DeviceIdentity, gateway: GatewayIdentity, now: datetime
) -> None:
    """General Equipment: Manufacturer type 2 (empty when unknown), the rest type 3
    (Software Versions: the device's firmware, left out when it named none); then
    DermGate's Contributing Equipment item."""
    ds.Manufacturer = _lo(identity.manufacturer)
    if model := _lo(identity.model):
        ds.ManufacturerModelName = model
    if serial := _lo(identity.serial_number):
        ds.DeviceSerialNumber = serial
    if versions := [_lo(v) for v in identity.software_versions if v.strip()]:
        ds.SoftwareVersions = versions
    if station := station_name(gateway):
        ds.StationName = station
    add_dermgate_equipment(ds, gateway, now=now)


def _add_vl_photographic_equipment(ds: Dataset, exif: ExifFields) -> None:
    """VL Photographic Equipment (U): the lens, as EXIF describes it."""
    if exif.lens_make:
        ds.LensMake = exif.lens_make.strip()
    if exif.lens_model:
        ds.LensModel = exif.lens_model.strip()
    if exif.lens_serial_number:
        ds.LensSerialNumber = exif.lens_serial_number.strip()
    spec = exif.lens_specification
    if spec is not None and all(math.isfinite(v) and v > 0 for v in spec):
        ds.LensSpecification = [format_number_as_ds(round(v, 4)) for v in spec]


def _add_vl_photographic_acquisition(ds: Dataset, exif: ExifFields) -> None:
    """VL Photographic Acquisition (U): the exposure, as EXIF describes it."""
    if exif.exposure_time_s is not None:
        ds.ExposureTimeInSeconds = _ds(exif.exposure_time_s)
    if exif.f_number is not None:
        ds.FNumber = _ds(exif.f_number)
    if exif.focal_length_mm is not None:
        ds.FocalLength = _ds(exif.focal_length_mm)
    if exif.focal_length_35mm is not None:
        ds.FocalLengthIn35mmFilm = min(exif.focal_length_35mm, 2**31 - 1)
    if exif.iso is not None:
        ds.PhotographicSensitivity = min(exif.iso, 2**31 - 1)
    if exif.exif_version:
        ds.EXIFVersion = exif.exif_version.strip()


def _ds(value: float) -> str:
    return format_number_as_ds(float(f"{value:.6g}"))


def _lo(value: str) -> str:
    """A device string as one LO value (see :func:`device_string`)."""
    return device_string(value, _LO_MAX)


def _eight_bits(ds: Dataset) -> None:
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
