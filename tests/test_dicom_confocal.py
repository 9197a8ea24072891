"""Confocal Microscopy objects (…77.1.8 z-stacks, …77.1.9 tiled mosaics).

dciodvfy has **no** IOD checker for Confocal Microscopy (DESIGN §5: "Information
Object Not found"), so this module replaces dciodvfy for this IOD: :func:`iod_errors`
checks a written object against the PS3.3 tables, attribute by attribute with their
types: type 1 present and non-empty, type 2 present (may be empty), 1C/2C by their
conditions (absent when the condition is unmet, unless the table says "may be
present otherwise"). Functional group macros are checked where PS3.3 puts them.
Pixel data is read back and compared frame by frame with what the device sent.

Where each table row comes from (see gateway/dicom/confocal.py for the full list):
Table A.90.1.3-1 (modules, NEMA sect_A.90 2024d), Table C.8.35.1-1 (first rows,
sect_C.8.35 2025b) with C.8.12.1.1.2 (8-bit only, as dicom3tools 20260927 encodes
it), Table C.8.35.3-1 (whole, sect_C.8.35.3 2024c), Table A.90.2.5-1 (whole,
sect_a.90.2.5 2023e), C.8.12.14 (tile organisation) and the Multi-frame Dimension
rules as dicom3tools encodes them. Rows marked "open" could not be read in the
standard: they check what we chose, not what PS3.3 demands.
"""

from __future__ import annotations

