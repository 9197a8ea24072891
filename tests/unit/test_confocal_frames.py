"""A confocal stack of many tiny frames, in process: ``max_frames`` is checked at
start-up, the streamed file is byte for byte the builder's data set, and older offers
still read (issue 11, item 4). The real ``dermgate run`` is in
``tests/e2e/test_confocal_frames.py``.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from pydicom.filewriter import dcmwrite

from gateway.dicom.confocal import (
    MAX_FRAMES,
    ConfocalStack,
    build_confocal,
    pixel_data_header,
    write_confocal,
)
from tests.support.confocal_iod import iod_errors
from tests.support.confocal_stacks import frames_of, job_for, make_stack


def test_max_frames_is_checked_at_start_up() -> None:
    from drivers.usb_confocal.driver import UsbConfocalOptions

    assert UsbConfocalOptions().max_frames == 10_000
    assert UsbConfocalOptions(max_frames=MAX_FRAMES).max_frames == MAX_FRAMES
    with pytest.raises(ValueError, match="max_frames"):
        UsbConfocalOptions(max_frames=MAX_FRAMES + 1)
    with pytest.raises(ValueError, match="max_frames"):
        UsbConfocalOptions(max_frames=0)


@pytest.mark.parametrize("frame_ms", [111.0, None], ids=["timed", "untimed"])
@pytest.mark.parametrize("kind", ["z-stack", "mosaic", "sparse mosaic"])
def test_streamed_file_is_byte_for_byte_the_builders_data_set(
    tmp_path: Path, kind: str, frame_ms: float | None
) -> None:
    """Normal stacks are written exactly as before: what pydicom writes for the
    whole in-memory data set, then the pixels (a sparse mosaic's per-frame Plane
    Position (Slide) items too)."""
    stack = replace(make_stack(kind.removeprefix("sparse "), frames=7), frame_ms=frame_ms)
    if kind == "sparse mosaic":
        stack = replace(stack, tiles=((1, 1), (0, 1), (1, 0)), frames=3)
    frames = frames_of(stack)
    job = job_for(tmp_path, stack, frames)
    write_confocal(job, tmp_path / "out.dcm")
    expected = io.BytesIO()
    dcmwrite(expected, build_confocal(job, ConfocalStack.from_extra(job.offer.extra)),
             enforce_file_format=True)  # fmt: skip
    expected.write(pixel_data_header(stack) + b"".join(frames))
    assert (tmp_path / "out.dcm").read_bytes() == expected.getvalue()
    assert iod_errors(pydicom.dcmread(tmp_path / "out.dcm")) == []


def test_old_offers_with_depth_and_tile_lists_are_still_read(tmp_path: Path) -> None:
    """Stacks spooled by an older version carry JSON lists of depths and tiles."""
    for kind in ("z-stack", "mosaic"):
        stack = make_stack(kind, frames=4)
        extra = stack.to_extra()
        if kind == "z-stack":
            del extra["depths_um_f64"]
            extra["depths_um"] = list(stack.depths_um)
        else:
            extra["tiles"] = [list(t) for t in stack.tiles]
        assert ConfocalStack.from_extra(extra) == stack
