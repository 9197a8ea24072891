"""Derived objects for ``fallback = "compatible"``: same pixels, a new class, a UID
derived from the original's, and a Source Image Sequence back to it; valid for
dciodvfy."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate

from gateway.core.capture import Laterality
from gateway.core.uids import new_uid
from gateway.dicom.compatible import (
    DeriveError,
    compatible_class,
    derive_compatible,
    derived_instance_uid,
)
from gateway.dicom.confocal import write_confocal
from gateway.dicom.sop_classes import NO_SUBSTITUTE
from gateway.dicom.writers import write_capture
from gateway.forward.contexts import STORAGE_CONTEXTS, storage_contexts
from tests.support import dermoscopy_capture as derm
from tests.support.capture_contexts import CONTEXT, base_job, with_context
from tests.support.confocal_stacks import frames_of, job_for, make_stack
from tests.support.dciodvfy import dciodvfy_errors

DERMOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.7"
VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
CONFOCAL = "1.2.840.10008.5.1.4.1.1.77.1.8"
CONFOCAL_TILED = "1.2.840.10008.5.1.4.1.1.77.1.9"
BYTE_SC = "1.2.840.10008.5.1.4.1.1.7.2"
STL = "1.2.840.10008.5.1.4.1.1.104.3"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
_UID = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))+$")


def test_the_derived_uid_is_deterministic_valid_and_per_class() -> None:
    original = new_uid()
    first = derived_instance_uid(original, VL_PHOTO)
    assert first == derived_instance_uid(original, VL_PHOTO), "every retry sends the same one"
    assert first != derived_instance_uid(original, BYTE_SC), "another class, another UID"
    assert first != derived_instance_uid(new_uid(), VL_PHOTO), "another original, another UID"
    assert first != original
    for uid in (first, derived_instance_uid("1.2.3", BYTE_SC)):
        assert uid.startswith("2.25.")
        assert len(uid) <= 64
        assert _UID.match(uid), uid


def test_compatible_classes_and_the_contexts_a_compatible_destination_proposes() -> None:
    assert compatible_class(DERMOSCOPIC) == VL_PHOTO
    assert compatible_class(CONFOCAL) == BYTE_SC
    assert compatible_class(CONFOCAL_TILED) == BYTE_SC
    assert compatible_class(STL) is None
    assert STL in NO_SUBSTITUTE
    assert STORAGE_CONTEXTS[BYTE_SC] == (EXPLICIT_LE,)
    batch = [(CONFOCAL, EXPLICIT_LE), (STL, EXPLICIT_LE)]
    assert storage_contexts(batch) == sorted(batch)
    assert storage_contexts(batch, compatible=True) == sorted([*batch, (BYTE_SC, EXPLICIT_LE)])


def test_dermoscopic_becomes_vl_photographic_with_the_same_jpeg(tmp_path: Path) -> None:
    original, source = derm.wrap(tmp_path, derm.make_jpeg(tmp_path / "skin.jpg"))
    dest = tmp_path / "derived.dcm"
    made = derive_compatible(original, dest, "9.9.9")

    ds = pydicom.dcmread(dest)
    assert made.sop_class_uid == VL_PHOTO == ds.SOPClassUID
    assert made.sop_instance_uid == ds.SOPInstanceUID
    assert ds.SOPInstanceUID == derived_instance_uid(source.SOPInstanceUID, VL_PHOTO)
    assert ds.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
    assert derm.single_fragment(ds) == derm.single_fragment(source), "JPEG never re-encoded"
    assert ds.Modality == "XC"
    assert ds.ImageType[0] == "DERIVED"
    (item,) = ds.SourceImageSequence
    assert item.ReferencedSOPClassUID == DERMOSCOPIC
    assert item.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert item.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    assert "Dermoscopic Photography" in ds.DerivationDescription
    # What VL Photographic carries is kept: study, patient, site, laterality, device.
    for keyword in (
        "StudyInstanceUID",
        "PatientID",
        "AnatomicRegionSequence",
        "ImageLaterality",
        "Manufacturer",
        "DeviceSerialNumber",
        "AcquisitionDateTime",
        "LossyImageCompression",
    ):
        assert ds[keyword].value == source[keyword].value, keyword
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID, "a series holds one modality"
    for dropped in ("ContactMethod", "LightSourcePolarization", "FrameOfReferenceUID"):
        assert dropped not in ds
    assert [i.ContributionDescription for i in ds.ContributingEquipmentSequence][-1].startswith(
        "Made this VL Photographic Image Storage object"
    )
    assert dciodvfy_errors(dest) == []

    again = tmp_path / "again.dcm"
    derive_compatible(original, again, "9.9.9")
    assert again.read_bytes() == dest.read_bytes(), "a re-derivation gives the same object"


@pytest.mark.parametrize("kind", ["z-stack", "mosaic"])
def test_confocal_becomes_byte_secondary_capture_with_the_same_frames(
    tmp_path: Path, kind: str
) -> None:
    stack = make_stack(kind)
    frames = frames_of(stack)
    job = job_for(tmp_path, stack, frames, anatomic_site="79951008", laterality=Laterality.LEFT)
    original = tmp_path / "confocal.dcm"
    write_confocal(job, original)
    dest = tmp_path / "sc.dcm"
    made = derive_compatible(original, dest, "9.9.9")

    ds = pydicom.dcmread(dest)
    source = pydicom.dcmread(original, stop_before_pixels=True)
    assert made.sop_class_uid == BYTE_SC == ds.SOPClassUID
    assert ds.PixelData == b"".join(frames), "the same frames, in order"
    assert int(ds.NumberOfFrames) == stack.frames
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert ds.SourceImageSequence[0].ReferencedSOPClassUID == source.SOPClassUID
    assert ds.ImageLaterality == "L"
    assert ds.AnatomicRegionSequence[0].CodeValue == "79951008"
    if kind == "z-stack":
        assert [float(v) for v in ds.SliceLocationVector] == [d / 1000 for d in stack.depths_um]
    else:
        assert list(ds.FrameLabelVector) == ["r1c1", "r1c2", "r2c1", "r2c2"]
    assert "PerFrameFunctionalGroupsSequence" not in ds
    assert dciodvfy_errors(dest) == []


def test_an_object_without_a_substitute_is_not_derived(tmp_path: Path) -> None:
    original, _ = derm.wrap(tmp_path, derm.make_jpeg(tmp_path / "skin.jpg"))
    ds = pydicom.dcmread(original)
    ds.SOPClassUID = STL
    ds.save_as(tmp_path / "stl.dcm")
    with pytest.raises(DeriveError, match="no lossless substitute"):
        derive_compatible(tmp_path / "stl.dcm", tmp_path / "never.dcm", "9.9.9")
    assert not (tmp_path / "never.dcm").exists()


def test_a_jpeg_in_several_fragments_is_refused_plainly(tmp_path: Path) -> None:
    """Only a single-fragment JPEG (what DermGate writes) is carried."""
    original, source = derm.wrap(tmp_path, derm.make_jpeg(tmp_path / "skin.jpg"))
    fragment = derm.single_fragment(source)
    half = len(fragment) // 2 & ~1
    ds = pydicom.dcmread(original)
    ds.PixelData = encapsulate([fragment[:half], fragment[half:]], has_bot=False)
    ds.save_as(tmp_path / "two.dcm")
    with pytest.raises(DeriveError, match="fragments"):
        derive_compatible(tmp_path / "two.dcm", tmp_path / "never.dcm", "9.9.9")


@pytest.mark.parametrize("kind", ["dermoscopy", "z-stack", "mosaic"])
def test_a_worklist_context_survives_the_derivation(tmp_path: Path, kind: str) -> None:
    """Patient, order and request attributes a session wrote stay; dciodvfy is happy."""
    job = with_context(base_job(kind, tmp_path), CONTEXT)
    original = tmp_path / "original.dcm"
    write_capture(job, original)
    dest = tmp_path / "derived.dcm"
    derive_compatible(original, dest, "9.9.9")
    ds = pydicom.dcmread(dest, stop_before_pixels=True)
    source = pydicom.dcmread(original, stop_before_pixels=True)
    for keyword in ("PatientID", "IssuerOfPatientID", "AccessionNumber", "StudyInstanceUID"):
        assert ds[keyword].value == source[keyword].value, keyword
    assert "RequestAttributesSequence" in ds
    assert "TrackingUID" not in ds, "no place for it in the derived IOD"
    assert dciodvfy_errors(dest) == []


def test_a_large_stack_is_derived_with_flat_memory(tmp_path: Path) -> None:
    """The frames are copied in chunks, never held whole (a real stack can be 1 GB)."""
    stack = make_stack("z-stack", frames=128, size=512)  # 128 x 512 x 520 bytes: 34 MB
    job = job_for(tmp_path, stack, frames_of(stack))
    original = tmp_path / "big.dcm"
    write_confocal(job, original)
    tracemalloc.start()
    try:
        derive_compatible(original, tmp_path / "big-sc.dcm", "9.9.9")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stack.pixel_bytes > 30_000_000
    assert peak < 8_000_000, f"peak {peak} bytes while copying {stack.pixel_bytes}"
    assert (tmp_path / "big-sc.dcm").stat().st_size > stack.pixel_bytes
