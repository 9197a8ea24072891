"""A photo-folder device's options, and what a photo becomes: its camera and its offer.

Pure functions: :func:`identity_for` names the camera as the photo's EXIF does, with
the configured fallbacks; :func:`offer_for` is the capture offer of an examined
photo, its EXIF in ``offer.extra`` (:class:`gateway.driver_api.PhotoExtra`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from drivers.photo_folder.exif import CameraExif
from drivers.photo_folder.lesion_tag import parse_lesion_tag
from drivers.photo_folder.photos import Photo
from gateway.driver_api import (
    DEFAULT_MAX_PIXELS,
    MAX_NATIVE_PIXELS,
    CaptureOffer,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    ExifFields,
    Laterality,
    PhotoExtra,
)

__all__ = ["PhotoFolderOptions", "identity_for", "offer_for"]

_LO: Final = 64


class PhotoFolderOptions(BaseModel):
    """Options of a ``[[devices]]`` entry with ``driver = "photo-folder"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    folder: Path = Field(description="The folder the camera (or its copy tool) writes photos to.")
    settle_seconds: float = Field(
        default=2.0,
        ge=0,
        description=(
            "A file must look unchanged this long (by the box's clock) before it is taken; "
            "one its writer was seen closing (below) only `closed_settle_seconds`."
        ),
    )
    closed_settle_seconds: float = Field(
        default=0.2,
        ge=0,
        description=(
            "A file whose writer on this box closed it, or renamed it into the folder "
            "(seen by inotify on a local folder or a share this box serves), is taken once "
            "unchanged this long after the close (at most `settle_seconds`). Writes by "
            "another machine to a mounted share raise no such event: those files wait "
            "`settle_seconds`."
        ),
    )
    poll_interval: float = Field(
        default=1.0, gt=0, description="Seconds between looks at the folder."
    )
    truncated_grace_seconds: float = Field(
        default=60.0,
        ge=0,
        description=(
            "A file that ends too early (a stalled copy looks the same) is refused only "
            "once unchanged this long."
        ),
    )
    manufacturer: str | None = Field(
        default=None,
        max_length=_LO,
        description="Camera manufacturer for photos whose EXIF has no Make.",
    )
    model: str | None = Field(
        default=None, max_length=_LO, description="Camera model for photos whose EXIF has no Model."
    )
    serial_number: str | None = Field(
        default=None,
        max_length=_LO,
        description="Camera serial number for photos whose EXIF has no BodySerialNumber.",
    )
    accept_tiff_png: bool = Field(
        default=True,
        description="Also take TIFF and PNG photos (stored losslessly as native pixels).",
    )
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        gt=0,
        le=MAX_NATIVE_PIXELS,
        description=(
            "TIFF and PNG photos (decoded whole) of more pixels than this are refused, "
            "judged from their header before decoding; JPEGs are not limited."
        ),
    )


def identity_for(exif: CameraExif, options: PhotoFolderOptions) -> DeviceIdentity:
    """The camera as EXIF names it, with the configured fallbacks for what it does not."""
    return DeviceIdentity(
        manufacturer=(exif.make or options.manufacturer or "").strip()[:_LO],
        model=(exif.model or options.model or "").strip()[:_LO],
        serial_number=(exif.body_serial_number or options.serial_number or "").strip()[:_LO],
        software_versions=(exif.software.strip()[:_LO],) if exif.software else (),
        device_class=DeviceClass.CAMERA,
    )


def offer_for(photo: Photo, max_pixels: int | None = None) -> CaptureOffer:
    """The capture offer of an examined photo (EXIF in ``extra``, time taken, the
    lesion its tag names: :mod:`.lesion_tag`); for a photo DermGate decodes, the
    device's ``max_pixels`` too (checked again at wrapping)."""
    exif = photo.exif
    fields = ExifFields(
        make=exif.make,
        model=exif.model,
        body_serial_number=exif.body_serial_number,
        software=exif.software,
        lens_make=exif.lens_make,
        lens_model=exif.lens_model,
        lens_serial_number=exif.lens_serial_number,
        lens_specification=exif.lens_specification,
        focal_length_mm=exif.focal_length_mm,
        focal_length_35mm=exif.focal_length_35mm,
        f_number=exif.f_number,
        exposure_time_s=exif.exposure_time_s,
        iso=exif.iso,
        exif_version=exif.exif_version,
        date_time_original=exif.date_time_original,
        offset_time_original=exif.offset_time_original,
        orientation=exif.orientation,
    )
    lesion = parse_lesion_tag(exif.lesion_tag)
    return CaptureOffer(
        device_capture_id=photo.capture_id,
        acquired_at=exif.taken_at(),
        length=photo.file.size,
        content_type=photo.content_type,
        anatomic_site=lesion.anatomic_site,
        laterality=Laterality(lesion.laterality) if lesion.laterality else None,
        lesion_id=lesion.lesion_id,
        extra=PhotoExtra(
            exif=fields,
            max_pixels=None if photo.content_type is ContentType.JPEG else max_pixels,
        ).to_extra(),
    )
