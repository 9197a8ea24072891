"""A confocal mosaic opens in a real whole-slide reader with every tile in its place.

Whole-slide viewers (dicom-microscopy-viewer, highdicom) place the frames of a
TILED_FULL image from Total Pixel Matrix Origin Sequence and Image Orientation
(Slide), which they read without checking they exist: without them the mosaic does
not open at all. See tests/support/slide_viewer.py for the one liberty taken.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from gateway.dicom.confocal import RowMajorTiles, write_confocal
from tests.support.confocal_iod import iod_errors
from tests.support.confocal_stacks import frames_of, job_for, make_stack
from tests.support.slide_viewer import (
    TilePlacement,
    stitched,
    tile_placements,
    total_pixel_matrix,
)


@pytest.mark.parametrize(("grid_rows", "grid_columns"), [(2, 3), (3, 1), (1, 1)])
def test_viewer_puts_every_tile_where_the_device_took_it(
    tmp_path: Path, grid_rows: int, grid_columns: int
) -> None:
    """Tiles 16 rows x 24 columns (not square, so a transposition shows), row by row."""
    stack = replace(
        make_stack("mosaic"),
        rows=16,
        columns=24,
        frames=grid_rows * grid_columns,
        tile_rows=grid_rows,
        tile_columns=grid_columns,
        tiles=RowMajorTiles(grid_rows, grid_columns),
    )
    frames = frames_of(stack, seed=grid_rows * 10 + grid_columns)
    write_confocal(job_for(tmp_path, stack, frames), tmp_path / "mosaic.dcm")
    ds = pydicom.dcmread(tmp_path / "mosaic.dcm")
    assert iod_errors(ds) == []

    spacing_mm = stack.pixel_spacing_um / 1000
    expected = [
        TilePlacement(
            frame=n + 1,
            column=c * 24 + 1,
            row=r * 16 + 1,
            x_mm=pytest.approx(c * 24 * spacing_mm),  # type: ignore[arg-type]
            y_mm=pytest.approx(r * 16 * spacing_mm),  # type: ignore[arg-type]
        )
        for n, (r, c) in enumerate(RowMajorTiles(grid_rows, grid_columns))
    ]
    assert tile_placements(ds) == expected

    shown = total_pixel_matrix(ds)
    assert shown.shape == (grid_rows * 16, grid_columns * 24)
    assert np.array_equal(shown, stitched(frames, 16, 24, grid_columns)), "the mosaic as taken"


def test_without_origin_and_orientation_the_viewer_cannot_open_it(tmp_path: Path) -> None:
    """What 8-bit mosaics were before: the reader fails on the missing attributes."""
    stack = make_stack("mosaic", size=8)
    write_confocal(job_for(tmp_path, stack, frames_of(stack)), tmp_path / "mosaic.dcm")
    ds = pydicom.dcmread(tmp_path / "mosaic.dcm")
    del ds.TotalPixelMatrixOriginSequence
    del ds.ImageOrientationSlide
    assert "Total Pixel Matrix Origin" in " ".join(iod_errors(ds))
    with pytest.raises(AttributeError):
        tile_placements(ds)


def _sparse(tmp_path: Path, tiles: tuple[tuple[int, int], ...]) -> tuple[Dataset, list[bytes]]:
    stack = replace(
        make_stack("mosaic"),
        rows=16,
        columns=24,
        frames=len(tiles),
        tile_rows=2,
        tile_columns=3,
        tiles=tiles,
    )
    frames = frames_of(stack, seed=len(tiles))
    write_confocal(job_for(tmp_path, stack, frames), tmp_path / "mosaic.dcm")
    ds = pydicom.dcmread(tmp_path / "mosaic.dcm")
    assert iod_errors(ds) == []
    assert ds.DimensionOrganizationType == "TILED_SPARSE"
    return ds, frames


def test_tiles_in_serpentine_order_are_placed_one_by_one(tmp_path: Path) -> None:
    """Not row by row: each frame says where it lies (Plane Position (Slide))."""
    serpentine = ((0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0))
    ds, frames = _sparse(tmp_path, serpentine)
    positions = [item.PlanePositionSlideSequence[0] for item in ds.PerFrameFunctionalGroupsSequence]
    assert [
        (p.RowPositionInTotalImagePixelMatrix, p.ColumnPositionInTotalImagePixelMatrix)
        for p in positions
    ] == [(1, 1), (1, 25), (1, 49), (17, 49), (17, 25), (17, 1)]
    assert [float(p.XOffsetInSlideCoordinateSystem) for p in positions][:3] == [0, 0.036, 0.072]
    assert np.array_equal(total_pixel_matrix(ds), stitched(frames, 16, 24, 3, serpentine))


def test_a_partial_grid_shows_its_tiles_and_knows_the_missing_one(tmp_path: Path) -> None:
    tiles = ((0, 0), (0, 1), (0, 2), (1, 2), (1, 1))  # the bottom left tile never taken
    ds, frames = _sparse(tmp_path, tiles)
    expected = stitched(frames, 16, 24, 3, tiles, grid_rows=2)
    assert (ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns) == (32, 72)
    assert np.array_equal(total_pixel_matrix(ds, rows=(1, 17)), expected[:16])
    assert np.array_equal(
        total_pixel_matrix(ds, rows=(17, 33), columns=(25, 73)), expected[16:, 24:]
    )
    with pytest.raises(RuntimeError, match="missing"):
        total_pixel_matrix(ds)  # not drawn somewhere else
