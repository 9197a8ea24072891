"""Camera metadata never reaches Pixel Data, and the compression ratio is the real one.

A camera JPEG carries EXIF (GPS position, owner/Artist, maker notes, a thumbnail),
XMP, IPTC (APP13) and comments in marker segments before its image data.
De-identification tools do not look inside Pixel Data, so DermGate drops those
segments before encapsulating the JPEG and keeps only what decoding needs (APP0
JFIF, APP2 ICC profile, APP14 Adobe, tables, frame and scan headers, the
entropy-coded data untouched): the decoded pixels are identical.

Both ways a JPEG becomes DICOM are exercised with the real code: the wrapping
stage (a raw capture in the spool, written by ``write_part10_encapsulated``) and
intake's streaming path, which writes the device's bytes straight into the DICOM
file as they arrive in chunks (the real :class:`Intake` on a real spool and
ledger). Every object is checked by dciodvfy.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from PIL import Image, ImageCms
from pydicom.encaps import generate_fragments

from gateway.core.capture import (
    CaptureOffer,
    DeviceClass,
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
)
from gateway.core.uids import new_uid
from gateway.dicom.dermoscopy import build_dermoscopic_photography
from gateway.dicom.jpeg import read_jpeg_info
from gateway.dicom.part10 import write_part10_encapsulated
from gateway.dicom.photo import build_vl_photographic
from gateway.intake import InlineWrap, Intake
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from gateway.wrap import Wrapper
from tests.support.dciodvfy import dciodvfy_errors

GATEWAY = GatewayIdentity(gateway_id="gw-meta", software_version="0.1.0", station_name="GWMETA")
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CAMERA = DeviceIdentity("Nikon", "Z 7II", "NZ7-3001234", ("1.40",), device_class=DeviceClass.CAMERA)
DERMATOSCOPE = DeviceIdentity("DermGate Reference Devices", "DS-100", "DS100-7", ("2.4.1",))
SCANNER = DeviceIdentity(
    "DermGate Reference Devices", "TB-3D", "TB3D-1", ("3.2",), device_class=DeviceClass.BODY_SCANNER
)

#: What must never reach Pixel Data (each is in exactly one metadata segment).
ARTIST = b"Dr. Artist Owner-Name"
GPS_MARK = b"GPSVersionID-marker"
MAKER_NOTE = b"NIKON-MAKERNOTE-SERIAL-0042"
XMP_NAME = b"<dc:creator>Jane XMP-Creator</dc:creator>"
IPTC_CITY = b"IPTC-City-Springfield"
COMMENT = b"COM: patient Jane Roe, room 4"
APP5_JUNK = b"vendor-private-APP5"
SECRETS = (b"Exif\x00\x00", ARTIST, GPS_MARK, MAKER_NOTE, XMP_NAME, IPTC_CITY, COMMENT, APP5_JUNK)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _tiff_exif(thumbnail: bytes) -> bytes:
    """A little-endian TIFF structure: IFD0 (Make, Artist, EXIF and GPS pointers),
    the EXIF IFD (DateTimeOriginal, MakerNote), the GPS IFD, and IFD1 with a
    JPEG thumbnail, as a camera writes it."""

    def ifd(entries: list[tuple[int, int, int, bytes]], at: int, next_ifd: int) -> bytes:
        table = struct.pack("<H", len(entries))
        values = b""
        area = at + 2 + 12 * len(entries) + 4
        for tag, kind, count, data in entries:
            if len(data) <= 4:
                table += struct.pack("<HHI", tag, kind, count) + data.ljust(4, b"\x00")
            else:
                table += struct.pack("<HHII", tag, kind, count, area + len(values))
                values += data + (b"\x00" if len(data) % 2 else b"")
        return table + struct.pack("<I", next_ifd) + values

    def ascii_(text: bytes) -> tuple[int, int, bytes]:
        return 2, len(text) + 1, text + b"\x00"

    # Lay out with fixed offsets: IFD0 at 8, then EXIF, GPS, IFD1, thumbnail.
    exif_at, gps_at, ifd1_at, thumb_at = 200, 400, 600, 800
    ifd0 = ifd(
        [
            (0x010F, *ascii_(b"Nikon")),
            (0x013B, *ascii_(ARTIST)),
            (0x8769, 4, 1, struct.pack("<I", exif_at)),
            (0x8825, 4, 1, struct.pack("<I", gps_at)),
        ],
        8,
        ifd1_at,
    )
    exif = ifd(
        [
            (0x9003, *ascii_(b"2026:11:29 14:05:06")),
            (0x927C, 7, len(MAKER_NOTE), MAKER_NOTE),
        ],
        exif_at,
        0,
    )
    gps = ifd(
        [
            (0x0000, 1, 4, b"\x02\x03\x00\x00"),
            (0x0001, *ascii_(b"N")),
            (0x0002, 5, 3, struct.pack("<6I", 52, 1, 31, 1, 1234, 100)),
            (0x001B, 7, len(GPS_MARK), GPS_MARK),
        ],
        gps_at,
        0,
    )
    ifd1 = ifd(
        [
            (0x0103, 3, 1, struct.pack("<H", 6)),
            (0x0201, 4, 1, struct.pack("<I", thumb_at)),
            (0x0202, 4, 1, struct.pack("<I", len(thumbnail))),
        ],
        ifd1_at,
        0,
    )
    blob = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for at, part in ((8, ifd0), (exif_at, exif), (gps_at, gps), (ifd1_at, ifd1)):
        assert len(blob) <= at, "IFD layout overlaps"
        blob += b"\x00" * (at - len(blob)) + part
    blob += b"\x00" * (thumb_at - len(blob)) + thumbnail
    return bytes(blob)


def thumbnail_jpeg() -> bytes:
    out = io.BytesIO()
    Image.effect_noise((64, 48), 90).convert("RGB").save(out, "JPEG", quality=50)
    return out.getvalue()


def camera_jpeg(size: tuple[int, int] = (320, 240), quality: int = 90) -> bytes:
    """A camera-like JPEG: EXIF with GPS, Artist, MakerNote and a thumbnail, XMP,
    IPTC, a comment, a vendor APPn, and an ICC profile (which must stay)."""
    image = Image.effect_noise(size, 50).convert("RGB")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    exif = b"Exif\x00\x00" + _tiff_exif(thumbnail_jpeg())
    image.save(out, "JPEG", quality=quality, subsampling=2, exif=exif, icc_profile=icc)
    data = out.getvalue()
    extra = (
        _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>" + XMP_NAME + b"</x:xmpmeta>")
        + _segment(0xED, b"Photoshop 3.0\x008BIM\x04\x04\x00\x00" + IPTC_CITY)
        + _segment(0xFE, COMMENT)
        + _segment(0xE5, APP5_JUNK)
    )
    return data[:2] + extra + data[2:]


def without_metadata(jpeg: bytes) -> bytes:
    """The test's own oracle: the JPEG with every segment before Start of Scan
    dropped except APP0 JFIF, APP2 ICC_PROFILE, APP14 Adobe and non-APP segments."""
    out, at = bytearray(jpeg[:2]), 2
    while True:
        marker = jpeg[at + 1]
        if marker == 0xDA:
            return bytes(out + jpeg[at:])
        length = struct.unpack(">H", jpeg[at + 2 : at + 4])[0]
        segment, payload = jpeg[at : at + 2 + length], jpeg[at + 4 : at + 2 + length]
        keep = not (0xE0 <= marker <= 0xEF or marker == 0xFE) or (
            (marker == 0xE0 and payload.startswith(b"JFIF\x00"))
            or (marker == 0xE2 and payload.startswith(b"ICC_PROFILE\x00"))
            or (marker == 0xEE and payload.startswith(b"Adobe"))
        )
        if keep:
            out += segment
        at += 2 + length


def pixels(jpeg: bytes) -> bytes:
    with Image.open(io.BytesIO(jpeg)) as image:
        return image.convert("RGB").tobytes()


def fragment_of(path: Path) -> bytes:
    ds = pydicom.dcmread(path)
    offset_table, *fragments = generate_fragments(ds.PixelData)
    assert offset_table == b""
    assert len(fragments) == 1
    return fragments[0]


def assert_clean(fragment: bytes, original: bytes) -> None:
    """No metadata segment survived; ICC kept; decoded pixels identical."""
    for secret in SECRETS:
        assert secret not in fragment, f"{secret!r} reached Pixel Data"
    assert thumbnail_jpeg()[20:200] not in fragment, "the EXIF thumbnail reached Pixel Data"
    assert b"ICC_PROFILE\x00" in fragment
    assert len(fragment) % 2 == 0
    jpeg = fragment[:-1] if fragment.endswith(b"\xff\xd9\x00") else fragment
    assert jpeg.endswith(b"\xff\xd9")
    assert pixels(jpeg) == pixels(original)
    # The image data after Start of Scan is the device's, byte for byte.
    sos = original.rindex(b"\xff\xda")  # FFDA cannot occur inside entropy-coded data
    assert jpeg.endswith(original[sos:])
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.info.get("icc_profile")


def no_dciodvfy_errors(path: Path) -> None:
    errors = dciodvfy_errors(path)
    assert errors == [], "\n".join(errors)


def test_strip_keeps_what_decoding_needs_and_nothing_else() -> None:
    from gateway.dicom.jpeg import read_jpeg_info_from, strip_metadata

    original = camera_jpeg()
    for secret in SECRETS:
        assert secret in original  # the fixture really carries them
    stripped = strip_metadata(original)
    assert stripped == without_metadata(original)
    assert_clean(stripped + (b"\x00" if len(stripped) % 2 else b""), original)
    info = read_jpeg_info_from(io.BytesIO(original))
    assert info.encapsulated_size == len(stripped)
    # A JPEG with nothing to drop is unchanged.
    assert strip_metadata(stripped) == stripped


@pytest.mark.parametrize("device", ["camera", "dermatoscope"])
def test_wrapping_stage_writes_no_camera_metadata(tmp_path: Path, device: str) -> None:
    original = camera_jpeg()
    source = tmp_path / "capture.jpg"
    source.write_bytes(original)
    ids = InstanceUIDs(new_uid(), new_uid(), new_uid())
    info = read_jpeg_info(source)
    if device == "camera":
        ds = build_vl_photographic(
            identity=CAMERA,
            offer=CaptureOffer(device_capture_id="p1"),
            uids=ids,
            jpeg=info,
            gateway=GATEWAY,
            patient=None,
            now=NOW,
        )
    else:
        ds = build_dermoscopic_photography(
            identity=DERMATOSCOPE,
            offer=CaptureOffer(device_capture_id="d1"),
            uids=ids,
            jpeg=info,
            gateway=GATEWAY,
            patient=None,
            now=NOW,
        )
    dest = tmp_path / "out.dcm"
    written = write_part10_encapsulated(ds, source, dest)
    assert written == dest.stat().st_size
    no_dciodvfy_errors(dest)
    fragment = fragment_of(dest)
    assert_clean(fragment, original)
    assert source.read_bytes() == original  # the spool's raw capture is untouched
    stripped = len(without_metadata(original))
    assert float(pydicom.dcmread(dest).LossyImageCompressionRatio) == pytest.approx(
        320 * 240 * 3 / stripped, abs=0.01
    )


# --- intake: the JPEG streamed straight into its DICOM file ----------------------------


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[Intake]:
    """The real intake on a fresh spool, writing JPEGs inline as the service does."""
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.start()
    wrapper = Wrapper(ledger, dirs, GATEWAY, ("pacs",), lambda: None)
    inline = InlineWrap(GATEWAY, wrapper.destinations, lambda: None)
    yield Intake(ledger, dirs, wrapper.notify, None, inline)
    ledger.close()


async def stream(
    intake: Intake, identity: DeviceIdentity, data: bytes, chunk: int, capture_id: str
) -> Path:
    """Offer ``data`` with its length, write it in ``chunk``-sized pieces, commit;
    return the DICOM file intake wrote."""
    offer = CaptureOffer(device_capture_id=capture_id, length=len(data))
    sink = await intake.begin("test-driver", identity, offer)
    for start in range(0, len(data), chunk):
        await sink.write(data[start : start + chunk])
    receipt = await sink.commit(length=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert not receipt.duplicate
    dicom = list(intake.dirs.dicom.glob(f"{receipt.sop_instance_uid}.dcm"))
    assert dicom, "intake did not write the JPEG straight into its DICOM file"
    return dicom[0]


@pytest.mark.parametrize(
    "identity", [CAMERA, DERMATOSCOPE, SCANNER], ids=["camera", "dermatoscope", "texture"]
)
@pytest.mark.parametrize("chunk", [7, 4096, 1 << 20])
async def test_intake_streams_the_jpeg_without_its_metadata(
    intake: Intake, identity: DeviceIdentity, chunk: int
) -> None:
    original = camera_jpeg()
    path = await stream(intake, identity, original, chunk, f"cap-{chunk}")
    no_dciodvfy_errors(path)
    assert_clean(fragment_of(path), original)
    assert not list(intake.dirs.staging.iterdir())


async def test_reoffer_of_a_stripped_capture_is_recognised_by_the_device_bytes(
    intake: Intake,
) -> None:
    """The ledger keeps the checksum of what the device sent, not of the fragment."""
    original = camera_jpeg()
    await stream(intake, DERMATOSCOPE, original, 4096, "same")
    offer = CaptureOffer(device_capture_id="same", length=len(original))
    sink = await intake.begin("test-driver", DERMATOSCOPE, offer)
    await sink.write(original)
    receipt = await sink.commit(length=len(original), sha256=hashlib.sha256(original).hexdigest())
    assert receipt.duplicate


async def test_compression_ratio_uses_the_whole_jpeg_not_the_first_buffer(
    intake: Intake,
) -> None:
    """Item 16: a JPEG larger than intake's 1 MiB buffer, sent in 64 KiB chunks."""
    original = camera_jpeg(size=(1600, 1200), quality=98)
    assert len(original) > 1 << 20
    path = await stream(intake, DERMATOSCOPE, original, 64 << 10, "big")
    no_dciodvfy_errors(path)
    ds = pydicom.dcmread(path)
    compressed = len(without_metadata(original))
    rows, columns = int(ds.Rows), int(ds.Columns)
    samples, bits = int(ds.SamplesPerPixel), int(ds.BitsAllocated)
    expected = rows * columns * samples * bits / 8 / compressed
    assert float(ds.LossyImageCompressionRatio) == pytest.approx(expected, abs=0.01)
    assert 1.0 < float(ds.LossyImageCompressionRatio) < 10.0
    fragment = fragment_of(path)
    assert len(fragment) == compressed + (compressed & 1)
