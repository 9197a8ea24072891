"""The dermatoscope, capture and builder calls the Dermoscopic Photography tests share.

``build`` runs the builder with these defaults (any keyword replaced); ``wrap`` also
writes the Part 10 file and reads it back.
"""

from __future__ import annotations

import io
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments

from gateway.core.capture import (
    CaptureOffer,
    ContactMethod,
    DermoscopySettings,
    DeviceIdentity,
    GatewayIdentity,
    ImmersionMedium,
    InstanceUIDs,
    Laterality,
    Polarization,
)
from gateway.core.uids import (
    new_uid,
)
from gateway.dicom.dermoscopy import build_dermoscopic_photography
from gateway.dicom.jpeg import JpegInfo, read_jpeg_info
from gateway.dicom.part10 import write_part10_encapsulated

SKIN_OF_OCCIPITAL_REGION = "79951008"


CET = timezone(timedelta(hours=1))


NOW = datetime(2025, 3, 4, 10, 30, 0, tzinfo=CET)


IDENTITY = DeviceIdentity(
    manufacturer="Acme Optics",
    model="DermaScope 3",
    serial_number="DS3-000123",
    software_versions=("fw 2.4.1",),
)


GATEWAY = GatewayIdentity(gateway_id="gw-0042", software_version="0.1.0", station_name="DERMGATE42")


CONTACT_WATER = DermoscopySettings(
    polarization=Polarization.POLARIZED,
    contact=ContactMethod.CONTACT,
    immersion=ImmersionMedium.WATER,
    magnification=10.0,
    color_temperature_k=4500,
)


OFFER = CaptureOffer(
    device_capture_id="cap-1",
    acquired_at=datetime(2025, 3, 4, 10, 12, 33, tzinfo=CET),
    settings=CONTACT_WATER,
    anatomic_site=SKIN_OF_OCCIPITAL_REGION,
    laterality=Laterality.LEFT,
    lesion_id="L-07",
)


UIDS = InstanceUIDs(study=new_uid(), series=new_uid(), sop_instance=new_uid())


def make_jpeg(
    path: Path,
    *,
    subsampling: int = 2,
    progressive: bool = False,
    mode: str = "RGB",
    size: tuple[int, int] = (96, 64),
    comment: bytes = b"",
    seed: int = 1,
) -> Path:
    """A noisy test JPEG written by Pillow (4:2:0 by default)."""
    rnd = random.Random(seed)
    bands = len(mode)
    noise = bytes(rnd.randrange(256) for _ in range(size[0] * size[1] * bands))
    image = Image.frombytes(mode, size, noise)
    options: dict[str, object] = {"quality": 90, "progressive": progressive}
    if mode != "L":
        options["subsampling"] = subsampling
    if comment:
        options["comment"] = comment
    image.save(path, "JPEG", **options)
    return path


def build(jpeg: JpegInfo, **overrides: object) -> Dataset:
    """The builder with the module defaults, any keyword replaced."""
    kwargs: dict[str, object] = {
        "identity": IDENTITY,
        "offer": OFFER,
        "uids": UIDS,
        "jpeg": jpeg,
        "gateway": GATEWAY,
        "patient": None,
        "now": NOW,
    }
    kwargs.update(overrides)
    return build_dermoscopic_photography(**kwargs)  # type: ignore[arg-type]


def wrap(tmp_path: Path, jpeg_path: Path, **overrides: object) -> tuple[Path, Dataset]:
    """Build and write a Part 10 file; return its path and the file read back."""
    ds = build(read_jpeg_info(jpeg_path), **overrides)
    dest = tmp_path / "out.dcm"
    written = write_part10_encapsulated(ds, jpeg_path, dest)
    assert written == dest.stat().st_size
    return dest, pydicom.dcmread(dest)


def single_fragment(ds: Dataset) -> bytes:
    """The one fragment after the (empty) Basic Offset Table item."""
    offset_table, *fragments = generate_fragments(ds.PixelData)
    assert offset_table == b""
    assert len(fragments) == 1
    return fragments[0]


#: A small valid baseline JPEG (4:2:0), in memory.
VALID_JPEG = io.BytesIO()
Image.new("RGB", (16, 16), (200, 120, 90)).save(VALID_JPEG, "JPEG", quality=90, subsampling=2)
