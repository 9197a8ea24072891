"""Derived objects of a widely accepted SOP class, for ``fallback = "compatible"``.

A receiver that predates Dermoscopic Photography or the Confocal Microscopy classes
refuses their presentation contexts. For a destination with ``fallback =
"compatible"`` DermGate then sends a **derived object** instead
(:data:`gateway.dicom.sop_classes.COMPATIBLE`), made from the spooled original
by :func:`derive_compatible`:

* Dermoscopic Photography (…77.1.7) → **VL Photographic Image Storage** (…77.1.4,
  PS3.3 A.32.4): the same JPEG fragment byte for byte (never re-encoded), in the
  same transfer syntax. Modality ``XC`` (VL Photographic's defined term; ``DMS`` is
  the Dermoscopic series' own). The attributes of the Dermoscopic Photography Image
  module that VL Photographic has no place for (Light Source Polarization, Emitter
  Color Temperature, Contact Method, Immersion Media, Optical Magnification Factor,
  Tracking ID/UID) and the Frame of Reference are dropped; patient, study, order,
  equipment, acquisition time, laterality, anatomic region, Acquisition Context,
  Recognizable Visual Features and the lossy compression history stay.
* Confocal Microscopy (…77.1.8) and Confocal Microscopy Tiled Pyramidal (…77.1.9) →
  **Multi-frame Grayscale Byte Secondary Capture** (…7.2, PS3.3 A.8.3): the same
  8-bit frames in the same order (the Confocal IODs take 8-bit pixels only; a
  16-bit stack is already Word SC, :mod:`gateway.dicom.confocal_sc`, and is never
  refused for its class). The SC modules are those of the 16-bit writer
  (:func:`~gateway.dicom.confocal_sc.add_sc_equipment`,
  :func:`~gateway.dicom.confocal_sc.add_sc_multiframe_image`,
  :func:`~gateway.dicom.confocal_sc.add_sc_frame_vector`): a z-stack's per-frame
  depths become the Slice Location Vector, a mosaic's row-major tiles the Frame
  Label Vector; Pixel Spacing comes from the shared Pixel Measures. The enhanced
  multi-frame, optical path, confocal and cutaneous modules, Frame of Reference,
  Tracking ID/UID and Acquisition Context are not part of the SC IOD and are dropped.
  The Window Center/Width is the full 8-bit range (the values are the microscope's
  own reflectance counts).
* OBJ / MTL / STL (:data:`~gateway.dicom.sop_classes.NO_SUBSTITUTE`): no class a
  PACS accepts more widely carries a surface losslessly; not derived.

Every derived object says what it is (PS3.3 C.7.6.1): Image Type value 1
``DERIVED``; **Derivation Description** in words; **Source Image Sequence** with
the original's SOP Class / Instance UID and Purpose of Reference (121322, DCM,
"Source image for image processing operation", CID 7202); a second Contributing
Equipment item (DermGate, Processing Equipment) whose description says it changed
the class. Derivation Code Sequence (type 3) is left out: every CID 7203 concept
names a change of the pixels (113040 "Lossy Compression", resampling, filters…),
and here the pixels are not changed at all; a wrong code is worse than none.

Identity: the derived object goes into its own series (a series holds one modality)
of the same study; its SOP Instance and Series Instance UIDs are derived from the
original's and the derived class (:func:`derived_instance_uid`), and its creation
date/time are the original's, so the derived object is a pure function of the
original: every retry, every destination and a re-derivation after a crash send
the very same object, and a PACS keeps one.

Streaming: the header is read with pydicom up to Pixel Data; the pixel value is
then copied from the original file in 1 MiB chunks by
:func:`gateway.dicom.part10.write_part10` (memory flat for a 1 GB stack); ``dest``
appears only complete and durable. Blocking: callers run it on a worker thread.
"""

from __future__ import annotations

import copy
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Final

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ConfocalMicroscopyTiledPyramidalImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    VLPhotographicImageStorage,
)

from gateway.core.uids import (
    DERMGATE_IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    derived_uid,
)
from gateway.dicom.codes import Code
from gateway.dicom.confocal_sc import (
    add_sc_equipment,
    add_sc_frame_vector,
    add_sc_multiframe_image,
)
from gateway.dicom.modules import DERMGATE_MANUFACTURER, DERMGATE_PURPOSE, code_item, dt
from gateway.dicom.part10 import PIXEL_DATA, StreamedValue, write_part10
from gateway.dicom.sop_classes import COMPATIBLE, uid_name

__all__ = [
    "DeriveError",
    "DerivedObject",
    "compatible_class",
    "derive_compatible",
    "derived_instance_uid",
]

