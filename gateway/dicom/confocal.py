"""Confocal Microscopy Image (…77.1.8) and Tiled Pyramidal (…77.1.9) Storage.

:func:`write_confocal` turns one confocal capture (raw little-endian pixels, frame
after frame, as a reflectance confocal microscope streams them) into one enhanced
multi-frame DICOM object, streaming the pixels from the spool file into the Part 10
file in 1 MiB chunks: memory stays flat whatever the stack size. The geometry and
the per-frame positions come from the offer's ``extra`` through :class:`ConfocalStack`.

What PS3.3 says, and what we write (read with the search tool; A.90, C.8.35,
PS3.16 CID 29/33 as shipped in pydicom 3.0.2):

* **Modality** ``CFM`` ("Confocal Microscopy", CID 29/33 Acquisition Modality).
* **Modules** (Table A.90.1.3-1): Patient, General Study, General Series, Frame of
  Reference, General Equipment, Enhanced General Equipment, General Acquisition,
  General Image, Image Pixel, Multi-frame Functional Groups, Multi-frame
  Dimension, Optical Path, Confocal Microscopy Image (C.8.35.1), Cutaneous Confocal
  Microscopy Image Acquisition Parameters (C.8.35.3; skin, so written), SOP Common.
* **Functional groups** (Table A.90.2.5-1 and its A.90.1 sibling): Pixel Measures
  (shared), Confocal Microscopy Image Frame Type (0048,0116), Frame Anatomy, Optical
  Path Identification (required unless TILED_FULL), Frame Content (never shared);
  Plane Position (Slide) only for slide coordinates, so never for in-vivo skin.
* **Cutaneous module** (Table C.8.35.3-1): Optical Magnification Factor 2, Image
  Acquisition Depth 2 (mm), Field of View Shape 2 (RECTANGLE), Field of View
  Dimension(s) 2 (mm, rows then columns; IS, so written empty when whole
  millimetres would misstate a sub-millimetre field), Tracking ID / Tracking UID 1C
  (each required when the other is present).

Decisions:

* **Z-stacks → Confocal Microscopy Image** (…77.1.8): Dimension Organization Type
  ``3D``, one dimension (In-Stack Position Number in Frame Content); each frame's
  depth below the surface (mm) is in its Confocal Microscopy Image Frame Type item
  as Image Acquisition Depth, and in its Frame Label. The image-level Image
  Acquisition Depth (type 2) is the shallowest frame's depth.
* **Mosaics → Confocal Microscopy Tiled Pyramidal** (…77.1.9) as a single-level
  pyramid with **TILED_FULL**: the device sends the tile grid row by row, so the
  tile order alone places every tile (Total Pixel Matrix Rows/Columns = grid ×
  tile size) and no per-frame position is needed; that is why Optical Path
  Identification is shared and the Per-frame Functional Groups are left out, as
  TILED_FULL allows. TILED_SPARSE would need Plane Position (Slide), which PS3.3
  ties to the slide coordinate system and which an in-vivo mosaic does not have.
  A mosaic whose tiles did not arrive in row-major order is refused (WrapError).
* **Image Type** ``ORIGINAL\\PRIMARY\\VOLUME\\NONE``: PS3.17 BBBBB.7 says confocal
  tiled images replicate whole-slide imaging, whose Image Type values these are
  (C.8.12.4.1.1); Frame Type repeats them. **Confocal Mode** ``REFLECTANCE`` and
  **Tissue Location** ``IN_VIVO``: the modes A.90 names (reflectance/fluorescence,
  in vivo/ex vivo) for the device class we serve.
* **Pixels**: MONOCHROME2, unsigned, 8 or 16 bits allocated = stored, native
  Explicit VR Little Endian; Pixel Data is OB for 8-bit and OW for 16-bit, with an
  explicit even length (an odd 8-bit total gets one 0x00 pad byte).
* **Too large**: Pixel Data with an explicit length holds at most 0xFFFFFFFE bytes
  (a 32-bit length; 0xFFFFFFFF means "undefined"). Native pixels cannot be split
  into fragments, so a larger stack cannot be one object: :class:`WrapError`
  (quarantined, kept; it needs splitting into several stacks on the device).
* **Frame Anatomy**: the device's CID 4029 site when it gave one, else SNOMED CT
  "Skin structure"; Frame Laterality (type 1, R/L/U/B) is the device's laterality
  or U when it did not say (the standard has no "unknown" value).
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ConfocalMicroscopyImageStorage,
    ConfocalMicroscopyTiledPyramidalImageStorage,
    ExplicitVRLittleEndian,
)
from pydicom.valuerep import format_number_as_ds

from gateway.capture import Laterality
from gateway.dicom.errors import WrapError
from gateway.dicom.job import WrapJob, WrittenObject
from gateway.dicom.modules import (
    add_enhanced_general_equipment,
    add_general_series,
    add_general_study,
    add_patient,
    add_sop_common,
    da,
    dermatology_site,
    dt,
    in_zone_of,
    tm,
)
from gateway.dicom.uids import (
    DERMGATE_IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    derived_uid,
    tracking_uid,
)
from gateway.spool.files import atomic_writer, copy_stream

__all__ = [
    "CONFOCAL_IMAGE_SOP_CLASS",
    "CONFOCAL_TILED_SOP_CLASS",
    "MAX_PIXEL_BYTES",
    "MODALITY",
    "ConfocalStack",
    "build_confocal",
    "write_confocal",
]

CONFOCAL_IMAGE_SOP_CLASS: Final = str(ConfocalMicroscopyImageStorage)
CONFOCAL_TILED_SOP_CLASS: Final = str(ConfocalMicroscopyTiledPyramidalImageStorage)
MODALITY: Final = "CFM"
#: Largest explicit length of one data element (0xFFFFFFFF means "undefined").
MAX_PIXEL_BYTES: Final = 0xFFFFFFFE
IMAGE_TYPE: Final = ("ORIGINAL", "PRIMARY", "VOLUME", "NONE")
OPTICAL_PATH_ID: Final = "1"

_CHUNK: Final = 1 << 20
_SKIN: Final = ("39937001", "SCT", "Skin structure")
_REFLECTION: Final = ("111742", "DCM", "Reflection illumination")
_UM_PER_MM: Final = 1000.0

Kind = Literal["z-stack", "mosaic"]


@dataclass(frozen=True, slots=True)
class ConfocalStack:
    """Geometry and per-frame positions of one confocal capture (``offer.extra``).

    ``depths_um`` has one depth below the skin surface (µm) per frame of a z-stack;
    ``tiles`` one (row, column) grid position per tile of a mosaic, in the order the
    frames are stored. Serialises to and from JSON-compatible dicts: thousands of
    frames are a few tens of kB in the ledger.
    """

    kind: Kind
    frames: int
    rows: int
    columns: int
    bits: int
    pixel_spacing_um: float
    wavelength_nm: int
    z_step_um: float = 0.0
    objective: str = ""
    magnification: float | None = None
    numerical_aperture: float | None = None
    tile_rows: int = 0
    tile_columns: int = 0
    depths_um: tuple[float, ...] = ()
    tiles: tuple[tuple[int, int], ...] = ()
    confocal_mode: str = "REFLECTANCE"

    @property
    def bytes_per_pixel(self) -> int:
        """1 for 8-bit pixels, 2 for 16-bit."""
        return self.bits // 8

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame's pixels."""
        return self.rows * self.columns * self.bytes_per_pixel

    @property
    def pixel_bytes(self) -> int:
        """Bytes of all pixels (the capture's length)."""
        return self.frames * self.frame_bytes

    def to_extra(self) -> dict[str, Any]:
        """The JSON-compatible form stored in ``CaptureOffer.extra``."""
        data: dict[str, Any] = {
            "schema": 1,
            "kind": self.kind,
            "frames": self.frames,
            "rows": self.rows,
            "columns": self.columns,
            "bits": self.bits,
            "pixel_spacing_um": self.pixel_spacing_um,
            "wavelength_nm": self.wavelength_nm,
            "z_step_um": self.z_step_um,
            "objective": self.objective,
            "magnification": self.magnification,
            "numerical_aperture": self.numerical_aperture,
            "confocal_mode": self.confocal_mode,
        }
        if self.kind == "mosaic":
            data["tile_rows"] = self.tile_rows
            data["tile_columns"] = self.tile_columns
            data["tiles"] = [list(t) for t in self.tiles]
        else:
            data["depths_um"] = list(self.depths_um)
        return data

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> ConfocalStack:
        """Read and check ``offer.extra``; a missing or wrong field raises WrapError."""
        try:
            kind = _kind(extra["kind"])
            stack = cls(
                kind=kind,
                frames=int(extra["frames"]),
                rows=int(extra["rows"]),
                columns=int(extra["columns"]),
                bits=int(extra["bits"]),
                pixel_spacing_um=float(extra["pixel_spacing_um"]),
                wavelength_nm=int(extra["wavelength_nm"]),
                z_step_um=float(extra.get("z_step_um") or 0.0),
                objective=str(extra.get("objective") or ""),
                magnification=_opt_float(extra.get("magnification")),
                numerical_aperture=_opt_float(extra.get("numerical_aperture")),
                tile_rows=int(extra.get("tile_rows") or 0),
                tile_columns=int(extra.get("tile_columns") or 0),
                depths_um=tuple(float(d) for d in extra.get("depths_um") or ()),
                tiles=tuple((int(t[0]), int(t[1])) for t in extra.get("tiles") or ()),
                confocal_mode=str(extra.get("confocal_mode") or "REFLECTANCE"),
            )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise WrapError(
                f"the confocal stack description is incomplete or invalid ({err}); "
                "check the device driver; the capture is kept and quarantined"
            ) from err
        stack.check()
        return stack

    def check(self) -> None:
        """Refuse geometry DICOM cannot describe, with a reason a technician can act on."""
        problems: list[str] = []
        if self.bits not in (8, 16):
            problems.append(f"{self.bits} bits per pixel (8 or 16 are supported)")
        if not (0 < self.rows <= 0xFFFF and 0 < self.columns <= 0xFFFF):
            problems.append(f"frame size {self.columns}x{self.rows}")
        if self.frames <= 0:
            problems.append("no frames")
        if self.pixel_spacing_um <= 0:
            problems.append("no pixel spacing")
        if self.confocal_mode not in ("REFLECTANCE", "FLUORESCENCE"):
            problems.append(f"confocal mode {self.confocal_mode!r}")
        if self.kind == "z-stack" and len(self.depths_um) != self.frames:
            problems.append(f"{len(self.depths_um)} frame depths for {self.frames} frames")
        if self.kind == "mosaic":
            expected = [(r, c) for r in range(self.tile_rows) for c in range(self.tile_columns)]
            if self.tile_rows * self.tile_columns != self.frames:
                problems.append(
                    f"a {self.tile_rows}x{self.tile_columns} tile grid for {self.frames} tiles"
                )
            elif list(self.tiles) != expected:
                problems.append("tiles not in row-major order (TILED_FULL needs a full grid)")
        if problems:
            raise WrapError(
                "the confocal stack cannot be described in DICOM: "
                + "; ".join(problems)
                + "; the capture is kept and quarantined"
            )
        if self.pixel_bytes + (self.pixel_bytes & 1) > MAX_PIXEL_BYTES:
            raise WrapError(
                f"the confocal stack has {self.pixel_bytes} bytes of pixels, more than "
                f"one DICOM object can hold ({MAX_PIXEL_BYTES} bytes of native Pixel "
                "Data); record shorter stacks on the device; the capture is kept and "
                "quarantined"
            )


