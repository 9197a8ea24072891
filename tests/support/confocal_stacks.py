"""Confocal stacks for tests: their description, random frames and the job that wraps them."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

from pydicom.dataset import Dataset

from gateway.core.capture import (
    CaptureOffer,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
)
from gateway.core.uids import new_uid
from gateway.dicom.confocal import ConfocalStack
from gateway.dicom.job import WrapJob

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IDENTITY = DeviceIdentity(
    manufacturer="DermGate Reference Devices",
    model="RCM-1 Confocal",
    serial_number="RCM1-0042",
    software_versions=("3.1.0",),
    device_class=DeviceClass.CONFOCAL_MICROSCOPE,
)
GATEWAY = GatewayIdentity(gateway_id="test-box-01", software_version="0.1.0")


def make_stack(
    kind: str = "z-stack", *, frames: int = 5, size: int = 64, bits: int = 8, grid: int = 2
) -> ConfocalStack:
    """A z-stack (``frames`` deep) or a ``grid`` x ``grid`` mosaic, as the device describes it."""
    if kind == "mosaic":
        return ConfocalStack(
            kind="mosaic",
            frames=grid * grid,
            rows=size,
            columns=size,
            bits=bits,
            pixel_spacing_um=1.5,
            wavelength_nm=830,
            objective="30x/0.9 water",
            magnification=30.0,
            tile_rows=grid,
            tile_columns=grid,
            tiles=tuple((r, c) for r in range(grid) for c in range(grid)),
        )
    return ConfocalStack(
        kind="z-stack",
        frames=frames,
        rows=size,
        columns=size + 8,
        bits=bits,
        pixel_spacing_um=0.5,
        z_step_um=4.0,
        wavelength_nm=830,
        objective="30x/0.9 water",
        magnification=30.0,
        numerical_aperture=0.9,
        depths_um=tuple(4.0 * i for i in range(frames)),
        frame_ms=111.0,
    )


def frames_of(stack: ConfocalStack, seed: int = 1) -> list[bytes]:
    """Random frames of the right size for ``stack`` (the same for the same ``seed``)."""
    rng = random.Random(seed)
    return [rng.randbytes(stack.frame_bytes) for _ in range(stack.frames)]


def job_for(
    tmp_path: Path,
    stack: ConfocalStack,
    frames: list[bytes],
    **offer_fields: object,
) -> WrapJob:
    """The wrap job for ``frames`` of ``stack``, its raw file written under ``tmp_path``."""
    source = tmp_path / "capture.raw"
    source.write_bytes(b"".join(frames))
    offer = CaptureOffer(
        device_capture_id="S000001",
        acquired_at=datetime(2026, 11, 30, 10, 15, 0),
        length=stack.pixel_bytes,
        content_type=ContentType.PIXELS,
        extra=stack.to_extra(),
        **offer_fields,  # type: ignore[arg-type]
    )
    uids = InstanceUIDs(study=new_uid(), series=new_uid(), sop_instance=new_uid())
    return WrapJob(IDENTITY, offer, uids, source, GATEWAY, datetime.now(UTC).astimezone())


def written_frames(ds: Dataset) -> list[bytes]:
    """The frames of a written object's Pixel Data, in order."""
    data = ds.PixelData
    size = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8
    return [data[i * size : (i + 1) * size] for i in range(int(ds.NumberOfFrames))]