_VL_PHOTO: Final = str(VLPhotographicImageStorage)
_BYTE_SC: Final = str(MultiFrameGrayscaleByteSecondaryCaptureImageStorage)
_TILED: Final = str(ConfocalMicroscopyTiledPyramidalImageStorage)
_CHUNK: Final = 1 << 20
_UNDEFINED: Final = 0xFFFFFFFF
_ITEM: Final = (0xFFFE, 0xE000)
_SEQUENCE_END: Final = (0xFFFE, 0xE0DD)
_SOURCE_PURPOSE: Final = ("121322", "DCM", "Source image for image processing operation")
_FRAME_TYPE_SEQUENCE: Final = "ConfocalMicroscopyImageFrameTypeSequence"

#: Attributes no derived object keeps (the new object sets its own).
_ALWAYS_DROPPED: Final = frozenset(
    {
        "SOPClassUID",
        "SOPInstanceUID",
        "SeriesInstanceUID",
        "FrameOfReferenceUID",
        "PositionReferenceIndicator",
        "TrackingID",
        "TrackingUID",
        "ContributingEquipmentSequence",
        "SourceImageSequence",
        "DerivationDescription",
        "DerivationCodeSequence",
    }
)
#: Dermoscopic Photography Image module attributes VL Photographic has no place for.
_NOT_VL_PHOTO: Final = frozenset(
    {
        "LightSourcePolarization",
        "EmitterColorTemperature",
        "ContactMethod",
        "ImmersionMedia",
        "OpticalMagnificationFactor",
    }
)
#: Enhanced multi-frame, optical path, confocal and cutaneous attributes (not SC).
_NOT_SC: Final = frozenset(
    {
        "OpticalMagnificationFactor",
        "FieldOfViewShape",
        "FieldOfViewDimensions",
        "DimensionOrganizationSequence",
        "DimensionIndexSequence",
        "DimensionOrganizationType",
        "AcquisitionContextSequence",
        "TotalPixelMatrixColumns",
        "TotalPixelMatrixRows",
        "TotalPixelMatrixFocalPlanes",
        "OpticalPathSequence",
        "NumberOfOpticalPaths",
        "ConfocalMode",
        "TissueLocation",
        "ImageAcquisitionDepth",
        "SharedFunctionalGroupsSequence",
        "PerFrameFunctionalGroupsSequence",
        "FrameLaterality",
        "RecognizableVisualFeatures",
    }
)


class DeriveError(Exception):
    """The original cannot be carried by a derived object; ``str()`` says why (no
    patient data)."""