def _kind(value: object) -> Kind:
    if value == "z-stack":
        return "z-stack"
    if value == "mosaic":
        return "mosaic"
    raise ValueError(f"unknown stack kind {value!r}")


def _opt_float(value: object) -> float | None:
    if value is None or value == "":
        return None
    return float(str(value))


# --- the data set --------------------------------------------------------------------


def build_confocal(job: WrapJob, stack: ConfocalStack) -> Dataset:
    """The data set of one confocal capture, without Pixel Data (pure).

    Same inputs, equal data set: the Frame of Reference and Dimension Organization
    UIDs are derived from the SOP Instance UID, so a re-wrap gives the same object.
    """
    tiled = stack.kind == "mosaic"
    sop_class = CONFOCAL_TILED_SOP_CLASS if tiled else CONFOCAL_IMAGE_SOP_CLASS
    uids = job.uids
    offer = job.offer
    now = job.now
    acquired = in_zone_of(offer.acquired_at or now, now)
    laterality = Laterality(offer.laterality) if offer.laterality is not None else None

    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, uids.sop_instance)
    add_sop_common(ds, sop_class_uid=sop_class, sop_instance_uid=uids.sop_instance, now=now)
    add_patient(ds, offer.patient)
    add_general_study(
        ds,
        study_uid=uids.study,
        started=acquired,
        accession_number=offer.patient.accession_number if offer.patient else "",
    )
    add_general_series(
        ds, series_uid=uids.series, modality=MODALITY, started=acquired, series_number=1
    )
    if laterality is None:
        ds.Laterality = ""  # Series Laterality, type 2C without Image/Frame Laterality

    # Frame of Reference
    ds.FrameOfReferenceUID = derived_uid("frame-of-reference", uids.sop_instance)
    ds.PositionReferenceIndicator = ""

    add_enhanced_general_equipment(ds, job.identity, job.gateway)

    # General Acquisition, General Image, Multi-frame Functional Groups (top level)
    ds.AcquisitionDateTime = dt(acquired)
    ds.InstanceNumber = 1
    ds.ContentDate = da(acquired)
    ds.ContentTime = tm(acquired)
    ds.NumberOfFrames = stack.frames
    ds.ImageType = list(IMAGE_TYPE)
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    if laterality is not None:
        ds.ImageLaterality = laterality.value

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
        _add_tile_organization(ds, stack)
    return ds


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
    if job.offer.lesion_id:
        ds.TrackingID = job.offer.lesion_id
        ds.TrackingUID = tracking_uid(job.identity.serial_number, job.offer.lesion_id)


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
    """Optical Path Module: one path, reflected laser light at the device's wavelength."""
    path = Dataset()
    path.OpticalPathIdentifier = OPTICAL_PATH_ID
    description = f"{stack.confocal_mode.lower()} {stack.wavelength_nm} nm"
    if stack.objective:
        description += f", objective {stack.objective}"
    path.OpticalPathDescription = description[:1024]
    path.IlluminationTypeCodeSequence = Sequence([_code(*_REFLECTION)])
    path.IlluminationWaveLength = float(stack.wavelength_nm)
    if stack.magnification is not None:
        path.ObjectiveLensPower = format_number_as_ds(stack.magnification)
    if stack.numerical_aperture is not None:
        path.ObjectiveLensNumericalAperture = format_number_as_ds(stack.numerical_aperture)
    ds.OpticalPathSequence = Sequence([path])
    if stack.kind == "mosaic":
        ds.NumberOfOpticalPaths = 1


