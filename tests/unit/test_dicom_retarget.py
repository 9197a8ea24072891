"""Moving a written, unsent object to another session (gateway.dicom.retarget).

The rewritten file must be exactly the file the wrapping stage writes for the same
capture with the new context and UIDs — byte for byte, for every IOD — while its
pixel data is streamed, not loaded.
"""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from gateway.core.capture import InstanceUIDs
from gateway.core.uids import new_uid
from gateway.dicom.retarget import retarget
from gateway.dicom.writers import write_capture
from tests.support import confocal_stacks as cs
from tests.support.capture_contexts import (
    CONTEXT,
    KINDS,
    UNSCHEDULED,
    base_job,
    with_context,
)


@pytest.mark.parametrize("kind", KINDS)
def test_a_held_capture_assigned_to_a_patient_is_the_object_wrapped_for_that_patient(
    tmp_path: Path, kind: str
) -> None:
    held = base_job(kind, tmp_path / "capture")
    write_capture(held, tmp_path / "held.dcm")
    assigned = with_context(held, CONTEXT)
    write_capture(assigned, tmp_path / "expected.dcm")

    written = retarget(tmp_path / "held.dcm", tmp_path / "moved.dcm", assigned)

    assert (tmp_path / "moved.dcm").read_bytes() == (tmp_path / "expected.dcm").read_bytes()
    ds = pydicom.dcmread(tmp_path / "moved.dcm", stop_before_pixels=True)
    assert ds.SOPInstanceUID == held.uids.sop_instance
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID) == (
        assigned.uids.study,
        assigned.uids.series,
    )
    assert written.sop_class_uid == ds.SOPClassUID


@pytest.mark.parametrize("kind", KINDS)
def test_a_capture_moved_between_sessions_keeps_nothing_of_the_first(
    tmp_path: Path, kind: str
) -> None:
    capture = base_job(kind, tmp_path / "capture")
    first = with_context(capture, CONTEXT)
    write_capture(first, tmp_path / "first.dcm")
    second = with_context(capture, UNSCHEDULED)
    write_capture(second, tmp_path / "expected.dcm")

    retarget(tmp_path / "first.dcm", tmp_path / "moved.dcm", second, previous=CONTEXT)

    assert (tmp_path / "moved.dcm").read_bytes() == (tmp_path / "expected.dcm").read_bytes()


def test_a_gigabyte_class_confocal_stack_is_rewritten_with_flat_memory(tmp_path: Path) -> None:
    stack = cs.make_stack("z-stack", frames=96, size=512)  # 96 frames, 26 MB of pixels
    frames = cs.frames_of(stack)
    job = cs.job_for(tmp_path, stack, frames)
    write_capture(job, tmp_path / "held.dcm")
    (tmp_path / "capture.raw").unlink()  # the raw capture is gone; only the object is left
    assigned = with_context(job, CONTEXT)

    tracemalloc.start()
    try:
        retarget(tmp_path / "held.dcm", tmp_path / "held.dcm", assigned)  # in place
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 4 << 20, f"peak {peak} bytes for {stack.pixel_bytes} bytes of pixels"
    ds = pydicom.dcmread(tmp_path / "held.dcm")
    assert ds.PatientID == "PID0042"
    assert ds.AccessionNumber == "ACC0001"
    assert cs.written_frames(ds) == frames
    assert len(ds.PerFrameFunctionalGroupsSequence) == 96
    assert ds.TrackingUID == CONTEXT.lesion.tracking_uid  # type: ignore[union-attr]


def test_another_instances_file_is_refused_and_dest_untouched(tmp_path: Path) -> None:
    held = base_job("dermoscopy", tmp_path / "capture")
    write_capture(held, tmp_path / "held.dcm")
    (tmp_path / "dest.dcm").write_bytes(b"previous")
    stranger = replace(
        with_context(held, CONTEXT), uids=InstanceUIDs(CONTEXT.study_uid, new_uid(), new_uid())
    )
    with pytest.raises(ValueError, match="another instance"):
        retarget(tmp_path / "held.dcm", tmp_path / "dest.dcm", stranger)
    assert (tmp_path / "dest.dcm").read_bytes() == b"previous"
    with pytest.raises(ValueError, match="context"):
        retarget(tmp_path / "held.dcm", tmp_path / "dest.dcm", held)
    (tmp_path / "not.dcm").write_bytes(b"\xff\xd8\xff" + bytes(300))
    with pytest.raises(ValueError, match="not a DermGate object"):
        retarget(tmp_path / "not.dcm", tmp_path / "dest.dcm", with_context(held, CONTEXT))
    assert (tmp_path / "dest.dcm").read_bytes() == b"previous"
