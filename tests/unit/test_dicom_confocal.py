"""Confocal Microscopy objects (…77.1.8 z-stacks, …77.1.9 tiled mosaics).

dciodvfy has **no** IOD checker for Confocal Microscopy (DESIGN §5: "Information
Object Not found"), so :func:`tests.support.confocal_iod.iod_errors` replaces it for
this IOD: it checks a written object against the PS3.3 tables, attribute by attribute
(where each row comes from is in that module). Pixel data is read back and compared
frame by frame with what the device sent.
"""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from PIL import Image

from gateway.core.capture import (
    CaptureOffer,
    DeviceIdentity,
    InstanceUIDs,
    Laterality,
    PatientContext,
)
from gateway.core.uids import new_uid, tracking_uid
from gateway.dicom.confocal import (
    CONFOCAL_IMAGE_SOP_CLASS,
    CONFOCAL_TILED_SOP_CLASS,
    MAX_PIXEL_BYTES,
    ConfocalStack,
    write_confocal,
)
from gateway.dicom.dermoscopy import build_dermoscopic_photography
from gateway.dicom.errors import WrapError
from gateway.dicom.jpeg import read_jpeg_info_from
from tests.support.confocal_iod import iod_errors
from tests.support.confocal_stacks import (
    EXPLICIT_LE,
    GATEWAY,
    frames_of,
    job_for,
    make_stack,
    written_frames,
)

# --- tests -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["z-stack", "mosaic"])
def test_stack_round_trips_and_conforms(tmp_path: Path, kind: str) -> None:
    bits = 8
    stack = make_stack(kind, bits=bits)
    frames = frames_of(stack)
    job = job_for(tmp_path, stack, frames)
    dest = tmp_path / "out.dcm"
    written = write_confocal(job, dest)

    ds = pydicom.dcmread(dest)
    expected_class = CONFOCAL_TILED_SOP_CLASS if kind == "mosaic" else CONFOCAL_IMAGE_SOP_CLASS
    assert written.sop_class_uid == expected_class == ds.SOPClassUID
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE == written.transfer_syntax_uid
    assert iod_errors(ds) == []
    assert ds.Modality == "CFM"
    assert ds.BitsAllocated == bits
    assert ds.BitsStored == bits
    assert ds.HighBit == bits - 1
    assert ds["PixelData"].VR == "OB"
    assert ds.ConfocalMode == "REFLECTANCE"
    assert ds.TissueLocation == "IN_VIVO"
    assert ds.OpticalPathSequence[0].IlluminationTypeCodeSequence[0].CodeValue == "111742"
    assert written_frames(ds) == frames, "frames read back equal what the device sent"
    if kind == "z-stack":
        depths = [
            item.ConfocalMicroscopyImageFrameTypeSequence[0].ImageAcquisitionDepth
            for item in ds.PerFrameFunctionalGroupsSequence
        ]
        assert depths == [d / 1000 for d in stack.depths_um]
        assert ds.DimensionOrganizationType == "3D"
        assert ds.DimensionIndexSequence[0].DimensionIndexPointer == 0x00209057
        timing = [item.FrameContentSequence[0] for item in ds.PerFrameFunctionalGroupsSequence]
        assert [t.FrameAcquisitionDuration for t in timing] == [111.0] * stack.frames
        assert timing[1].FrameAcquisitionDateTime.startswith("20261130101500.111")
        assert timing[1].FrameReferenceDateTime.startswith("20261130101500.1665")
    else:
        assert ds.DimensionOrganizationType == "TILED_FULL"
        assert ds.TotalPixelMatrixRows == stack.rows * 2
        assert "PerFrameFunctionalGroupsSequence" not in ds
        assert "DimensionIndexSequence" not in ds, "TILED_FULL: the tile order is the index"
        assert "PlanePositionSlideSequence" not in ds.SharedFunctionalGroupsSequence[0]
        # the mosaic's own coordinate system: pixel 1\\1 at 0/0, rows along +X
        origin = ds.TotalPixelMatrixOriginSequence[0]
        assert (origin.XOffsetInSlideCoordinateSystem, origin.YOffsetInSlideCoordinateSystem) == (
            0,
            0,
        )
        assert [float(v) for v in ds.ImageOrientationSlide] == [1, 0, 0, 0, 1, 0]
        assert ds.ImagedVolumeWidth == pytest.approx(stack.columns * 2 * 1.5 / 1000)


