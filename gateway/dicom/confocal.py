"""Confocal Microscopy Image (…77.1.8) and Tiled Pyramidal (…77.1.9) Storage.

The 8-bit writer: the data set (:func:`build_confocal`) and the streamed file
(:func:`write_confocal`); a 16-bit stack goes to :mod:`gateway.dicom.confocal_sc`.
The rules followed, with the standard's sections, are in docs/dicom/confocal.md; a
capture's session context (patient, order, lesion: Frame Anatomy, Frame and Image
Laterality, Tracking ID/UID) is written by :mod:`gateway.dicom.context`
(docs/dicom/context.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Final

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
)
from pydicom.valuerep import format_number_as_ds

from gateway.core.capture import Laterality
from gateway.core.patient import lesion_label_comment
from gateway.core.uids import (
    derived_uid,
    tracking_uid,
)
from gateway.dicom.codes import Code
from gateway.dicom.confocal_sc import write_confocal_sc
from gateway.dicom.confocal_stack import (
    BITS,
    CONFOCAL_IMAGE_SOP_CLASS,
    CONFOCAL_TILED_SOP_CLASS,
    MAX_FRAMES,
    MAX_PIXEL_BYTES,
    MODALITY,
    ConfocalStack,
    RowMajorTiles,
    job_patient,
    start_instance,
)
from gateway.dicom.confocal_tiles import (
    add_tile_dimensions,
    add_tile_organization,
    tile_dimension_index,
    tile_position,
)
from gateway.dicom.context import apply_context
from gateway.dicom.elements import Element, encode_item, sequence_header, tag_of, to_dataset
from gateway.dicom.errors import WrapError
from gateway.dicom.job import WrapJob, WrittenObject
from gateway.dicom.modules import (
    add_enhanced_general_equipment,
    code_item,
    da,
    dt,
    frame_anatomy,
    tm,
)
from gateway.dicom.part10 import PIXEL_DATA, element_header, file_value, write_part10

__all__ = [
    "BITS",
    "CONFOCAL_IMAGE_SOP_CLASS",
    "CONFOCAL_TILED_SOP_CLASS",
    "MAX_FRAMES",
    "MAX_PIXEL_BYTES",
    "MODALITY",
    "ConfocalStack",
    "RowMajorTiles",
    "build_confocal",
    "write_confocal",
]

IMAGE_TYPE: Final = ("ORIGINAL", "PRIMARY", "VOLUME", "NONE")
OPTICAL_PATH_ID: Final = "1"

#: CID 8123 Microscopy Illumination Method [PY ``_concepts_dict``], by Confocal Mode.
_ILLUMINATION: Final = {
    "REFLECTANCE": ("111742", "DCM", "Reflection illumination"),
    "FLUORESCENCE": ("111743", "DCM", "Epifluorescence illumination"),
}
_UM_PER_MM: Final = 1000.0


def build_confocal(job: WrapJob, stack: ConfocalStack) -> Dataset:
    """The data set of one confocal capture, without Pixel Data (pure).

    Same inputs, equal data set: the Frame of Reference and Dimension Organization
    UIDs are derived from the SOP Instance UID, so a re-wrap gives the same object.
    The whole data set in memory, per-frame groups included: for tests and small
    stacks; :func:`write_confocal` writes the per-frame groups one frame at a time.
    """
    ds, acquired = build_without_per_frame_groups(job, stack)
    if not stack.full_grid:
        ds.PerFrameFunctionalGroupsSequence = Sequence(
            [to_dataset(group) for group in per_frame_groups(stack, acquired)]
        )
    return ds


def build_without_per_frame_groups(job: WrapJob, stack: ConfocalStack) -> tuple[Dataset, datetime]:
    """Everything of :func:`build_confocal` but the Per-Frame Functional Groups
    Sequence (the last attribute before Pixel Data), and the acquisition time."""
    tiled = stack.kind == "mosaic"
    sop_class = CONFOCAL_TILED_SOP_CLASS if tiled else CONFOCAL_IMAGE_SOP_CLASS
    uids = job.uids
    ds, acquired, laterality = start_instance(job, sop_class, frame_laterality=True)

    # Frame of Reference
    ds.FrameOfReferenceUID = derived_uid("frame-of-reference", uids.sop_instance)
    ds.PositionReferenceIndicator = ""

    add_enhanced_general_equipment(ds, job.identity, job.gateway, now=job.now)

    # General Acquisition, General Image, Multi-frame Functional Groups (top level)
    ds.AcquisitionDateTime = dt(acquired)
    ds.InstanceNumber = 1
    ds.ContentDate = da(acquired)
    ds.ContentTime = tm(acquired)
    ds.NumberOfFrames = stack.frames
    ds.ImageType = list(IMAGE_TYPE)
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    # 2C, "may be present otherwise" (C.7.6.1): no patient axes are known for a hand-held
    # probe; a mosaic's Image Orientation (Slide) is its own, not the patient's
    ds.PatientOrientation = ""
    if laterality is not None:
        ds.ImageLaterality = laterality.value

    # Acquisition Context (M): type 2, nothing to say yet
    ds.AcquisitionContextSequence = Sequence()

    # Image Pixel (Pixel Data is appended while streaming)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = stack.rows
    ds.Columns = stack.columns
    ds.BitsAllocated = stack.bits
    ds.BitsStored = stack.bits
    ds.HighBit = stack.bits - 1
    ds.PixelRepresentation = 0

    # Confocal Microscopy Image
    ds.ConfocalMode = stack.confocal_mode
    ds.TissueLocation = "IN_VIVO"

    _add_cutaneous_parameters(ds, job, stack)
    _add_optical_path(ds, stack)
    _add_functional_groups(ds, job, stack, acquired, laterality)
    _add_dimensions(ds, stack, uids.sop_instance)
    if tiled:
        add_tile_organization(ds, stack)
    if job.context is not None:
        apply_context(ds, job.context, job.offer)
    return ds, acquired


def _add_cutaneous_parameters(ds: Dataset, job: WrapJob, stack: ConfocalStack) -> None:
    """Cutaneous Confocal Microscopy Image Acquisition Parameters (C.8.35.3)."""
    ds.OpticalMagnificationFactor = (
        format_number_as_ds(stack.magnification) if stack.magnification is not None else ""
    )
    if stack.kind == "z-stack":
        ds.ImageAcquisitionDepth = min(stack.depths_um) / _UM_PER_MM
    else:
        ds.ImageAcquisitionDepth = None
    ds.FieldOfViewShape = "RECTANGLE"
    height_mm = stack.rows * stack.pixel_spacing_um * max(stack.tile_rows, 1) / _UM_PER_MM
    width_mm = stack.columns * stack.pixel_spacing_um * max(stack.tile_columns, 1) / _UM_PER_MM
    ds.FieldOfViewDimensions = _whole_mm(height_mm, width_mm)
    lesion = job.offer.lesion_id
    subject = job_patient(job)
    if lesion and subject.known:
        patient = subject.context
        ds.TrackingID = lesion
        ds.TrackingUID = tracking_uid(patient.issuer_of_patient_id, patient.patient_id, lesion)
    elif lesion:  # unknown patient: the label, without an identity claim (General Image)
        ds.ImageComments = lesion_label_comment(lesion)


def _whole_mm(*sizes_mm: float) -> list[int] | None:
    """Field of View Dimension(s) is IS (whole mm): the sizes, or None when rounding lies.

    A typical RCM field of 0.5 mm cannot be said in whole millimetres; "1" or "0"
    would be wrong, so the type 2 attribute is written empty ("unknown") whenever
    rounding changes a size by more than 5 %. Pixel Spacing still gives the geometry.
    """
    rounded = [round(size) for size in sizes_mm]
    if any(
        r <= 0 or abs(r - size) > 0.05 * size for r, size in zip(rounded, sizes_mm, strict=True)
    ):
        return None
    return rounded


def _add_optical_path(ds: Dataset, stack: ConfocalStack) -> None:
    """Optical Path Module: one path, the laser at the device's wavelength."""
    path = Dataset()
    path.OpticalPathIdentifier = OPTICAL_PATH_ID
    description = f"{stack.confocal_mode.lower()} {stack.wavelength_nm} nm"
    if stack.objective:
        description += f", objective {stack.objective}"
    path.OpticalPathDescription = description[:1024]
    path.IlluminationTypeCodeSequence = Sequence(
        [code_item(Code(*_ILLUMINATION[stack.confocal_mode]))]
    )
    path.IlluminationWaveLength = float(stack.wavelength_nm)
    if stack.magnification is not None:
        path.ObjectiveLensPower = format_number_as_ds(stack.magnification)
    if stack.numerical_aperture is not None:
        path.ObjectiveLensNumericalAperture = format_number_as_ds(stack.numerical_aperture)
    ds.OpticalPathSequence = Sequence([path])
    if stack.kind == "mosaic":
        ds.NumberOfOpticalPaths = 1


