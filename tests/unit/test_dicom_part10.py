"""The one Part 10 writer (gateway.dicom.part10) and the one writer choice
(gateway.dicom.writers), on their own.

Every builder's files are checked in its own test module; here: what the shared
writer promises whatever the IOD (a short source leaves nothing behind, attributes
after the streamed value land after it, what it refuses), and which object each
kind of capture becomes.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.core.capture import (
    CaptureOffer,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
)
from gateway.dicom.errors import NotAJpeg, WrapError
from gateway.dicom.job import WrapJob
from gateway.dicom.modules import new_instance
from gateway.dicom.part10 import StreamedValue, file_value, write_part10
from gateway.dicom.writers import (
    INLINE_HEADER_LIMIT,
    InlineHeader,
    begin_inline,
    may_write_inline,
    read_inline_header,
    write_capture,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
UIDS = InstanceUIDs("2.25.11", "2.25.12", "2.25.13")
GATEWAY = GatewayIdentity("gw-part10", "0.1.0")
ENCAPSULATED_DOCUMENT = 0x00420011


def identity(device_class: DeviceClass) -> DeviceIdentity:
    return DeviceIdentity("ACME", "M-1", "SN-1", ("1.0",), device_class)


def dataset(transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    ds = new_instance(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.104.1",
        uids=UIDS,
        modality="DOC",
        patient=None,
        acquired=NOW,
        now=NOW,
        transfer_syntax_uid=transfer_syntax,
    )
    ds.MIMETypeOfEncapsulatedDocument = "application/octet-stream"  # after (0042,0011)
    return ds


def jpeg_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 100, 50)).save(out, "JPEG", quality=90, subsampling=2)
    return out.getvalue()


def test_value_streamed_between_the_attributes_before_and_after_it(tmp_path: Path) -> None:
    source = tmp_path / "doc.bin"
    source.write_bytes(b"abc")  # odd: one pad byte
    dest = tmp_path / "out.dcm"
    ds = dataset()
    with source.open("rb") as src:
        size = write_part10(dest, ds, file_value(src, 3, tag=ENCAPSULATED_DOCUMENT))
    assert size == dest.stat().st_size
    back = pydicom.dcmread(dest)
    assert back.EncapsulatedDocument == b"abc\x00"
    assert back.MIMETypeOfEncapsulatedDocument == "application/octet-stream"
    assert back.SOPInstanceUID == UIDS.sop_instance
    assert "EncapsulatedDocument" not in ds, "the dataset is not modified"


def test_a_source_that_gives_other_bytes_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out.dcm"

    def short(out: BinaryIO) -> int:
        out.write(b"12")
        return 2

    def mismatch(count: int) -> Exception:
        return WrapError(f"got {count}")

    value = StreamedValue(4, short, tag=ENCAPSULATED_DOCUMENT, mismatch=mismatch)
    with pytest.raises(WrapError, match="got 2"):
        write_part10(dest, dataset(), value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ds: setattr(ds, "EncapsulatedDocument", b"xx"), "already holds"),
        (lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", ImplicitVRLittleEndian), "explicit"),
        (lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", "1.2.840.10008.1.2.4.50"), "native"),
    ],
)
def test_what_the_writer_refuses(
    tmp_path: Path, change: Callable[[Dataset], None], message: str
) -> None:
    ds = dataset()
    change(ds)
    value = StreamedValue(2, lambda out: out.write(b"xx"), tag=ENCAPSULATED_DOCUMENT)
    with pytest.raises(ValueError, match=message):
        write_part10(tmp_path / "out.dcm", ds, value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("device_class", "sop_class"),
    [
        (DeviceClass.DERMATOSCOPE, "1.2.840.10008.5.1.4.1.1.77.1.7"),
        (DeviceClass.CAMERA, "1.2.840.10008.5.1.4.1.1.77.1.4"),
        (DeviceClass.BODY_SCANNER, "1.2.840.10008.5.1.4.1.1.77.1.4"),
    ],
)
def test_a_jpeg_becomes_the_object_of_its_device_class(
    tmp_path: Path, device_class: DeviceClass, sop_class: str
) -> None:
    source = tmp_path / "capture.raw"
    source.write_bytes(jpeg_bytes())
    offer = CaptureOffer(device_capture_id="c1", content_type=ContentType.JPEG)
    job = WrapJob(identity(device_class), offer, UIDS, source, GATEWAY, NOW, 1)
    written = write_capture(job, tmp_path / "out.dcm")
    assert written.sop_class_uid == sop_class
    assert pydicom.dcmread(tmp_path / "out.dcm").SOPClassUID == sop_class


def test_what_no_writer_takes_is_refused_with_a_reason(tmp_path: Path) -> None:
    source = tmp_path / "capture.raw"
    source.write_bytes(jpeg_bytes())
    offer = CaptureOffer(device_capture_id="c1", content_type=ContentType.JPEG)
    job = WrapJob(identity(DeviceClass.CONFOCAL_MICROSCOPE), offer, UIDS, source, GATEWAY, NOW, 1)
    with pytest.raises(WrapError, match="no JPEG builder for device class"):
        write_capture(job, tmp_path / "out.dcm")
    source.write_bytes(b"not a jpeg")
    with pytest.raises(NotAJpeg):
        write_capture(job, tmp_path / "out.dcm")
    assert not (tmp_path / "out.dcm").exists()


def test_inline_only_for_a_jpeg_of_announced_length() -> None:
    jpeg = CaptureOffer(device_capture_id="c1", content_type=ContentType.JPEG, length=10)
    assert may_write_inline(jpeg)
    assert not may_write_inline(replace(jpeg, length=None))
    assert not may_write_inline(replace(jpeg, content_type=ContentType.PNG))


def test_inline_header_waits_then_gives_up() -> None:
    data = jpeg_bytes()
    assert read_inline_header(data[:10], len(data), final=False) is InlineHeader.MORE
    assert read_inline_header(data[:10], len(data), final=True) is InlineHeader.RAW
    junk = b"\x00" * INLINE_HEADER_LIMIT
    assert read_inline_header(junk, len(junk), final=False) is InlineHeader.RAW
    info = read_inline_header(data, len(data) + 5, final=False)
    assert not isinstance(info, InlineHeader)
    assert info.size_bytes == len(data) + 5


def test_inline_file_is_the_file_the_wrapping_stage_writes(tmp_path: Path) -> None:
    """Begun inline and closed after the device's bytes: the same bytes as wrapping."""
    data = jpeg_bytes()
    offer = CaptureOffer(device_capture_id="c1", content_type=ContentType.JPEG, length=len(data))
    device = identity(DeviceClass.DERMATOSCOPE)
    cut = data.index(b"\xff\xda") + 20  # a little past Start of Scan
    info = read_inline_header(data[:cut], len(data), final=False)
    assert not isinstance(info, InlineHeader)
    begun = begin_inline(
        identity=device,
        offer=offer,
        uids=UIDS,
        jpeg=info,
        received=data[:cut],
        gateway=GATEWAY,
        now=NOW,
        patient_spool_id=1,
    )
    assert begun is not None
    inline = begun.start + data[cut:] + begun.end
    source = tmp_path / "capture.raw"
    source.write_bytes(data)
    written = write_capture(
        WrapJob(device, offer, UIDS, source, GATEWAY, NOW, 1), tmp_path / "out.dcm"
    )
    assert inline == (tmp_path / "out.dcm").read_bytes()
    assert (begun.sop_class_uid, begun.transfer_syntax_uid) == (
        written.sop_class_uid,
        written.transfer_syntax_uid,
    )
    confocal = identity(DeviceClass.CONFOCAL_MICROSCOPE)
    refused = begin_inline(
        identity=confocal,
        offer=offer,
        uids=UIDS,
        jpeg=info,
        received=data[:cut],
        gateway=GATEWAY,
        now=NOW,
        patient_spool_id=1,
    )
    assert refused is None, "kept as it came: the wrapping stage says why"
