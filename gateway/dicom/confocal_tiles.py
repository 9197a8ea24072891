"""Where the tiles of a confocal mosaic lie: the tile organisation of …77.1.9.

A mosaic is one pyramid level in its own coordinate system (an in-vivo mosaic has
no glass slide; see docs/dicom/confocal.md): pixel 1\\1 of the total pixel matrix
is the origin, rows run along +X and columns along +Y. Tiles that fill the grid row
by row are placed by their order alone (``TILED_FULL``, C.7.6.17.3); tiles in any
other order, or only part of the grid, are ``TILED_SPARSE``: each frame says where
it lies in a Plane Position (Slide) functional group (C.8.12.6.1), which Table
A.90.2.5-1 requires when the Frame of Reference is the slide coordinate system,
and the two positions are the dimensions (Row, then Column Position In Total Image
Pixel Matrix). :mod:`gateway.dicom.confocal` writes the rest of the object.
"""

from __future__ import annotations

from typing import Final

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.valuerep import format_number_as_ds

from gateway.dicom.confocal_stack import ConfocalStack
from gateway.dicom.elements import Element

__all__ = [
    "IMAGE_ORIENTATION_SLIDE",
    "add_tile_dimensions",
    "add_tile_organization",
    "tile_dimension_index",
    "tile_position",
]

#: Image Orientation (Slide) of a mosaic: rows along +X, columns along +Y.
IMAGE_ORIENTATION_SLIDE: Final = ("1", "0", "0", "0", "1", "0")
_UM_PER_MM: Final = 1000.0
_ROW_POSITION: Final = 0x0048021F  # Row Position In Total Image Pixel Matrix
_COLUMN_POSITION: Final = 0x0048021E  # Column Position In Total Image Pixel Matrix
_PLANE_POSITION_SLIDE: Final = 0x0048021A  # Plane Position (Slide) Sequence


def add_tile_organization(ds: Dataset, stack: ConfocalStack) -> None:
    """Total pixel matrix, its origin and orientation, and its extent in mm.

    Total Pixel Matrix Rows / Columns / Focal Planes, Total Pixel Matrix Origin
    Sequence (type 1 in C.8.12.14) and Image Orientation (Slide): whole-slide
    viewers place the tiles from these and read them without checking they exist.
    The origin (X = Y = Z = 0 at pixel 1\\1) and orientation are this mosaic's own
    coordinate system, identified by the object's Frame of Reference UID: true by
    construction, and silent about the position on the patient (Patient Orientation
    stays empty). Imaged Volume Width / Height are the matrix's extent; Imaged
    Volume Depth (optical section thickness) is not reported by the device and is
    left out rather than invented.
    """
    total_rows = stack.rows * stack.tile_rows
    total_columns = stack.columns * stack.tile_columns
    ds.ImagedVolumeWidth = total_columns * stack.pixel_spacing_um / _UM_PER_MM
    ds.ImagedVolumeHeight = total_rows * stack.pixel_spacing_um / _UM_PER_MM
    ds.TotalPixelMatrixColumns = total_columns
    ds.TotalPixelMatrixRows = total_rows
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = "0"
    origin.YOffsetInSlideCoordinateSystem = "0"
    origin.ZOffsetInSlideCoordinateSystem = "0"
    ds.TotalPixelMatrixOriginSequence = Sequence([origin])
    ds.ImageOrientationSlide = list(IMAGE_ORIENTATION_SLIDE)
    ds.TotalPixelMatrixFocalPlanes = 1


def add_tile_dimensions(ds: Dataset, stack: ConfocalStack, organization_uid: str) -> None:
    """Dimension Organization Type and, for TILED_SPARSE, the two position indices."""
    if stack.full_grid:
        # the frame order is the index: no per-frame groups to point into
        ds.DimensionOrganizationType = "TILED_FULL"
        return
    ds.DimensionOrganizationType = "TILED_SPARSE"
    indices = []
    for pointer, label in [(_ROW_POSITION, "Row Position"), (_COLUMN_POSITION, "Column Position")]:
        index = Dataset()
        index.DimensionOrganizationUID = organization_uid
        index.DimensionIndexPointer = pointer
        index.FunctionalGroupPointer = _PLANE_POSITION_SLIDE
        index.DimensionDescriptionLabel = label
        indices.append(index)
    ds.DimensionIndexSequence = Sequence(indices)


def tile_position(stack: ConfocalStack, row: int, column: int) -> list[Element]:
    """Plane Position (Slide) item of the tile at grid place (``row``, ``column``), from 0.

    The 1-based position of the tile's top left pixel in the total pixel matrix, and
    that pixel's place in the mosaic's coordinate system (mm; Z Offset in µm).
    """
    first_row = row * stack.rows
    first_column = column * stack.columns
    spacing_mm = stack.pixel_spacing_um / _UM_PER_MM
    return [
        (
            "XOffsetInSlideCoordinateSystem",
            format_number_as_ds(round(first_column * spacing_mm, 9)),
        ),
        ("YOffsetInSlideCoordinateSystem", format_number_as_ds(round(first_row * spacing_mm, 9))),
        ("ZOffsetInSlideCoordinateSystem", "0"),
        ("ColumnPositionInTotalImagePixelMatrix", first_column + 1),
        ("RowPositionInTotalImagePixelMatrix", first_row + 1),
    ]


def tile_dimension_index(row: int, column: int) -> list[int]:
    """Dimension Index Values of a tile: its grid row and column, from 1.

    Grid places are equally spaced in the total pixel matrix, so the n-th grid row
    is the n-th possible Row Position value (and so for columns).
    """
    return [row + 1, column + 1]