def test_16bit_stack_is_not_a_confocal_object(tmp_path: Path) -> None:
    """PS3.3 C.8.35.1 defers Bits Allocated/Stored/High Bit to C.8.12.1.1.2: 8/8/7.

    So the description alone is refused for these IODs, and ``write_confocal`` hands
    a 16-bit stack to Word Secondary Capture (tests/test_dicom_confocal_sc.py).
    """
    stack = make_stack(bits=16)
    with pytest.raises(WrapError, match=r"16 bits per pixel.*8-bit pixels only"):
        ConfocalStack.from_extra(stack.to_extra())
    job = job_for(tmp_path, stack, frames_of(stack))
    written = write_confocal(job, tmp_path / "out.dcm")
    assert written.sop_class_uid == "1.2.840.10008.5.1.4.1.1.7.3"


def test_frame_time_unknown_leaves_the_duration_out(tmp_path: Path) -> None:
    """Without the device's frame time no duration is invented (open point)."""
    stack = replace(make_stack(), frame_ms=None)
    assert ConfocalStack.from_extra(stack.to_extra()) == stack
    job = job_for(tmp_path, stack, frames_of(stack))
    write_confocal(job, tmp_path / "out.dcm")
    ds = pydicom.dcmread(tmp_path / "out.dcm")
    assert iod_errors(ds) == []
    for item in ds.PerFrameFunctionalGroupsSequence:
        content = item.FrameContentSequence[0]
        assert "FrameAcquisitionDuration" not in content
        assert content.FrameReferenceDateTime == content.FrameAcquisitionDateTime
    with pytest.raises(WrapError, match="frame time"):
        ConfocalStack.from_extra({**stack.to_extra(), "frame_ms": -1})


def test_fluorescence_mode_is_epifluorescence_illumination(tmp_path: Path) -> None:
    stack = replace(make_stack(), confocal_mode="FLUORESCENCE")
    job = job_for(tmp_path, stack, frames_of(stack))
    write_confocal(job, tmp_path / "out.dcm")
    ds = pydicom.dcmread(tmp_path / "out.dcm")
    assert iod_errors(ds) == []
    assert ds.ConfocalMode == "FLUORESCENCE"
    code = ds.OpticalPathSequence[0].IlluminationTypeCodeSequence[0]
    assert (code.CodeValue, code.CodeMeaning) == ("111743", "Epifluorescence illumination")


def test_checker_finds_what_is_missing(tmp_path: Path) -> None:
    """The checker is not a rubber stamp: removing required attributes is reported."""
    stack = make_stack()
    job = job_for(tmp_path, stack, frames_of(stack))
    dest = tmp_path / "out.dcm"
    write_confocal(job, dest)
    ds = pydicom.dcmread(dest)
    broken = pydicom.dcmread(dest)
    del broken.ConfocalMode
    del broken.FieldOfViewShape
    broken.Modality = "XC"
    del broken.SharedFunctionalGroupsSequence[0].FrameAnatomySequence
    broken.TrackingID = "lesion-1"
    broken.BitsAllocated = broken.BitsStored = 16
    broken.HighBit = 15
    broken.DimensionIndexSequence[0].DimensionIndexPointer = 0x0048021F
    broken.SharedFunctionalGroupsSequence[0].PlanePositionSlideSequence = [pydicom.Dataset()]
    del broken.PerFrameFunctionalGroupsSequence[1].FrameContentSequence[0].FrameReferenceDateTime
    errors = iod_errors(broken)
    assert any("ConfocalMode" in e for e in errors)
    assert any("FieldOfViewShape" in e for e in errors)
    assert any("Modality" in e for e in errors)
    assert any("FrameAnatomySequence" in e for e in errors)
    assert any("TrackingUID" in e for e in errors)
    assert any("BitsAllocated has [16]" in e for e in errors)
    assert any("HighBit has [15]" in e for e in errors)
    assert any("(0048,021F), present in no functional group" in e for e in errors)
    assert any("PlanePositionSlideSequence present, condition unmet" in e for e in errors)
    assert "frame 2: FrameReferenceDateTime (type 1C, ORIGINAL frame) missing" in errors
    assert iod_errors(ds) == []


def test_patient_lesion_and_site_are_carried(tmp_path: Path) -> None:
    stack = make_stack()
    patient = PatientContext(patient_name="Doe^Jane", patient_id="P123", sex="F")
    job = job_for(
        tmp_path,
        stack,
        frames_of(stack),
        patient=patient,
        lesion_id="L7",
        laterality=Laterality.LEFT,
        anatomic_site="182329002",  # CID 4029: Anterior triangle of neck
    )
    dest = tmp_path / "out.dcm"
    write_confocal(job, dest)
    ds = pydicom.dcmread(dest)
    assert iod_errors(ds) == []
    assert ds.PatientName == "Doe^Jane"
    assert ds.PatientID == "P123"
    assert ds.TrackingID == "L7"
    assert ds.TrackingUID == tracking_uid("", "P123", "L7")
    assert ds.ImageLaterality == "L"
    anatomy = ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0]
    assert anatomy.AnatomicRegionSequence[0].CodeValue == "182329002"
    assert ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0].FrameLaterality == "L"


