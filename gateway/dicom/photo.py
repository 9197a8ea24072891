"""VL Photographic Image Storage (PS3.3 A.32.4): clinical photos and 3D textures.

(Stub: filled in by the photo-folder work.)
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydicom.dataset import Dataset

from gateway.capture import (
    CaptureOffer,
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
    PatientContext,
)
from gateway.dicom.errors import WrapError
from gateway.dicom.job import WrapJob, WrittenObject
from gateway.dicom.jpeg import JpegInfo


def build_vl_photographic(
    *,
    identity: DeviceIdentity,
    offer: CaptureOffer,
    uids: InstanceUIDs,
    jpeg: JpegInfo,
    gateway: GatewayIdentity,
    patient: PatientContext | None,
    now: datetime,
) -> Dataset:
    """The VL Photographic dataset of one JPEG, without Pixel Data."""
    raise WrapError("VL Photographic is not supported yet")


def write_vl_photographic_native(job: WrapJob, dest: Path) -> WrittenObject:
    """A TIFF or PNG image, losslessly transcoded to native pixels."""
    raise WrapError("VL Photographic from TIFF/PNG is not supported yet")