import hashlib
import io
import random
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from gateway.core.capture import (
    CaptureOffer,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    GatewayIdentity,
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
from gateway.dicom.job import WrapJob
from gateway.dicom.jpeg import read_jpeg_info_from
from gateway.dicom.modules import dermatology_site

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IDENTITY = DeviceIdentity(
    manufacturer="DermGate Reference Devices",
    model="RCM-1 Confocal",
    serial_number="RCM1-0042",
    software_versions=("3.1.0",),
    device_class=DeviceClass.CONFOCAL_MICROSCOPE,
)
GATEWAY = GatewayIdentity(gateway_id="test-box-01", software_version="0.1.0")


# --- PS3.3 tables ------------------------------------------------------------------

Condition = Callable[[Dataset], bool]


def _always(_ds: Dataset) -> bool:
    return True


@dataclass(frozen=True)
class Attr:
    """One row of a module table: keyword, type, and for 1C/2C when it is required."""

    keyword: str
    type: str
    required_if: Condition = _always
    values: tuple[str, ...] = ()
    #: "May be present otherwise" in the table's condition.
    otherwise_allowed: bool = False


def _tiled(ds: Dataset) -> bool:
    return ds.get("DimensionOrganizationType") == "TILED_FULL"


def _never(_ds: Dataset) -> bool:
    return False


def _frame_laterality(ds: Dataset) -> bool:
    """Is Frame Laterality present (shared or in every frame)?"""
    groups = [
        *(ds.get("SharedFunctionalGroupsSequence") or []),
        *(ds.get("PerFrameFunctionalGroupsSequence") or []),
    ]
    return any(
        "FrameLaterality" in anatomy
        for group in groups
        for anatomy in group.get("FrameAnatomySequence") or []
    )


MODULES: dict[str, list[Attr]] = {
    # C.7.1.1 Patient (M)
    "Patient": [
        Attr("PatientName", "2"),
        Attr("PatientID", "2"),
        Attr("PatientBirthDate", "2"),
        Attr("PatientSex", "2"),
    ],
    # C.7.2.1 General Study (M)
    "General Study": [
        Attr("StudyInstanceUID", "1"),
        Attr("StudyDate", "2"),
        Attr("StudyTime", "2"),
        Attr("ReferringPhysicianName", "2"),
        Attr("StudyID", "2"),
        Attr("AccessionNumber", "2"),
    ],
    # C.7.3.1 General Series (M); Modality from CID 29/33: CFM
    "General Series": [
        Attr("Modality", "1", values=("CFM",)),
        Attr("SeriesInstanceUID", "1"),
        Attr("SeriesNumber", "2"),
        # C.7.3.1: required if the body part is paired and neither Image nor Frame
        # Laterality is present; not allowed otherwise
        Attr(
            "Laterality",
            "2C",
            lambda ds: "ImageLaterality" not in ds and not _frame_laterality(ds),
        ),
    ],
    # C.7.4.1 Frame of Reference (M)
    "Frame of Reference": [
        Attr("FrameOfReferenceUID", "1"),
        Attr("PositionReferenceIndicator", "2"),
    ],
    # C.7.5.1 General Equipment (M), C.7.5.2 Enhanced General Equipment (M)
    "General Equipment": [Attr("Manufacturer", "2")],
    "Enhanced General Equipment": [
        Attr("Manufacturer", "1"),
        Attr("ManufacturerModelName", "1"),
        Attr("DeviceSerialNumber", "1"),
        Attr("SoftwareVersions", "1"),
    ],
    # C.7.6.1 General Image (M). Patient Orientation 2C: required unless the image
    # needs Image Orientation (Patient) or (Slide); an in-vivo confocal image has
    # neither, so it is present, empty when no orientation is known.
    "General Image": [Attr("InstanceNumber", "2"), Attr("PatientOrientation", "2C")],
    # C.7.6.14 Acquisition Context (M)
    "Acquisition Context": [Attr("AcquisitionContextSequence", "2")],
    # C.7.6.3 Image Pixel (M); Pixel Data is checked by the round trip
    "Image Pixel": [
        Attr("SamplesPerPixel", "1", values=("1",)),
        Attr("PhotometricInterpretation", "1", values=("MONOCHROME2",)),
        Attr("Rows", "1"),
        Attr("Columns", "1"),
        Attr("BitsAllocated", "1"),
        Attr("BitsStored", "1"),
        Attr("HighBit", "1"),
        Attr("PixelRepresentation", "1", values=("0",)),
        Attr("PlanarConfiguration", "1C", lambda ds: int(ds.get("SamplesPerPixel", 1)) > 1),
    ],
    # C.7.6.16 Multi-frame Functional Groups (M)
    "Multi-frame Functional Groups": [
        Attr("SharedFunctionalGroupsSequence", "2"),
        Attr("PerFrameFunctionalGroupsSequence", "1C", lambda ds: not _tiled(ds)),
        Attr("InstanceNumber", "1"),
        Attr("ContentDate", "1"),
        Attr("ContentTime", "1"),
        Attr("NumberOfFrames", "1"),
    ],
    # C.7.6.17 Multi-frame Dimension (M); Dimension Index Sequence is not required
    # for TILED_FULL (dciodvfy 20260927 does not ask for it in a TILED_FULL image)
    "Multi-frame Dimension": [
        Attr("DimensionOrganizationSequence", "1"),
        Attr("DimensionIndexSequence", "1C", lambda ds: not _tiled(ds), otherwise_allowed=True),
        Attr("DimensionOrganizationType", "1C", _tiled, otherwise_allowed=True),
    ],
    # C.8.12.5 Optical Path (M)
    "Optical Path": [
        Attr("OpticalPathSequence", "1"),
        Attr("NumberOfOpticalPaths", "1C", _tiled, otherwise_allowed=True),
    ],
    # C.8.35.1 Confocal Microscopy Image (M), Table C.8.35.1-1. Bits Allocated, Bits
    # Stored and High Bit are specialised by C.8.12.1.1.2 (VL Image): 8, 8 and 7.
    "Confocal Microscopy Image": [
        Attr("ImageType", "1"),
        Attr("PhotometricInterpretation", "1", values=("MONOCHROME2",)),
        Attr("BitsAllocated", "1", values=("8",)),
        Attr("BitsStored", "1", values=("8",)),
        Attr("HighBit", "1", values=("7",)),
        Attr("PixelRepresentation", "1"),
        Attr("SamplesPerPixel", "1"),
        # open: rows not readable; A.90 names "reflectance or fluorescence mode" and
        # "in-vivo or ex-vivo"; types and code strings are our choice
        Attr("ConfocalMode", "1", values=("REFLECTANCE", "FLUORESCENCE")),
        Attr("TissueLocation", "1", values=("IN_VIVO", "EX_VIVO")),
    ],
    # C.8.35.3 Cutaneous Confocal Microscopy Image Acquisition Parameters
    "Cutaneous Confocal Microscopy Image Acquisition Parameters": [
        Attr("OpticalMagnificationFactor", "2"),
        Attr("ImageAcquisitionDepth", "2"),
        Attr("FieldOfViewShape", "2", values=("RECTANGLE",)),
        Attr("FieldOfViewDimensions", "2"),
        Attr("TrackingID", "1C", lambda ds: "TrackingUID" in ds),
        Attr("TrackingUID", "1C", lambda ds: "TrackingID" in ds),
    ],
    # C.12.1 SOP Common (M)
    "SOP Common": [
        Attr("SOPClassUID", "1"),
        Attr("SOPInstanceUID", "1"),
        Attr("SpecificCharacterSet", "1C"),
    ],
}

TILED_MODULES: dict[str, list[Attr]] = {
    # Tile organisation of a TILED_FULL pyramid level, rows as in C.8.12.14 (the
    # Confocal Tiled Pyramidal Image Module C.8.35.2 itself is open). Total Pixel
    # Matrix Origin Sequence and Image Orientation (Slide) are slide coordinates,
    # which an in-vivo mosaic has not: left out (open).
    "Tiled Pyramidal": [
        Attr("TotalPixelMatrixRows", "1"),
        Attr("TotalPixelMatrixColumns", "1"),
        Attr("TotalPixelMatrixFocalPlanes", "1C", _tiled, otherwise_allowed=True),
    ],
}

ITEM_ATTRS: dict[str, list[Attr]] = {
    "OpticalPathSequence": [
        Attr("OpticalPathIdentifier", "1"),
        Attr("IlluminationTypeCodeSequence", "1"),
        Attr(
            "IlluminationWaveLength", "1C", lambda item: "IlluminationColorCodeSequence" not in item
        ),
    ],
    "DimensionIndexSequence": [Attr("DimensionIndexPointer", "1")],
    "DimensionOrganizationSequence": [Attr("DimensionOrganizationUID", "1")],
    # Functional group macros
    "PixelMeasuresSequence": [Attr("PixelSpacing", "1C")],
    "FrameAnatomySequence": [
        Attr("AnatomicRegionSequence", "1"),
        Attr("FrameLaterality", "1", values=("R", "L", "U", "B")),
    ],
    # C.8.35.4.1: Frame Type; Image Acquisition Depth per frame is our choice (open)
    "ConfocalMicroscopyImageFrameTypeSequence": [Attr("FrameType", "1")],
    "OpticalPathIdentificationSequence": [Attr("OpticalPathIdentifier", "1")],
    "FrameContentSequence": [Attr("DimensionIndexValues", "1C")],
    "AnatomicRegionSequence": [
        Attr("CodeValue", "1"),
        Attr("CodingSchemeDesignator", "1"),
        Attr("CodeMeaning", "1"),
    ],
    "IlluminationTypeCodeSequence": [
        Attr("CodeValue", "1"),
        Attr("CodingSchemeDesignator", "1"),
        Attr("CodeMeaning", "1"),
    ],
}


@dataclass(frozen=True)
class Macro:
    """One row of a functional group macro table: when required, where it may be."""

    keyword: str
    required_if: Condition
    place: str  # "shared", "per-frame" or "any"
    #: "may be present otherwise" (C rows without it must be absent otherwise)
    otherwise_allowed: bool = True


def _derived(ds: Dataset) -> bool:
    return str(ds.ImageType[0]) == "DERIVED"


# Table A.90.2.5-1 (tiled; read whole). The z-stack IOD's table (A.90.1.x) is open:
# the same rows are applied to both.
MACROS: list[Macro] = [
    Macro("PixelMeasuresSequence", _always, "shared"),
    Macro("DerivationImageSequence", _derived, "any", otherwise_allowed=False),
    Macro("OpticalPathIdentificationSequence", lambda ds: not _tiled(ds), "any"),
    Macro("FrameContentSequence", _never, "per-frame"),
    # required if the Frame of Reference is the slide's: never for in-vivo skin
    Macro("PlanePositionSlideSequence", _never, "any", otherwise_allowed=False),
    Macro("ConfocalMicroscopyImageFrameTypeSequence", _always, "any"),
    Macro("FrameAnatomySequence", _always, "any"),
]


def _check_attrs(where: str, ds: Dataset, attrs: list[Attr], errors: list[str]) -> None:
    for attr in attrs:
        present = attr.keyword in ds
        value = ds.get(attr.keyword) if present else None
        empty = value is None or value == "" or (hasattr(value, "__len__") and len(value) == 0)
        required = attr.type in ("1", "2") or attr.required_if(ds)
        if attr.type in ("1", "1C") and required and (not present or empty):
            errors.append(f"{where}: {attr.keyword} (type {attr.type}) missing or empty")
        elif attr.type in ("2", "2C") and required and not present:
            errors.append(f"{where}: {attr.keyword} (type {attr.type}) missing")
        elif attr.type in ("1C", "2C") and not required and present and not attr.otherwise_allowed:
            errors.append(f"{where}: {attr.keyword} (type {attr.type}) present, condition unmet")
        if attr.values and present and not empty:
            values = (
                list(value) if isinstance(value, list | pydicom.multival.MultiValue) else [value]
            )
            bad = [v for v in values if str(v) not in attr.values]
            if bad:
                errors.append(f"{where}: {attr.keyword} has {bad}, allowed {attr.values}")


def _check_items(where: str, ds: Dataset, errors: list[str]) -> None:
    for keyword, attrs in ITEM_ATTRS.items():
        if keyword in ds:
            for n, item in enumerate(ds[keyword].value):
                _check_attrs(f"{where}{keyword}[{n}]", item, attrs, errors)
                _check_items(f"{where}{keyword}[{n}].", item, errors)


def iod_errors(ds: Dataset) -> list[str]:
    """Every deviation of ``ds`` from the Confocal Microscopy IOD tables (empty: conformant)."""
    errors: list[str] = []
    tiled = ds.SOPClassUID == CONFOCAL_TILED_SOP_CLASS
    modules = dict(MODULES)
    if tiled:
        modules.update(TILED_MODULES)
    for module, attrs in modules.items():
        _check_attrs(module, ds, attrs, errors)
    _check_items("", ds, errors)
    if len(ds.ImageType) != 4 or ds.ImageType[0] not in ("ORIGINAL", "DERIVED"):
        errors.append(f"Image Type {list(ds.ImageType)} is not ORIGINAL|DERIVED\\PRIMARY\\…")
    shared = (
        ds.SharedFunctionalGroupsSequence[0]
        if ds.get("SharedFunctionalGroupsSequence")
        else Dataset()
    )
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    if per_frame and len(per_frame) != int(ds.NumberOfFrames):
        errors.append(f"{len(per_frame)} per-frame items for {ds.NumberOfFrames} frames")
    for row in MACROS:
        macro = row.keyword
        in_shared = macro in shared
        in_all_frames = bool(per_frame) and all(macro in item for item in per_frame)
        in_some_frame = any(macro in item for item in per_frame)
        required = row.required_if(ds)
        present = in_shared or in_some_frame
        if row.place == "shared" and (present or required) and (not in_shared or in_some_frame):
            errors.append(f"{macro} must be a shared functional group")
        if row.place == "per-frame" and in_shared:
            errors.append(f"{macro} must not be a shared functional group")
        if required and not (in_shared or in_all_frames):
            errors.append(f"functional group {macro} (mandatory here) missing")
        if not required and not row.otherwise_allowed and (in_shared or in_some_frame):
            errors.append(f"functional group {macro} present, condition unmet")
        if in_shared and in_some_frame:
            errors.append(f"{macro} both shared and per-frame")
    for n, item in enumerate(per_frame):
        _check_items(f"frame {n + 1}: ", item, errors)
    _check_items("shared: ", shared, errors)
    errors.extend(_dimension_errors(ds, shared, per_frame))
    errors.extend(_timing_errors(shared, per_frame))
    for where, item in [
        ("shared", shared),
        *((f"frame {n + 1}", i) for n, i in enumerate(per_frame)),
    ]:
        for frame_type in item.get("ConfocalMicroscopyImageFrameTypeSequence") or []:
            if "FrameType" in frame_type and list(frame_type.FrameType) != list(ds.ImageType):
                errors.append(f"{where}: Frame Type {list(frame_type.FrameType)} is not Image Type")
    if "ImageLaterality" not in ds and "Laterality" not in ds and not _frame_laterality(ds):
        errors.append("neither Image, Frame nor Series Laterality")
    for group in [shared, *per_frame]:
        for anatomy in group.get("FrameAnatomySequence") or []:
            for region in anatomy.get("AnatomicRegionSequence") or []:
                site = dermatology_site(str(region.get("CodeValue", "")))
                if site is not None and region.get("CodeMeaning") != site.meaning:
                    errors.append(
                        f"Frame Anatomy code meaning {region.get('CodeMeaning')!r} is not "
                        f"CID 4029's {site.meaning!r}"
                    )
    return sorted(set(errors))


def _timing_errors(shared: Dataset, per_frame: list[Dataset]) -> list[str]:
    """C.7.6.16.2.2: an ORIGINAL frame's Frame Content carries its timing (1C)."""
    errors: list[str] = []
    for n, item in enumerate(per_frame):
        holder = item if "ConfocalMicroscopyImageFrameTypeSequence" in item else shared
        types = holder.get("ConfocalMicroscopyImageFrameTypeSequence") or [Dataset()]
        original = str((types[0].get("FrameType") or [""])[0]) == "ORIGINAL"
        for content in item.get("FrameContentSequence") or []:
            for keyword in ("FrameAcquisitionDateTime", "FrameReferenceDateTime"):
                if original and not content.get(keyword):
                    errors.append(f"frame {n + 1}: {keyword} (type 1C, ORIGINAL frame) missing")
            # Frame Acquisition Duration: also 1C, but only written when the device
            # reports its frame time (open point, see confocal.py); checked by tests.
    return errors


def _dimension_errors(ds: Dataset, shared: Dataset, per_frame: list[Dataset]) -> list[str]:
    """Each Dimension Index Pointer names an attribute its functional group holds."""
    errors: list[str] = []
    for n, index in enumerate(ds.get("DimensionIndexSequence") or []):
        pointer = int(index.DimensionIndexPointer)
        group = int(index.get("FunctionalGroupPointer") or 0)
        items = [shared, *per_frame] if group else [ds]
        found = False
        for item in items:
            holders = [item] if not group else list(item[group].value if group in item else [])
            found = found or any(pointer in holder for holder in holders)
        if not found:
            errors.append(
                f"Dimension Index {n + 1} points at ({pointer >> 16:04X},{pointer & 0xFFFF:04X}),"
                " present in no functional group"
            )
    return errors


# --- helpers -----------------------------------------------------------------------


def make_stack(
    kind: str = "z-stack", *, frames: int = 5, size: int = 64, bits: int = 8, grid: int = 2
) -> ConfocalStack:
    if kind == "mosaic":
        return ConfocalStack(
            kind="mosaic",
            frames=grid * grid,
            rows=size,
            columns=size,
            bits=bits,
            pixel_spacing_um=1.5,
            wavelength_nm=830,
            objective="30x/0.9 water",
            magnification=30.0,
            tile_rows=grid,
            tile_columns=grid,
            tiles=tuple((r, c) for r in range(grid) for c in range(grid)),
        )
    return ConfocalStack(
        kind="z-stack",
        frames=frames,
        rows=size,
        columns=size + 8,
        bits=bits,
        pixel_spacing_um=0.5,
        z_step_um=4.0,
        wavelength_nm=830,
        objective="30x/0.9 water",
        magnification=30.0,
        numerical_aperture=0.9,
        depths_um=tuple(4.0 * i for i in range(frames)),
        frame_ms=111.0,
    )


def frames_of(stack: ConfocalStack, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(stack.frame_bytes) for _ in range(stack.frames)]


def job_for(
    tmp_path: Path,
    stack: ConfocalStack,
    frames: list[bytes],
    **offer_fields: object,
) -> WrapJob:
    source = tmp_path / "capture.raw"
    source.write_bytes(b"".join(frames))
    offer = CaptureOffer(
        device_capture_id="S000001",
        acquired_at=datetime(2026, 11, 30, 10, 15, 0),
        length=stack.pixel_bytes,
        content_type=ContentType.PIXELS,
        extra=stack.to_extra(),
        **offer_fields,  # type: ignore[arg-type]
    )
    uids = InstanceUIDs(study=new_uid(), series=new_uid(), sop_instance=new_uid())
    return WrapJob(IDENTITY, offer, uids, source, GATEWAY, datetime.now(UTC).astimezone())


def written_frames(ds: Dataset) -> list[bytes]:
    data = ds.PixelData
    size = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8
    return [data[i * size : (i + 1) * size] for i in range(int(ds.NumberOfFrames))]


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
        assert "TotalPixelMatrixOriginSequence" not in ds, "no slide coordinates in vivo"


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
    shuffled = replace(mosaic, tiles=tuple(reversed(mosaic.tiles)))
    with pytest.raises(WrapError, match="row-major"):
        ConfocalStack.from_extra(shuffled.to_extra())
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
