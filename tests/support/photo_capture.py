"""The camera, scanner, EXIF fields and builder calls the VL Photographic tests share.

``wrap_jpeg`` wraps a JPEG as the photo folder and scanner export drivers offer it;
``native_job`` is the wrap job for a PNG or TIFF; ``pattern_image`` draws a test image.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pydicom
from PIL import Image
from pydicom.dataset import Dataset

from gateway.core.capture import (
    CaptureOffer,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
    PatientContext,
)
from gateway.core.uids import new_uid
from gateway.dicom.job import WrapJob
from gateway.dicom.jpeg import read_jpeg_info
from gateway.dicom.part10 import write_part10_encapsulated
from gateway.dicom.photo import (
    ExifFields,
    PhotoExtra,
    build_vl_photographic,
)

CET = timezone(timedelta(hours=1))


NOW = datetime(2026, 11, 30, 12, 0, tzinfo=CET)


GATEWAY = GatewayIdentity(gateway_id="gw-7", software_version="0.1.0", station_name="DERMGATE7")


CAMERA = DeviceIdentity(
    manufacturer="Canon",
    model="Canon EOS R6",
    serial_number="032021001234",
    software_versions=("Firmware Version 1.8.1",),
    device_class=DeviceClass.CAMERA,
)


SCANNER = DeviceIdentity(
    manufacturer="DermGate Reference Devices",
    model="TB-3D Body Scanner",
    serial_number="TB3D-0001",
    software_versions=("3.2.0",),
    device_class=DeviceClass.BODY_SCANNER,
)


EXIF = ExifFields(
    make="Canon",
    model="Canon EOS R6",
    body_serial_number="032021001234",
    software="Firmware Version 1.8.1",
    lens_make="Canon",
    lens_model="RF24-105mm F4 L IS USM",
    lens_serial_number="8712000123",
    lens_specification=(24.0, 105.0, 4.0, 4.0),
    focal_length_mm=50.0,
    focal_length_35mm=50,
    f_number=8.0,
    exposure_time_s=1 / 125,
    iso=400,
    exif_version="0232",
    date_time_original="2026:11:29 09:01:02",
    offset_time_original="+01:00",
)


def uids() -> InstanceUIDs:
    return InstanceUIDs(study=new_uid(), series=new_uid(), sop_instance=new_uid())


def photo_offer(**changes: object) -> CaptureOffer:
    values: dict[str, object] = {
        "device_capture_id": "sha256-abc",
        "acquired_at": datetime(2026, 11, 29, 9, 1, 2, tzinfo=CET),
        "content_type": ContentType.JPEG,
        "extra": PhotoExtra(exif=EXIF).to_extra(),
    }
    values.update(changes)
    return CaptureOffer(**values)  # type: ignore[arg-type]


def make_jpeg(path: Path, *, subsampling: int = 2, size: tuple[int, int] = (160, 120)) -> Path:
    Image.effect_noise(size, 60).convert("RGB").save(
        path, "JPEG", quality=90, subsampling=subsampling
    )
    return path


def wrap_jpeg(
    tmp_path: Path,
    *,
    identity: DeviceIdentity = CAMERA,
    offer: CaptureOffer | None = None,
    patient: PatientContext | None = None,
    ids: InstanceUIDs | None = None,
) -> tuple[Path, Path, Dataset]:
    source = make_jpeg(tmp_path / "photo.jpg")
    ds = build_vl_photographic(
        identity=identity,
        offer=offer or photo_offer(),
        uids=ids or uids(),
        jpeg=read_jpeg_info(source),
        gateway=GATEWAY,
        patient=patient,
        now=NOW,
    )
    dest = tmp_path / "photo.dcm"
    write_part10_encapsulated(ds, source, dest)
    return source, dest, pydicom.dcmread(dest)


def native_job(
    source: Path, content_type: ContentType, *, offer: CaptureOffer | None = None
) -> WrapJob:
    return WrapJob(
        identity=SCANNER,
        offer=offer or CaptureOffer(device_capture_id="tex-1", content_type=content_type),
        uids=uids(),
        source=source,
        gateway=GATEWAY,
        now=NOW,
    )


def pattern_image(mode: str, size: tuple[int, int] = (67, 45)) -> Image.Image:
    """A deterministic image with odd dimensions (odd pixel data length in L)."""
    rgb = Image.effect_noise(size, 80).convert("RGB")
    rgb.paste((255, 0, 0), (0, 0, 10, 10))
    return rgb.convert(mode)