@dataclass(frozen=True, slots=True)
class DerivedObject:
    """A derived object written to ``path``."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    path: Path


def compatible_class(sop_class_uid: str) -> str | None:
    """The class a derived object of ``sop_class_uid`` has (None: no substitute)."""
    return COMPATIBLE.get(sop_class_uid)


def derived_instance_uid(original_uid: str, derived_class: str) -> str:
    """The SOP Instance UID of the derived object of class ``derived_class`` made from
    the instance ``original_uid``: a ``2.25`` UID (uuid5, at most 44 characters), the
    same for the same pair, different for another class or another original."""
    return derived_uid(f"compatible-instance\x00{derived_class}", original_uid)


def _derived_series_uid(original_series_uid: str, derived_class: str) -> str:
    return derived_uid(f"compatible-series\x00{derived_class}", original_series_uid)


def derive_compatible(original: Path, dest: Path, software_version: str) -> DerivedObject:
    """Write the derived object of the Part 10 file ``original`` to ``dest`` (blocking).

    Raises :class:`DeriveError` when the original's class has no compatible class or
    its content cannot be carried, :class:`OSError` for I/O trouble; ``dest`` is then
    untouched.
    """
    with original.open("rb") as src:
        try:
            header = pydicom.dcmread(src, stop_before_pixels=True)
        except (InvalidDicomError, ValueError, EOFError) as err:
            raise DeriveError(
                f"the spooled DICOM file cannot be read ({type(err).__name__})"
            ) from err
        pixel_start = src.tell()
        sop_class = str(header.get("SOPClassUID", ""))
        target = compatible_class(sop_class)
        if target is None:
            raise DeriveError(f"{uid_name(sop_class)} has no lossless substitute class")
        syntax = str(header.file_meta.TransferSyntaxUID)
        value = _pixel_value(src, pixel_start)
        ds = _common(header, target, syntax, software_version)
        if target == _VL_PHOTO:
            _as_vl_photographic(ds, header)
        else:
            _as_byte_sc(ds, header, software_version)
        write_part10(dest, ds, value)
    return DerivedObject(target, str(ds.SOPInstanceUID), syntax, dest)


# --- the data set --------------------------------------------------------------------


def _common(header: Dataset, target: str, syntax: str, software_version: str) -> Dataset:
    """Everything of the original but what no derived object keeps, plus the new
    identity and the derivation references."""
    dropped = _ALWAYS_DROPPED | (_NOT_VL_PHOTO if target == _VL_PHOTO else _NOT_SC)
    ds = Dataset()
    for elem in header:
        if elem.keyword not in dropped and elem.tag < PIXEL_DATA:
            ds.add(copy.deepcopy(elem))
    original_class = str(header.SOPClassUID)
    original_uid = str(header.SOPInstanceUID)
    instance_uid = derived_instance_uid(original_uid, target)
    ds.SOPClassUID = target
    ds.SOPInstanceUID = instance_uid
    ds.SeriesInstanceUID = _derived_series_uid(str(header.SeriesInstanceUID), target)
    ds.ImageType = ["DERIVED", *list(header.get("ImageType", ["ORIGINAL", "PRIMARY"]))[1:2]]
    if len(ds.ImageType) < 2:
        ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.DerivationDescription = (
        f"{uid_name(original_class)} object stored as {uid_name(target)} for a receiver "
        "that does not accept its class; pixel data copied unchanged"
    )
    source = Dataset()
    source.ReferencedSOPClassUID = original_class
    source.ReferencedSOPInstanceUID = original_uid
    source.PurposeOfReferenceCodeSequence = Sequence([code_item(Code(*_SOURCE_PURPOSE))])
    ds.SourceImageSequence = Sequence([source])
    ds.ContributingEquipmentSequence = Sequence(
        [*_contributors(header), _converter(header, target, software_version)]
    )
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(target)
    meta.MediaStorageSOPInstanceUID = UID(instance_uid)
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = UID(DERMGATE_IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    return ds


def _contributors(header: Dataset) -> list[Dataset]:
    return [copy.deepcopy(item) for item in header.get("ContributingEquipmentSequence", [])]


def _converter(header: Dataset, target: str, software_version: str) -> Dataset:
    """DermGate as the equipment that made the derived object (Processing Equipment,
    as in :func:`gateway.dicom.modules.add_dermgate_equipment`)."""
    mine = [
        item
        for item in header.get("ContributingEquipmentSequence", [])
        if item.get("Manufacturer") == DERMGATE_MANUFACTURER
    ]
    item = copy.deepcopy(mine[-1]) if mine else Dataset()
    item.Manufacturer = DERMGATE_MANUFACTURER
    item.ManufacturerModelName = "DermGate"
    item.SoftwareVersions = f"DermGate {software_version}"[:64]
    item.ContributionDateTime = _creation(header)
    item.ContributionDescription = (
        f"Made this {uid_name(target)} object from the {uid_name(str(header.SOPClassUID))} "
        "object for a receiver that does not accept that class"
    )
    item.PurposeOfReferenceCodeSequence = Sequence([code_item(DERMGATE_PURPOSE)])
    return item


def _creation(header: Dataset) -> str:
    """The original's Instance Creation Date/Time as a DT (with its UTC offset)."""
    date = str(header.get("InstanceCreationDate", "") or "")
    time = str(header.get("InstanceCreationTime", "") or "")
    offset = str(header.get("TimezoneOffsetFromUTC", "") or "")
    if not date:
        return dt(datetime.now().astimezone())
    return f"{date}{time}{offset}"


def _as_vl_photographic(ds: Dataset, header: Dataset) -> None:
    """VL Photographic: its modality; everything else was kept or dropped in
    :func:`_common`."""
    ds.Modality = "XC"
    if int(header.get("NumberOfFrames", 1) or 1) != 1:
        raise DeriveError("a multi-frame dermoscopic image has no VL Photographic form")


def _as_byte_sc(ds: Dataset, header: Dataset, software_version: str) -> None:
    """Multi-frame Grayscale Byte SC from a confocal object's header."""
    if int(header.BitsAllocated) != 8 or str(header.PhotometricInterpretation) != "MONOCHROME2":
        raise DeriveError("only 8-bit MONOCHROME2 confocal frames fit Byte Secondary Capture")
    frames = int(header.get("NumberOfFrames", 1) or 1)
    ds.NumberOfFrames = frames
    add_sc_equipment(ds, software_version)
    add_sc_multiframe_image(ds, _creation_datetime(header))
    ds.BurnedInAnnotation = "NO"
    ds.PixelRepresentation = 0
    shared = header.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    measures = shared.get("PixelMeasuresSequence", [Dataset()])[0]
    if "PixelSpacing" in measures:
        ds.PixelSpacing = measures.PixelSpacing
    _frame_anatomy_to_image(ds, shared)
    if str(header.SOPClassUID) == _TILED:
        add_sc_frame_vector(ds, frames, labels=_tile_labels(header, frames))
    else:
        depths = [
            str(group[_FRAME_TYPE_SEQUENCE][0].ImageAcquisitionDepth)
            for group in header.get("PerFrameFunctionalGroupsSequence", [])
            if _FRAME_TYPE_SEQUENCE in group
            and "ImageAcquisitionDepth" in group[_FRAME_TYPE_SEQUENCE][0]
        ]
        if len(depths) == frames:
            add_sc_frame_vector(ds, frames, depths_mm=depths)
    ds.WindowCenter = "128"
    ds.WindowWidth = "256"
    ds.VOILUTFunction = "LINEAR"


