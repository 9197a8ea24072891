"""Wrapping checks a TIFF/PNG capture's declared size against ``max_pixels`` again.

A capture that reached the spool without its driver's check (another driver, a row
written by an older version) is quarantined with the reason before anything is
decoded; the device's own ``max_pixels`` travels in ``offer.extra``.
"""

from __future__ import annotations

from collections.abc import Callable
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
from gateway.dicom.photo import PhotoExtra, write_vl_photographic_native
from tests.support.images import png_bomb, small_png, tiff_bomb


def _job(source: Path, content_type: ContentType, max_pixels: int | None) -> WrapJob:
    extra = PhotoExtra(max_pixels=max_pixels).to_extra()
    return WrapJob(
        identity=DeviceIdentity(
            manufacturer="Acme",
            model="Cam",
            serial_number="1",
            software_versions=(),
            device_class=DeviceClass.CAMERA,
        ),
        offer=CaptureOffer(device_capture_id="c-1", content_type=content_type, extra=extra),
        uids=InstanceUIDs(study=new_uid(), series=new_uid(), sop_instance=new_uid()),
        source=source,
        gateway=GatewayIdentity(gateway_id="box-1", software_version="1"),
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("kind", "bomb"), [(ContentType.PNG, png_bomb), (ContentType.TIFF, tiff_bomb)]
)
def test_wrapping_checks_the_declared_size_before_decoding(
    tmp_path: Path, kind: ContentType, bomb: Callable[[int, int], bytes]
) -> None:
    source = tmp_path / "capture"
    source.write_bytes(bomb(7000, 7000))  # 49 megapixels: under the old 8192 x 8192 limit
    with pytest.raises(WrapError, match=r"7000 x 7000 pixels.*max_pixels \(40000000\)"):
        write_vl_photographic_native(_job(source, kind, None), tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


def test_wrapping_follows_the_devices_max_pixels(tmp_path: Path) -> None:
    source = tmp_path / "capture"
    source.write_bytes(small_png(200, 100))
    with pytest.raises(WrapError, match=r"max_pixels \(10000\)"):
        write_vl_photographic_native(_job(source, ContentType.PNG, 10_000), tmp_path / "x.dcm")
    written = write_vl_photographic_native(
        _job(source, ContentType.PNG, 20_000), tmp_path / "y.dcm"
    )
    assert written.transfer_syntax_uid == "1.2.840.10008.1.2.1"