def _frame_type(depth_mm: float | None) -> Dataset:
    item = Dataset()
    item.FrameType = list(IMAGE_TYPE)
    if depth_mm is not None:
        item.ImageAcquisitionDepth = depth_mm
    return item


def _add_functional_groups(
    ds: Dataset,
    job: WrapJob,
    stack: ConfocalStack,
    acquired: datetime,
    laterality: Laterality | None,
) -> None:
    shared = Dataset()
    measures = Dataset()
    spacing_mm = format_number_as_ds(stack.pixel_spacing_um / _UM_PER_MM)
    measures.PixelSpacing = [spacing_mm, spacing_mm]
    if stack.kind == "z-stack" and stack.z_step_um > 0:
        measures.SpacingBetweenSlices = format_number_as_ds(stack.z_step_um / _UM_PER_MM)
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.FrameAnatomySequence = Sequence([_frame_anatomy(job, laterality)])
    identification = Dataset()
    identification.OpticalPathIdentifier = OPTICAL_PATH_ID
    shared.OpticalPathIdentificationSequence = Sequence([identification])
    if stack.kind == "mosaic":
        shared.ConfocalMicroscopyImageFrameTypeSequence = Sequence([_frame_type(None)])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        return  # TILED_FULL: the tile order places every frame; no per-frame groups
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames: list[Dataset] = []
    when = dt(acquired)
    for index, depth_um in enumerate(stack.depths_um):
        item = Dataset()
        content = Dataset()
        content.FrameAcquisitionDateTime = when
        content.StackID = "1"
        content.InStackPositionNumber = index + 1
        content.DimensionIndexValues = [index + 1]
        content.FrameLabel = f"depth {depth_um:g} um"
        item.FrameContentSequence = Sequence([content])
        item.ConfocalMicroscopyImageFrameTypeSequence = Sequence(
            [_frame_type(depth_um / _UM_PER_MM)]
        )
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)