@pytest.mark.parametrize("kind", ["z-stack", "mosaic"])
def test_laterality_only_when_known_and_skin_as_cid_4029_names_it(
    tmp_path: Path, kind: str
) -> None:
    stack = make_stack(kind)
    unknown = job_for(tmp_path, stack, frames_of(stack))
    write_confocal(unknown, tmp_path / "unknown.dcm")
    ds = pydicom.dcmread(tmp_path / "unknown.dcm")
    assert iod_errors(ds) == []
    assert "ImageLaterality" not in ds
    assert "Laterality" not in ds, "no Series Laterality beside Frame Laterality"
    anatomy = ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0]
    region = anatomy.AnatomicRegionSequence[0]
    assert (region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning) == (
        "39937001",
        "SCT",
        "Skin",
    )
    assert anatomy.FrameLaterality == "U", "type 1: the skin organ, unpaired"
    assert ds.AcquisitionContextSequence == []
    assert ds.PatientOrientation == ""

    known = job_for(tmp_path, stack, frames_of(stack), laterality=Laterality.RIGHT)
    write_confocal(known, tmp_path / "known.dcm")
    ds = pydicom.dcmread(tmp_path / "known.dcm")
    assert iod_errors(ds) == []
    assert ds.ImageLaterality == "R"
    assert "Laterality" not in ds
    assert ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0].FrameLaterality == "R"


def test_same_lesion_of_one_patient_has_one_tracking_uid_on_both_devices(
    tmp_path: Path,
) -> None:
    """The dermatoscope's and the confocal's image of lesion L7 of patient P123
    (issuer HOSP) carry the same Tracking UID; another patient's L7 does not."""
    stack = make_stack()
    patient = PatientContext(patient_id="P123", issuer_of_patient_id="HOSP")
    write_confocal(
        job_for(tmp_path, stack, frames_of(stack), patient=patient, lesion_id="L7"),
        tmp_path / "a.dcm",
    )
    confocal = pydicom.dcmread(tmp_path / "a.dcm")
    dermoscopy = build_dermoscopic_photography(
        identity=DeviceIdentity("Acme", "DS", "DS-1", ("1",)),
        offer=CaptureOffer(device_capture_id="d1", lesion_id="L7"),
        uids=InstanceUIDs(new_uid(), new_uid(), new_uid()),
        jpeg=read_jpeg_info_from(io.BytesIO(_jpeg())),
        gateway=GATEWAY,
        patient=patient,
        now=datetime.now(UTC),
    )
    assert confocal.TrackingUID == dermoscopy.TrackingUID
    other = replace(patient, patient_id="P124")
    write_confocal(
        job_for(tmp_path, stack, frames_of(stack), patient=other, lesion_id="L7"),
        tmp_path / "b.dcm",
    )
    assert pydicom.dcmread(tmp_path / "b.dcm").TrackingUID != confocal.TrackingUID


@pytest.mark.parametrize("kind", ["z-stack", "mosaic"])
def test_unknown_patient_gets_no_tracking_uid_but_keeps_the_label(
    tmp_path: Path, kind: str
) -> None:
    stack = make_stack(kind)
    write_confocal(job_for(tmp_path, stack, frames_of(stack), lesion_id="L7"), tmp_path / "a.dcm")
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    assert iod_errors(ds) == []
    assert "TrackingID" not in ds
    assert "TrackingUID" not in ds
    assert "L7" in ds.ImageComments


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.effect_noise((64, 48), 40).convert("RGB").save(out, "JPEG", subsampling=2)
    return out.getvalue()


def test_rewrap_gives_the_same_object(tmp_path: Path) -> None:
    stack = make_stack()
    job = job_for(tmp_path, stack, frames_of(stack))
    write_confocal(job, tmp_path / "a.dcm")
    write_confocal(job, tmp_path / "b.dcm")
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()


def test_thousands_of_frames_fit_in_the_offer(tmp_path: Path) -> None:
    stack = make_stack(frames=3000, size=8)
    assert ConfocalStack.from_extra(stack.to_extra()) == stack
    frames = frames_of(stack)
    job = job_for(tmp_path, stack, frames)
    dest = tmp_path / "out.dcm"
    write_confocal(job, dest)
    ds = pydicom.dcmread(dest)
    assert len(ds.PerFrameFunctionalGroupsSequence) == 3000
    assert written_frames(ds)[-1] == frames[-1]


