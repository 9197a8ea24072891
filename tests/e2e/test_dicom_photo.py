"""VL Photographic objects (camera JPEGs, scanner textures, native PNG and TIFF images)
checked with the pinned dciodvfy. The builder's own rules are in
``tests/unit/test_dicom_photo.py``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import generate_fragments

from gateway.core.capture import (
    CaptureOffer,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    Laterality,
    PatientContext,
)
from gateway.dicom.photo import (
    ExifFields,
    PhotoExtra,
    write_vl_photographic_native,
)
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.equipment import dermgate_item
from tests.support.photo_capture import (
    CET,
    EXIF,
    GATEWAY,
    NOW,
    SCANNER,
    native_job,
    pattern_image,
    photo_offer,
    uids,
    wrap_jpeg,
)

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"


JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


EXPLICIT_LE = "1.2.840.10008.1.2.1"


PATIENT = PatientContext(
    patient_name="Testperson^Anna",
    patient_id="MRN-0042",
    issuer_of_patient_id="CLINIC",
    birth_date="19800101",
    sex="F",
    accession_number="ACC-9",
)


def no_errors(path: Path) -> None:
    errors = dciodvfy_errors(path)
    assert errors == [], "dciodvfy reported errors:\n" + "\n".join(errors)


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
    assert ds.SoftwareVersions == "1/2"
    # The lens attributes are UT, a single value whatever it holds: kept as EXIF says.
    assert (ds.LensMake, ds.LensModel) == ("Lens\\Co", "RF\\24")


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
    assert "SoftwareVersions" not in ds
    dermgate_item(ds, GATEWAY, NOW)
    # No acquisition time known: study and content dates are the wrap time.
    assert (ds.StudyDate, ds.ContentDate) == ("20261130", "20261130")


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


def test_sideways_photo_says_how_to_turn_it_upright(tmp_path: Path) -> None:
    extra = PhotoExtra(exif=EXIF.model_copy(update={"orientation": 6})).to_extra()
    _, dest, ds = wrap_jpeg(tmp_path, offer=photo_offer(extra=extra))
    no_errors(dest)
    assert ds.ImageComments == "Camera orientation: rotate 90 degrees clockwise to display upright"
    _, _, upright = wrap_jpeg(tmp_path)
    assert "ImageComments" not in upright


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "1"])
def test_native_image_is_valid_and_lossless(tmp_path: Path, fmt: str, mode: str) -> None:
    image = pattern_image(mode)
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
    pattern_image("RGB").save(source)
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