def _frame_anatomy(job: WrapJob, laterality: Laterality | None) -> Dataset:
    anatomy = Dataset()
    site = dermatology_site(job.offer.anatomic_site) if job.offer.anatomic_site else None
    region = _code(site.value, site.scheme_designator, site.meaning) if site else _code(*_SKIN)
    anatomy.AnatomicRegionSequence = Sequence([region])
    anatomy.FrameLaterality = laterality.value if laterality is not None else "U"
    return anatomy


def _add_dimensions(ds: Dataset, stack: ConfocalStack, sop_instance_uid: str) -> None:
    """Multi-frame Dimension Module."""
    organization = derived_uid("dimension-organization", sop_instance_uid)
    org = Dataset()
    org.DimensionOrganizationUID = organization
    ds.DimensionOrganizationSequence = Sequence([org])
    indices: list[Dataset] = []
    if stack.kind == "z-stack":
        ds.DimensionOrganizationType = "3D"
        pointers = [(0x00209057, 0x00209111, "In-Stack Position")]
    else:
        ds.DimensionOrganizationType = "TILED_FULL"
        pointers = [
            (0x0048021F, 0x0048021A, "Row Position In Total Image Pixel Matrix"),
            (0x0048021E, 0x0048021A, "Column Position In Total Image Pixel Matrix"),
        ]
    for pointer, group, label in pointers:
        index = Dataset()
        index.DimensionOrganizationUID = organization
        index.DimensionIndexPointer = pointer
        index.FunctionalGroupPointer = group
        index.DimensionDescriptionLabel = label
        indices.append(index)
    ds.DimensionIndexSequence = Sequence(indices)


