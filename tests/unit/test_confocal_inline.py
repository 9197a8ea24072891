"""Written while it arrives: a confocal stack's or 3D model's file, begun at intake.

Intake streams these captures straight into their DICOM file (one write) instead of
spooling them raw for the wrapping stage to copy (issue 16). The file begun at intake
and completed at commit must be byte for byte the file the wrapping stage writes for
the same capture: same header, same per-frame groups, same pixels or document.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pydicom

from gateway.core.capture import CaptureOffer, ContentType
from gateway.dicom.confocal import ConfocalStack, write_confocal
from gateway.dicom.job import InlineStart, WrapJob
from gateway.dicom.surface import ModelRole, write_encapsulated_3d
from gateway.dicom.writers import begin_inline, may_write_inline
from tests.support.confocal_iod import iod_errors
from tests.support.confocal_stacks import frames_of, job_for, make_stack
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.surface_capture import MTL_LINK, surface_job, surface_links


def begin(job: WrapJob, offer: CaptureOffer, first: bytes) -> InlineStart | None:
    """What intake begins for ``offer`` (the device's first bytes ``first``)."""
    return begin_inline(
        identity=job.identity,
        offer=offer,
        uids=job.uids,
        jpeg=None,
        received=first,
        gateway=job.gateway,
        now=job.now,
        patient_spool_id=job.patient_spool_id,
        context=job.context,
    )


def stream(path: Path, begun: InlineStart, rest: bytes, final: CaptureOffer) -> bool:
    """Write the file as intake does: start, the reserved room, the rest, then finish."""
    with path.open("w+b") as out:
        out.write(begun.start)
        if begun.gap:
            out.seek(begun.gap, os.SEEK_CUR)
            out.write(begun.resume)
        out.write(rest)
        out.write(begun.end)
        return begun.finish is None or begun.finish(final, out)


def without_depths(offer: CaptureOffer) -> CaptureOffer:
    """The offer as the usb-confocal driver makes it when a stack starts: no depths yet."""
    extra = dict(offer.extra)
    extra.pop("depths_um_f64", None)
    return dataclasses.replace(offer, extra=extra)


def test_zstack_begun_at_intake_is_the_file_the_wrapper_writes(tmp_path: Path) -> None:
    stack = dataclasses.replace(
        make_stack(frames=7, size=32), depths_um=(3.5, 7.25, 11.0, 14.75, 18.5, 22.25, 1e-7)
    )
    frames = frames_of(stack)
    job = job_for(tmp_path, stack, frames)
    pixels = b"".join(frames)
    begun = begin(job, without_depths(job.offer), pixels[:100])
    assert begun is not None
    assert begun.gap > 0  # the per-frame groups are written at commit
    inline = tmp_path / "inline.dcm"
    assert stream(inline, begun, pixels[100:], job.offer)

    write_confocal(job, tmp_path / "wrapped.dcm")
    assert inline.read_bytes() == (tmp_path / "wrapped.dcm").read_bytes()
    ds = pydicom.dcmread(inline)
    labels = [
        item.FrameContentSequence[0].FrameLabel for item in ds.PerFrameFunctionalGroupsSequence
    ]
    assert labels[:2] == ["depth 3.5 um", "depth 7.25 um"]
    assert float(ds.ImageAcquisitionDepth) == 1e-7 / 1000
    assert iod_errors(ds) == []


def test_mosaic_begun_at_intake_is_the_file_the_wrapper_writes(tmp_path: Path) -> None:
    stack = make_stack("mosaic", size=16, grid=3)
    frames = frames_of(stack)
    job = job_for(tmp_path, stack, frames)
    begun_offer = dataclasses.replace(
        job.offer, extra={k: v for k, v in job.offer.extra.items() if k != "tiles"}
    )
    pixels = b"".join(frames)
    begun = begin(job, begun_offer, pixels[:10])
    assert begun is not None
    assert stream(tmp_path / "inline.dcm", begun, pixels[10:], job.offer)
    write_confocal(job, tmp_path / "wrapped.dcm")
    assert (tmp_path / "inline.dcm").read_bytes() == (tmp_path / "wrapped.dcm").read_bytes()


def test_a_final_offer_that_does_not_fit_the_reserved_room_is_refused(tmp_path: Path) -> None:
    stack = make_stack(frames=4, size=16)
    frames = frames_of(stack)
    job = job_for(tmp_path, stack, frames)
    pixels = b"".join(frames)
    begun = begin(job, without_depths(job.offer), pixels[:10])
    assert begun is not None
    three_depths = ConfocalStack.from_extra(job.offer.extra).to_extra()
    three_depths["depths_um_f64"] = dataclasses.replace(
        stack, frames=3, depths_um=(1.0, 2.0, 3.0)
    ).to_extra()["depths_um_f64"]
    final = dataclasses.replace(job.offer, extra=three_depths)
    path = tmp_path / "inline.dcm"
    assert not stream(path, begun, pixels[10:], final)
    # The device's bytes are intact where intake keeps them raw from.
    assert path.read_bytes()[begun.data_offset : begun.data_offset + len(pixels)] == pixels


def test_16bit_stacks_and_unknown_lengths_stay_on_the_raw_path(tmp_path: Path) -> None:
    stack = make_stack(frames=2, size=16)
    job = job_for(tmp_path, stack, frames_of(stack))
    assert may_write_inline(job.offer)
    sixteen = dataclasses.replace(job.offer, extra={**job.offer.extra, "bits": 16})
    assert not may_write_inline(sixteen)
    assert not may_write_inline(dataclasses.replace(job.offer, length=None))


def test_model_begun_at_intake_is_the_file_the_wrapper_writes(tmp_path: Path) -> None:
    data = b"mtllib body file.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"  # odd length
    job = surface_job(tmp_path, ContentType.OBJ, data, surface_links(ModelRole.MESH, (MTL_LINK,)))
    offer = dataclasses.replace(job.offer, length=len(data))
    assert may_write_inline(offer)
    begun = begin(job, offer, data[:7])
    assert begun is not None
    assert stream(tmp_path / "inline.dcm", begun, data[7:], offer)
    write_encapsulated_3d(job, tmp_path / "wrapped.dcm")
    assert (tmp_path / "inline.dcm").read_bytes() == (tmp_path / "wrapped.dcm").read_bytes()
    assert dciodvfy_errors(tmp_path / "inline.dcm") == []
    assert pydicom.dcmread(tmp_path / "inline.dcm").EncapsulatedDocument[: len(data)] == data