def _frame_type(depth_mm: float | None) -> list[Element]:
    """Confocal Microscopy Image Frame Type item (with the frame's depth, if one)."""
    item: list[Element] = [("FrameType", list(IMAGE_TYPE))]
    if depth_mm is not None:
        item.append(("ImageAcquisitionDepth", depth_mm))
    return item


def _add_functional_groups(
    ds: Dataset,
    job: WrapJob,
    stack: ConfocalStack,
    acquired: datetime,
    laterality: Laterality | None,
) -> None:
    """Shared Functional Groups (the per-frame ones: :func:`per_frame_groups`)."""
    shared = Dataset()
    measures = Dataset()
    spacing_mm = format_number_as_ds(stack.pixel_spacing_um / _UM_PER_MM)
    measures.PixelSpacing = [spacing_mm, spacing_mm]
    if stack.kind == "z-stack" and stack.z_step_um > 0:
        measures.SpacingBetweenSlices = format_number_as_ds(stack.z_step_um / _UM_PER_MM)
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.FrameAnatomySequence = Sequence([frame_anatomy(job.offer.anatomic_site, laterality)])
    identification = Dataset()
    identification.OpticalPathIdentifier = OPTICAL_PATH_ID
    shared.OpticalPathIdentificationSequence = Sequence([identification])
    if stack.kind == "mosaic":
        # one frame type for every tile (TILED_FULL: no per-frame groups at all)
        shared.ConfocalMicroscopyImageFrameTypeSequence = Sequence([to_dataset(_frame_type(None))])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])