def _add_tile_organization(ds: Dataset, stack: ConfocalStack) -> None:
    """Total pixel matrix of a single-level TILED_FULL pyramid."""
    ds.TotalPixelMatrixRows = stack.rows * stack.tile_rows
    ds.TotalPixelMatrixColumns = stack.columns * stack.tile_columns
    ds.TotalPixelMatrixFocalPlanes = 1


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(DERMGATE_IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


# --- the file ------------------------------------------------------------------------


def pixel_data_header(stack: ConfocalStack) -> bytes:
    """The Pixel Data element header: OB (8-bit) or OW (16-bit), explicit even length."""
    length = stack.pixel_bytes + (stack.pixel_bytes & 1)
    vr = b"OB" if stack.bits == 8 else b"OW"
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, vr, 0, length)


def write_confocal(job: WrapJob, dest: Path) -> WrittenObject:
    """Write a confocal z-stack or mosaic from its raw pixel stream (blocking).

    Raises WrapError for a capture DICOM cannot carry (description missing or
    contradictory, more than 0xFFFFFFFE bytes of pixels, a file whose size is not
    what the geometry says) and OSError for I/O trouble; ``dest`` appears only
    complete and durable.
    """
    stack = ConfocalStack.from_extra(job.offer.extra)
    with job.source.open("rb") as src:
        size = os.fstat(src.fileno()).st_size
        if size != stack.pixel_bytes:
            raise WrapError(
                f"the confocal capture has {size} bytes of pixels but its geometry "
                f"({stack.frames} frames of {stack.columns}x{stack.rows}, {stack.bits}-bit) "
                f"needs {stack.pixel_bytes}; the capture is kept and quarantined"
            )
        dataset = build_confocal(job, stack)
        header = io.BytesIO()
        dcmwrite(header, dataset, enforce_file_format=True)
        with atomic_writer(dest) as out:
            out.write(header.getvalue())
            out.write(pixel_data_header(stack))
            copied = copy_stream(src, out, chunk_size=_CHUNK)
            if copied != size:
                raise OSError(f"pixel source changed size while being copied ({copied})")
            if size & 1:
                out.write(b"\x00")
    return WrittenObject(
        sop_class_uid=str(dataset.SOPClassUID), transfer_syntax_uid=str(ExplicitVRLittleEndian)
    )
