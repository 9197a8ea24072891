"""Real Dermoscopic Photography files for tests that need something to send."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from gateway.core.capture import (
    CaptureOffer,
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
)
from gateway.core.uids import new_uid
from gateway.dicom.dermoscopy import build_dermoscopic_photography
from gateway.dicom.jpeg import read_jpeg_info
from gateway.dicom.part10 import write_part10_encapsulated

DEVICE = DeviceIdentity(
    manufacturer="DermGate Reference Devices",
    model="DS-100 Dermatoscope",
    serial_number="DS100-TEST",
    software_versions=("2.4.1",),
)
GATEWAY = GatewayIdentity(gateway_id="test-box", software_version="0.1.0", station_name="test")


def make_jpeg(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A small 4:2:0 JPEG, different per seed."""
    image = Image.effect_noise(size, 40 + seed % 50).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90, subsampling=2)
    return out.getvalue()


def make_dicom(folder: Path, seed: int) -> tuple[Path, InstanceUIDs]:
    """Write a valid Dermoscopic Photography Part 10 file; return it and its UIDs."""
    raw = folder / f"capture-{seed}.jpg"
    raw.write_bytes(make_jpeg(seed))
    uids = InstanceUIDs(study=new_uid(), series=new_uid(), sop_instance=new_uid())
    dataset = build_dermoscopic_photography(
        identity=DEVICE,
        offer=CaptureOffer(device_capture_id=f"{seed:06d}"),
        uids=uids,
        jpeg=read_jpeg_info(raw),
        gateway=GATEWAY,
        patient=None,
        now=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
    )
    dest = folder / f"{uids.sop_instance}.dcm"
    write_part10_encapsulated(dataset, raw, dest)
    return dest, uids
