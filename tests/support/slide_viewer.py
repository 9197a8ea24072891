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


def total_pixel_matrix(ds: Dataset) -> NDArray[np.float64]:
    """The whole mosaic as highdicom assembles it from the tiles."""
    image = highdicom.Image.from_dataset(_as_whole_slide(ds), copy=False)
    return np.asarray(image.get_total_pixel_matrix(), dtype=np.float64)


def stitched(frames: list[bytes], rows: int, columns: int, grid_columns: int) -> NDArray[np.uint8]:
    """The device's tiles laid out row by row (the layout the protocol promises)."""
    grid_rows = len(frames) // grid_columns
    matrix = np.zeros((grid_rows * rows, grid_columns * columns), dtype=np.uint8)
    for n, frame in enumerate(frames):
        r, c = divmod(n, grid_columns)
        tile = np.frombuffer(frame, dtype=np.uint8).reshape(rows, columns)
        matrix[r * rows : (r + 1) * rows, c * columns : (c + 1) * columns] = tile
    return matrix