def per_frame_groups(stack: ConfocalStack, acquired: datetime) -> Iterator[list[Element]]:
    """The Per-Frame Functional Groups item of each frame, one at a time: a z-stack's
    depths, or where each tile of a TILED_SPARSE mosaic lies."""
    if stack.kind == "mosaic":
        for index, (row, column) in enumerate(stack.tiles):
            content = _frame_content(acquired, index, stack.frame_ms)
            content += [
                ("DimensionIndexValues", tile_dimension_index(row, column)),
                ("FrameLabel", f"tile r{row + 1}c{column + 1}"),
            ]
            yield [
                ("FrameContentSequence", [content]),
                ("PlanePositionSlideSequence", [tile_position(stack, row, column)]),
            ]
        return
    for index, depth_um in enumerate(stack.depths_um):
        content = _frame_content(acquired, index, stack.frame_ms)
        content += [
            ("StackID", "1"),
            ("InStackPositionNumber", index + 1),
            ("DimensionIndexValues", [index + 1]),
            ("FrameLabel", depth_label(depth_um)),
        ]
        yield [
            ("FrameContentSequence", [content]),
            ("ConfocalMicroscopyImageFrameTypeSequence", [_frame_type(depth_um / _UM_PER_MM)]),
        ]


#: Frame Label width of a z-stack frame: the longest "depth {:g} um" (e.g.
#: "depth -1.23457e+100 um"). Every label is padded to it with trailing spaces
#: (not significant in LO), so a frame's item has the same length whatever its
#: depth: intake reserves the per-frame groups' room before the depths arrive
#: (:mod:`gateway.dicom.confocal_inline`).
DEPTH_LABEL_WIDTH: Final = 22


def depth_label(depth_um: float) -> str:
    """A z-stack frame's Frame Label, padded to :data:`DEPTH_LABEL_WIDTH`."""
    return f"depth {depth_um:g} um"[:DEPTH_LABEL_WIDTH].ljust(DEPTH_LABEL_WIDTH)


def _frame_content(acquired: datetime, index: int, frame_ms: float | None) -> list[Element]:
    """Frame Content timing of an ORIGINAL frame (PS3.3 C.7.6.16.2.2).

    Frame Acquisition DateTime, Frame Reference DateTime and Frame Acquisition
    Duration are 1C, required when Frame Type Value 1 is ORIGINAL (dciodvfy 20260927
    reports all missing ones in an enhanced image whose frames are ORIGINAL). With
    the device's frame time, frame *i* starts at ``acquired + i × frame_ms`` and its
    reference time is the middle of its acquisition. A device that does not report
    its frame time leaves the duration unknown: all frames get the stack's time and
    Frame Acquisition Duration is left out (**open point**: no truthful value).
    """
    if frame_ms is None:
        return [
            ("FrameAcquisitionDateTime", dt(acquired)),
            ("FrameReferenceDateTime", dt(acquired)),
        ]
    start = acquired + timedelta(milliseconds=index * frame_ms)
    return [
        ("FrameAcquisitionDateTime", dt(start)),
        ("FrameReferenceDateTime", dt(start + timedelta(milliseconds=frame_ms / 2))),
        ("FrameAcquisitionDuration", frame_ms),
    ]


