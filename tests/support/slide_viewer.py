"""A real whole-slide reader (highdicom) placing the tiles of a confocal mosaic.

highdicom, like dicom-microscopy-viewer, builds the total pixel matrix of a
TILED_FULL image from Total Pixel Matrix Columns/Rows, Total Pixel Matrix Origin
Sequence, Image Orientation (Slide), Rows/Columns and the shared Pixel Spacing,
reading them without checking they exist. It accepts only the classes it knows to
be tiled (VL Whole Slide Microscopy, Segmentation, Parametric Map): PS3.17 BBBBB.7
says the Confocal Microscopy Tiled Pyramidal image "replicates the method used for
whole slide microscopy imaging", so the object is handed over as it is, with only
its SOP Class UID said to be Whole Slide. Nothing else is changed or added.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom
import numpy as np
from highdicom.spatial import iter_tiled_full_frame_data
from numpy.typing import NDArray
from pydicom.dataset import Dataset

WHOLE_SLIDE: str = "1.2.840.10008.5.1.4.1.1.77.1.6"


@dataclass(frozen=True)
class TilePlacement:
    """Where the reader puts one frame: 1-based pixel position and slide position (mm)."""

    frame: int
    column: int
    row: int
    x_mm: float
    y_mm: float


def _as_whole_slide(ds: Dataset) -> Dataset:
    shown = copy.deepcopy(ds)
    shown.SOPClassUID = WHOLE_SLIDE
    return shown


def tile_placements(ds: Dataset) -> list[TilePlacement]:
    """The position highdicom gives each frame of ``ds`` (in frame order)."""
    return [
        TilePlacement(frame, column, row, x, y)
        for frame, (_path, _plane, column, row, x, y, _z) in enumerate(
            iter_tiled_full_frame_data(_as_whole_slide(ds)), start=1
        )
    ]


def total_pixel_matrix(
    ds: Dataset, rows: tuple[int, int] | None = None, columns: tuple[int, int] | None = None
) -> NDArray[np.float64]:
    """The mosaic (or the region of 1-based, end-exclusive ``rows`` / ``columns``) as
    highdicom assembles it from the tiles; RuntimeError if a tile there is missing."""
    image = highdicom.Image.from_dataset(_as_whole_slide(ds), copy=False)
    row_start, row_end = rows or (None, None)
    column_start, column_end = columns or (None, None)
    matrix = image.get_total_pixel_matrix(
        row_start=row_start, row_end=row_end, column_start=column_start, column_end=column_end
    )
    return np.asarray(matrix, dtype=np.float64)


def stitched(
    frames: list[bytes],
    rows: int,
    columns: int,
    grid_columns: int,
    tiles: Sequence[tuple[int, int]] | None = None,
    grid_rows: int | None = None,
) -> NDArray[np.uint8]:
    """The device's tiles laid out at their grid places (row by row when ``tiles`` is
    not given: the layout the USB protocol promises); places without a tile are 0."""
    places = (
        list(tiles) if tiles is not None else [divmod(n, grid_columns) for n in range(len(frames))]
    )
    height = grid_rows if grid_rows is not None else max(r for r, _ in places) + 1
    matrix = np.zeros((height * rows, grid_columns * columns), dtype=np.uint8)
    for frame, (r, c) in zip(frames, places, strict=True):
        tile = np.frombuffer(frame, dtype=np.uint8).reshape(rows, columns)
        matrix[r * rows : (r + 1) * rows, c * columns : (c + 1) * columns] = tile
    return matrix