def test_too_large_for_one_object_is_refused_with_a_reason() -> None:
    huge = replace(
        make_stack(frames=4200, size=1024),
        columns=1024,
        depths_um=tuple(float(i) for i in range(4200)),
    )
    assert huge.pixel_bytes > MAX_PIXEL_BYTES
    with pytest.raises(WrapError, match="more than one DICOM object can hold"):
        ConfocalStack.from_extra(huge.to_extra())


def test_wrong_size_and_bad_geometry_are_quarantined(tmp_path: Path) -> None:
    stack = make_stack()
    frames = frames_of(stack)
    job = job_for(tmp_path, stack, frames[:-1])
    with pytest.raises(WrapError, match="bytes of pixels"):
        write_confocal(job, tmp_path / "out.dcm")
    assert not (tmp_path / "out.dcm").exists()
    mosaic = make_stack("mosaic")
    # tiles in another order are placed one by one (TILED_SPARSE), not refused
    shuffled = replace(mosaic, tiles=tuple(reversed(mosaic.tiles)))
    assert not ConfocalStack.from_extra(shuffled.to_extra()).full_grid
    twice = replace(mosaic, tiles=((0, 0), (0, 1), (1, 0), (0, 1)))
    with pytest.raises(WrapError, match="two tiles at the same grid position"):
        ConfocalStack.from_extra(twice.to_extra())
    outside = replace(mosaic, tiles=((0, 0), (0, 1), (1, 0), (2, 0)))
    with pytest.raises(WrapError, match="a tile outside the 2x2 grid"):
        ConfocalStack.from_extra(outside.to_extra())
    with pytest.raises(WrapError, match="3 tile positions for 4 tiles"):
        ConfocalStack.from_extra(replace(mosaic, tiles=mosaic.tiles[:3]).to_extra())
    with pytest.raises(WrapError, match="incomplete or invalid"):
        ConfocalStack.from_extra({"kind": "z-stack"})
    with pytest.raises(WrapError, match="12 bits"):
        ConfocalStack.from_extra({**stack.to_extra(), "bits": 12})


def test_odd_sized_8bit_stack_is_padded(tmp_path: Path) -> None:
    stack = replace(make_stack(frames=1, size=3), columns=3, depths_um=(0.0,))
    frames = frames_of(stack)
    assert stack.pixel_bytes % 2 == 1
    job = job_for(tmp_path, stack, frames)
    write_confocal(job, tmp_path / "out.dcm")
    ds = pydicom.dcmread(tmp_path / "out.dcm")
    assert ds.PixelData[: stack.pixel_bytes] == frames[0]
    assert len(ds.PixelData) == stack.pixel_bytes + 1


def test_memory_stays_flat_while_writing(tmp_path: Path) -> None:
    """A 48 MB stack is written with a few MB of Python memory (1 MiB chunks)."""
    stack = make_stack(frames=48, size=1024, bits=8)
    stack = replace(stack, columns=1024)
    source_frames = [
        hashlib.sha256(bytes([i])).digest() * (stack.frame_bytes // 32) for i in range(48)
    ]
    job = job_for(tmp_path, stack, source_frames)
    del source_frames
    tracemalloc.start()
    try:
        write_confocal(job, tmp_path / "out.dcm")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes"


def test_field_of_view_in_whole_mm_only_when_that_is_true(tmp_path: Path) -> None:
    small = make_stack()  # 72 x 64 pixels of 0.5 um: 0.036 x 0.032 mm
    job = job_for(tmp_path, small, frames_of(small))
    write_confocal(job, tmp_path / "small.dcm")
    ds = pydicom.dcmread(tmp_path / "small.dcm")
    assert "FieldOfViewDimensions" in ds
    assert ds.FieldOfViewDimensions in (None, "", [])  # type 2: present, unknown
    wide = replace(make_stack("mosaic", size=1024, grid=2), pixel_spacing_um=2.0)
    job = job_for(tmp_path, wide, frames_of(wide))
    write_confocal(job, tmp_path / "wide.dcm")
    ds = pydicom.dcmread(tmp_path / "wide.dcm")
    assert list(ds.FieldOfViewDimensions) == [4, 4]  # 4.096 mm each way


def test_a_grid_whose_tile_positions_do_not_fit_dicom_is_refused() -> None:
    """Row / Column Position In Total Image Pixel Matrix are SL: at most 2**31 - 1."""
    mosaic = make_stack("mosaic", size=64)
    far = replace(mosaic, tile_rows=40_000_000, frames=2, tiles=((0, 0), (39_999_999, 1)))
    with pytest.raises(WrapError, match="a 40000000x2 tile grid"):
        ConfocalStack.from_extra(far.to_extra())
    near = replace(far, tile_rows=30_000_000, tiles=((0, 0), (29_999_999, 1)))
    assert not ConfocalStack.from_extra(near.to_extra()).full_grid