def _add_dimensions(ds: Dataset, stack: ConfocalStack, sop_instance_uid: str) -> None:
    """Multi-frame Dimension Module (PS3.3 C.7.6.17)."""
    organization = derived_uid("dimension-organization", sop_instance_uid)
    org = Dataset()
    org.DimensionOrganizationUID = organization
    ds.DimensionOrganizationSequence = Sequence([org])
    if stack.kind == "mosaic":
        add_tile_dimensions(ds, stack, organization)
        return
    ds.DimensionOrganizationType = "3D"
    index = Dataset()
    index.DimensionOrganizationUID = organization
    index.DimensionIndexPointer = 0x00209057  # In-Stack Position Number
    index.FunctionalGroupPointer = 0x00209111  # Frame Content Sequence
    index.DimensionDescriptionLabel = "In-Stack Position"
    ds.DimensionIndexSequence = Sequence([index])


# --- the file ------------------------------------------------------------------------


def pixel_data_header(stack: ConfocalStack) -> bytes:
    """The Pixel Data element header: OB (8-bit pixels), explicit even length."""
    return element_header(PIXEL_DATA, "OB", stack.pixel_bytes)


def write_confocal(job: WrapJob, dest: Path) -> WrittenObject:
    """Write a confocal z-stack or mosaic from its raw pixel stream (blocking).

    Raises WrapError for a capture DICOM cannot carry (description missing or
    contradictory, more than :data:`MAX_FRAMES` frames or 0xFFFFFFFE bytes of
    pixels, a file whose size is not what the geometry says) and OSError for I/O
    trouble; ``dest`` appears only complete and durable. A 16-bit stack, which
    these IODs cannot hold, is written losslessly as Multi-frame Grayscale Word
    Secondary Capture by :mod:`gateway.dicom.confocal_sc` instead.

    Memory does not grow with the frame count: the per-frame groups are encoded
    one frame at a time straight into the file (:func:`write_per_frame_groups`,
    between the header and the pixels of :func:`~gateway.dicom.part10.write_part10`)
    and the pixels are copied in 1 MiB chunks. The bytes are those pydicom writes
    for :func:`build_confocal`'s data set.
    """
    if str(job.offer.extra.get("bits")) == "16":
        return write_confocal_sc(job, dest)
    stack = ConfocalStack.from_extra(job.offer.extra)
    with job.source.open("rb") as src:
        size = os.fstat(src.fileno()).st_size
        if size != stack.pixel_bytes:
            raise WrapError(
                f"the confocal capture has {size} bytes of pixels but its geometry "
                f"({stack.frames} frames of {stack.columns}x{stack.rows}, {stack.bits}-bit) "
                f"needs {stack.pixel_bytes}; the capture is kept and quarantined"
            )
        dataset, acquired = build_without_per_frame_groups(job, stack)
        if max(int(elem.tag) for elem in dataset) >= _PER_FRAME_GROUPS:
            raise ValueError("the per-frame groups must be the data set's last attribute")

        def per_frame_groups(out: BinaryIO) -> None:
            if not stack.full_grid:  # a z-stack, or tiles placed one by one
                write_per_frame_groups(out, stack, acquired)

        write_part10(dest, dataset, file_value(src, size), before_value=per_frame_groups)
    return WrittenObject(
        sop_class_uid=str(dataset.SOPClassUID), transfer_syntax_uid=str(ExplicitVRLittleEndian)
    )


_PER_FRAME_GROUPS: Final = tag_of("PerFrameFunctionalGroupsSequence")


def write_per_frame_groups(out: BinaryIO, stack: ConfocalStack, acquired: datetime) -> int:
    """Write the Per-Frame Functional Groups Sequence (z-stack, sparse mosaic) frame by frame.

    Each item is made, written and dropped. The sequence gets an explicit length, as
    pydicom writes it (so readers can skip it without parsing 100,000 items): its
    header is written with a placeholder and filled in once the items are written
    (``out`` must be seekable). Returns the bytes written.
    """
    start = out.tell()
    out.write(sequence_header("PerFrameFunctionalGroupsSequence", 0))
    length = 0
    for group in per_frame_groups(stack, acquired):
        item = encode_item(group)
        out.write(item)
        length += len(item)
    end = out.tell()
    out.seek(start)
    out.write(sequence_header("PerFrameFunctionalGroupsSequence", length))
    out.seek(end)
    return end - start
