"""16-bit confocal stacks as Word Secondary Capture, in process: what cannot be one
object is refused with a reason, and memory stays flat while writing. The objects
checked with dciodvfy are in ``tests/e2e/test_dicom_confocal_sc.py``.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from gateway.dicom.confocal import write_confocal
from gateway.dicom.confocal_sc import sc_stack
from gateway.dicom.errors import WrapError
from tests.support.confocal_stacks import frames_of, job_for, make_stack


def test_what_cannot_be_one_object_is_refused_with_a_reason(tmp_path: Path) -> None:
    stack = make_stack(bits=16)
    # the file is not what the geometry says
    job = job_for(tmp_path, stack, [*frames_of(stack)[:-1], b"\0"])
    with pytest.raises(WrapError, match="bytes of pixels"):
        write_confocal(job, tmp_path / "out.dcm")
    assert not (tmp_path / "out.dcm").exists()
    # over 0xFFFFFFFE bytes at 16 bits (fine at 8: the size is checked with the real bits)
    big = replace(stack, frames=2100, rows=1024, columns=1024, depths_um=(1.0,) * 2100)
    with pytest.raises(WrapError, match="more than one DICOM object can hold"):
        sc_stack(big.to_extra())
    # more depth values than a DS element can hold
    many = replace(stack, frames=9000, rows=1, columns=1, depths_um=(123.456789,) * 9000)
    job = job_for(tmp_path, many, [b"\0\0"] * 9000)
    with pytest.raises(WrapError, match="too many frame depths"):
        write_confocal(job, tmp_path / "out.dcm")
    assert not (tmp_path / "out.dcm").exists()
    # the geometry rules of the 8-bit path apply too
    mosaic = make_stack("mosaic", bits=16)
    with pytest.raises(WrapError, match="two tiles at the same grid position"):
        sc_stack(replace(mosaic, tiles=((0, 0),) * 4).to_extra())
    with pytest.raises(WrapError, match="not a 16-bit stack"):
        sc_stack(make_stack(bits=8).to_extra())


def test_memory_stays_flat_while_writing(tmp_path: Path) -> None:
    """A 64 MB 16-bit stack is read twice (range, copy) with a few MB of Python memory."""
    stack = replace(make_stack(bits=16, frames=32, size=1024), columns=1024)
    source = [hashlib.sha256(bytes([i])).digest() * (stack.frame_bytes // 32) for i in range(32)]
    job = job_for(tmp_path, stack, source)
    digest = hashlib.sha256(b"".join(source)).hexdigest()
    del source
    tracemalloc.start()
    try:
        write_confocal(job, tmp_path / "out.dcm")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes"
    ds = pydicom.dcmread(tmp_path / "out.dcm")
    assert hashlib.sha256(ds.PixelData).hexdigest() == digest


def test_frame_times_that_do_not_fit_are_left_out_not_the_stack(tmp_path: Path) -> None:
    """6000 depths fit one DS element; 6000 times of 33.3333333333 ms do not: the stack
    is still written, ordered by depth, without the (extra) Cine timing."""
    stack = replace(
        make_stack(bits=16, frames=6000, size=1),
        columns=1,
        depths_um=(1.0,) * 6000,
        frame_ms=100 / 3,
    )
    write_confocal(job_for(tmp_path, stack, [b"\1\0"] * 6000), tmp_path / "out.dcm")
    ds = pydicom.dcmread(tmp_path / "out.dcm")
    assert ds.FrameIncrementPointer == 0x00182005
    assert len(ds.SliceLocationVector) == 6000
    assert "FrameTimeVector" not in ds
    short = replace(stack, frame_ms=40.0)
    write_confocal(job_for(tmp_path, short, [b"\1\0"] * 6000), tmp_path / "short.dcm")
    ds = pydicom.dcmread(tmp_path / "short.dcm")
    assert len(ds.FrameTimeVector) == 6000, "40.0 ms fits: 6000 frame times"


def test_a_tile_label_longer_than_dicom_allows_is_refused(tmp_path: Path) -> None:
    """Frame Label Vector is SH (16 characters): "r123456789c12345" fits, one more does not."""
    mosaic = make_stack("mosaic", bits=16, size=1)
    fits = replace(
        mosaic, tile_rows=123456789, tile_columns=12345, frames=1, tiles=((123456788, 12344),)
    )
    write_confocal(job_for(tmp_path, fits, [b"\0\0"]), tmp_path / "fits.dcm")
    two = replace(fits, frames=2, tiles=((123456788, 12344), (0, 0)))
    write_confocal(job_for(tmp_path, two, [b"\0\0"] * 2), tmp_path / "two.dcm")
    assert pydicom.dcmread(tmp_path / "two.dcm").FrameLabelVector[0] == "r123456789c12345"
    longer = replace(two, tile_columns=123456, tiles=((123456788, 123455), (0, 0)))
    with pytest.raises(WrapError, match="too long for a DICOM frame label"):
        write_confocal(job_for(tmp_path, longer, [b"\0\0"] * 2), tmp_path / "long.dcm")