def _tile_labels(header: Dataset, frames: int) -> list[str]:
    """``r<row>c<column>`` per frame: from each frame's Plane Position (Slide) in a
    TILED_SPARSE mosaic (tiles in the order the device took them), else row by row
    (TILED_FULL)."""
    rows, columns = int(header.Rows), int(header.Columns)
    labels = []
    for group in header.get("PerFrameFunctionalGroupsSequence", []):
        position = group.get("PlanePositionSlideSequence", [None])[0]
        if position is None:
            break
        row = (int(position.RowPositionInTotalImagePixelMatrix) - 1) // rows
        column = (int(position.ColumnPositionInTotalImagePixelMatrix) - 1) // columns
        labels.append(f"r{row + 1}c{column + 1}")
    if len(labels) == frames:
        return labels
    per_row = max(1, int(header.TotalPixelMatrixColumns) // columns)
    return [f"r{n // per_row + 1}c{n % per_row + 1}" for n in range(frames)]


def _frame_anatomy_to_image(ds: Dataset, shared: Dataset) -> None:
    """The shared Frame Anatomy as General Image's Anatomic Region Sequence and Image
    Laterality (Series Laterality, 2C, empty when no side is known)."""
    anatomy = shared.get("FrameAnatomySequence", [Dataset()])[0]
    if "AnatomicRegionSequence" not in ds and "AnatomicRegionSequence" in anatomy:
        ds.AnatomicRegionSequence = copy.deepcopy(anatomy.AnatomicRegionSequence)
    side = str(anatomy.get("FrameLaterality", "") or "")
    if "ImageLaterality" not in ds and side in ("R", "L", "U", "B"):
        ds.ImageLaterality = side
    if "ImageLaterality" not in ds and "Laterality" not in ds:
        ds.Laterality = ""


def _creation_datetime(header: Dataset) -> datetime:
    """The original's creation time (for Date/Time of Secondary Capture)."""
    text = str(header.get("InstanceCreationDate", "")) + str(
        header.get("InstanceCreationTime", "000000")
    )
    try:
        return datetime.strptime(text[:14], "%Y%m%d%H%M%S")
    except ValueError:
        return datetime.now()


# --- the pixel value -----------------------------------------------------------------


def _pixel_value(src: BinaryIO, start: int) -> StreamedValue:
    """Where the original's Pixel Data value lies, as a value to stream (one fragment
    of encapsulated data, or the native bytes)."""
    src.seek(start)
    head = src.read(12)
    if len(head) != 12:
        raise DeriveError("the spooled DICOM file has no Pixel Data")
    group, element, vr, _, length = struct.unpack("<HH2sHI", head)
    if (group << 16 | element) != PIXEL_DATA or vr not in (b"OB", b"OW"):
        raise DeriveError("the spooled DICOM file has no Pixel Data where expected")
    if length != _UNDEFINED:
        value_start = start + 12
        vr_name: Final = "OW" if vr == b"OW" else "OB"

        def copy_native(out: BinaryIO) -> int:
            src.seek(value_start)
            return _copy(src, out, length)

        return StreamedValue(length=length, copy=copy_native, vr=vr_name)
    fragments = _fragments(src)
    if len(fragments) != 1:
        raise DeriveError(f"the JPEG is in {len(fragments)} fragments; one was expected")
    offset, size = fragments[0]

    def copy_fragment(out: BinaryIO) -> int:
        src.seek(offset)
        return _copy(src, out, size)

    return StreamedValue(length=size, copy=copy_fragment, encapsulated=True)


def _copy(src: BinaryIO, out: BinaryIO, length: int) -> int:
    """Copy ``length`` bytes (fewer if ``src`` ends first) in bounded chunks."""
    copied = 0
    while copied < length and (chunk := src.read(min(_CHUNK, length - copied))):
        out.write(chunk)
        copied += len(chunk)
    return copied


def _fragments(src: BinaryIO) -> list[tuple[int, int]]:
    """(offset, length) of each fragment after the Basic Offset Table item."""
    found: list[tuple[int, int]] = []
    first = True
    while True:
        item = src.read(8)
        if len(item) != 8:
            raise DeriveError("the encapsulated Pixel Data is cut short")
        group, element, length = struct.unpack("<HHI", item)
        if (group, element) == _SEQUENCE_END:
            return found
        if (group, element) != _ITEM or length == _UNDEFINED:
            raise DeriveError("the encapsulated Pixel Data is damaged")
        if not first:
            found.append((src.tell(), length))
        first = False
        src.seek(length, 1)
