"""A TIFF whose second directory is damaged is a wrap error with a reason, not a crash.

A scanner export carrying such a texture, through ``dermgate run``, is in
``tests/e2e/test_damaged_tiff.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.core.capture import (
    CaptureOffer,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
)
from gateway.core.uids import new_uid
from gateway.dicom.errors import WrapError
from gateway.dicom.job import WrapJob
from gateway.dicom.photo import check_native_image, write_vl_photographic_native
from tests.support.images import tiff_with_a_damaged_second_directory


def test_damaged_second_directory_is_a_wrap_error(tmp_path: Path) -> None:
    source = tmp_path / "texture.tif"
    source.write_bytes(tiff_with_a_damaged_second_directory())
    with pytest.raises(WrapError, match="not a readable TIFF image"):
        check_native_image(source, ContentType.TIFF)
    job = WrapJob(
        identity=DeviceIdentity("Acme", "Scan3D", "S-1", ("1",), DeviceClass.BODY_SCANNER),
        offer=CaptureOffer(device_capture_id="tex-1", content_type=ContentType.TIFF),
        uids=InstanceUIDs(new_uid(), new_uid(), new_uid()),
        source=source,
        gateway=GatewayIdentity("gw-1", "0.1"),
        now=datetime(2026, 11, 30, 12, tzinfo=UTC),
    )
    with pytest.raises(WrapError, match="not a readable TIFF image"):
        write_vl_photographic_native(job, tmp_path / "out.dcm")
    assert not (tmp_path / "out.dcm").exists()
