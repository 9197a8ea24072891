"""A confocal capture as the device described it: the stack, its frames and tiles,
the limits, and the start every confocal object shares (8-bit IOD and 16-bit SC).

See docs/dicom/confocal.md for the standard's rules these follow.
"""

from __future__ import annotations

import base64
import binascii
import sys
from array import array
from collections.abc import Iterator
from collections.abc import Sequence as FrameValues
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, overload

from pydicom.dataset import Dataset
from pydicom.uid import (
    ConfocalMicroscopyImageStorage,
    ConfocalMicroscopyTiledPyramidalImageStorage,
)

from gateway.core.capture import Laterality
from gateway.core.patient import ObjectPatient, object_patient
from gateway.dicom.errors import WrapError
from gateway.dicom.job import WrapJob
from gateway.dicom.modules import (
    in_zone_of,
    new_instance,
)

__all__ = [
    "BITS",
    "CONFOCAL_IMAGE_SOP_CLASS",
    "CONFOCAL_TILED_SOP_CLASS",
    "MAX_FRAMES",
    "MAX_PIXEL_BYTES",
    "MODALITY",
    "ConfocalStack",
    "RowMajorTiles",
    "job_patient",
    "start_instance",
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
#: Largest total pixel matrix side: the tile positions in it are SL (signed 32 bits).
_MAX_MATRIX: Final = 0x7FFFFFFF
#: Bits Allocated = Bits Stored (High Bit 7): PS3.3 C.8.35.1 defers to C.8.12.1.1.2.
BITS: Final = 8

Kind = Literal["z-stack", "mosaic"]


@dataclass(frozen=True, slots=True)
class ConfocalStack:
    """Geometry and per-frame positions of one confocal capture (``offer.extra``).

    ``depths_um`` has one depth below the skin surface (µm) per frame of a z-stack,
    kept as an ``array('d')`` (8 bytes a frame, not a Python float object each);
    ``tiles`` one (row, column) grid position per tile of a mosaic, from 0, in the
    order the frames are stored (:class:`RowMajorTiles` for the usual full grid sent
    row by row: nothing stored per tile, written TILED_FULL; any other order or part
    of the grid is written TILED_SPARSE, each tile at its place). Serialises to and
    from JSON-compatible dicts, the depths as one base64 string of little-endian
    doubles (see :meth:`to_extra`).
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
            problems.extend(self._tile_problems())
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

    @property
    def full_grid(self) -> bool:
        """Is this a mosaic whose tiles fill the grid row by row (TILED_FULL)?"""
        return self.kind == "mosaic" and isinstance(self.tiles, RowMajorTiles)

    def _tile_problems(self) -> list[str]:
        """A mosaic's tiles: the full grid row by row, or each at its own grid place.

        Tiles in any other order, or only some of the grid, are placed one by one
        (TILED_SPARSE with Plane Position (Slide) per frame, see
        :mod:`gateway.dicom.confocal`); a tile outside the grid or two tiles at one
        place cannot be.
        """
        if not (
            0 < self.tile_rows * self.rows <= _MAX_MATRIX
            and 0 < self.tile_columns * self.columns <= _MAX_MATRIX
        ):  # Row / Column Position In Total Image Pixel Matrix are SL
            return [f"a {self.tile_rows}x{self.tile_columns} tile grid"]
        if self.full_grid:
            if len(self.tiles) != self.frames:
                return [f"a {self.tile_rows}x{self.tile_columns} tile grid for {self.frames} tiles"]
            return []
        if len(self.tiles) != self.frames:
            return [f"{len(self.tiles)} tile positions for {self.frames} tiles"]
        if any(
            not (0 <= row < self.tile_rows and 0 <= column < self.tile_columns)
            for row, column in self.tiles
        ):
            return [f"a tile outside the {self.tile_rows}x{self.tile_columns} grid"]
        if len(set(self.tiles)) != len(self.tiles):
            return ["two tiles at the same grid position"]
        return []


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
