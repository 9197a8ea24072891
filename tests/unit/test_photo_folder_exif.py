"""The photo folder's EXIF reader and file checks, without a gateway.

EXIF mapping on files Pillow writes (JPEG, PNG) and on hand-built TIFF structures
(both byte orders, an EXIF IFD, unknown values), the camera identity with the
configured fallbacks, the checks that refuse a file before anything is
acknowledged, and hypothesis fuzzing: arbitrary and mutated bytes make the reader
raise :class:`ExifError` or nothing, never anything else.
"""

from __future__ import annotations

import io
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from drivers.photo_folder.driver import PhotoFolderOptions, identity_for, offer_for
from drivers.photo_folder.exif import CameraExif, ExifError, parse_tiff_exif, read_exif
from drivers.photo_folder.photos import NotAPhoto, examine
from drivers.photo_folder.simulator import MANUFACTURER, MODEL, SOFTWARE, make_photo
from gateway.core.capture import ContentType, DeviceClass
from gateway.dicom.photo import PhotoExtra

TAKEN = datetime(2026, 11, 29, 14, 5, 6, 450000)


def _ifd(order: str, entries: list[tuple[int, int, int, bytes]], at: int) -> tuple[bytes, bytes]:
    """An IFD at offset ``at`` and its out-of-line value area (placed right after it)."""
    table = struct.pack(order + "H", len(entries))
    values = b""
    area = at + 2 + 12 * len(entries) + 4
    for tag, kind, count, data in entries:
        if len(data) <= 4:
            table += struct.pack(order + "HHI", tag, kind, count) + data.ljust(4, b"\x00")
        else:
            table += struct.pack(order + "HHII", tag, kind, count, area + len(values))
            values += data + (b"\x00" if len(data) % 2 else b"")
    return table + b"\x00\x00\x00\x00", values


def _ascii(text: str) -> tuple[int, int, bytes]:
    data = text.encode() + b"\x00"
    return 2, len(data), data


def tiff_exif(order: str = "<", *, lens_unknown: bool = False) -> bytes:
    """A TIFF structure with IFD0 (make, model, software) and an EXIF IFD."""
    mark = b"II" if order == "<" else b"MM"

    def rational(num: int, den: int) -> bytes:
        return struct.pack(order + "II", num, den)

    exif_entries = [
        (0x829A, 5, 1, rational(1, 250)),
        (0x829D, 5, 1, rational(56, 10)),
        (0x8827, 3, 1, struct.pack(order + "H", 200)),
        (0x9000, 7, 4, b"0232"),
        (0x9003, *_ascii("2026:11:29 14:05:06")),
        (0x9011, *_ascii("-05:00")),
        (0x9291, *_ascii("45")),
        (0x920A, 5, 1, rational(100, 1)),
        (0xA431, *_ascii("BODY-42")),
        (
            0xA432,
            5,
            4,
            rational(100, 1)
            + rational(100, 1)
            + (rational(0, 0) if lens_unknown else rational(28, 10))
            + rational(28, 10),
        ),
        (0xA434, *_ascii("Macro 100mm")),
        (0x9286, 7, 12, b"ASCII\x00\x00\x00Jane"),  # UserComment: never read
    ]
    ifd0_at = 8
    ifd0_entries_count = 5
    exif_at_guess = ifd0_at + 2 + 12 * ifd0_entries_count + 4
    ifd0_values = [_ascii("Acme"), _ascii("Derma Cam 2"), _ascii("v2.0.1")]
    values_len = sum(len(d) + (len(d) % 2) for _, _, d in ifd0_values if len(d) > 4)
    exif_at = exif_at_guess + values_len
    ifd0, ifd0_area = _ifd(
        order,
        [
            (0x010F, *ifd0_values[0]),
            (0x0110, *ifd0_values[1]),
            (0x0112, 3, 1, struct.pack(order + "H", 6)),
            (0x0131, *ifd0_values[2]),
            (0x8769, 4, 1, struct.pack(order + "I", exif_at)),
        ],
        ifd0_at,
    )
    exif, exif_area = _ifd(order, exif_entries, exif_at)
    header = mark + struct.pack(order + "HI", 42, ifd0_at)
    blob = header + ifd0 + ifd0_area
    assert len(blob) == exif_at
    return blob + exif + exif_area


@pytest.mark.parametrize("order", ["<", ">"])
def test_tiff_structure_is_parsed_in_both_byte_orders(order: str) -> None:
    exif = parse_tiff_exif(tiff_exif(order))
    assert (exif.make, exif.model, exif.software) == ("Acme", "Derma Cam 2", "v2.0.1")
    assert exif.body_serial_number == "BODY-42"
    assert exif.lens_model == "Macro 100mm"
    assert exif.lens_specification == (100.0, 100.0, 2.8, 2.8)
    assert exif.exposure_time_s == pytest.approx(1 / 250)
    assert exif.f_number == pytest.approx(5.6)
    assert exif.iso == 200
    assert exif.focal_length_mm == 100.0
    assert exif.exif_version == "0232"
    assert exif.orientation == 6
    assert exif.taken_at() == datetime(
        2026, 11, 29, 14, 5, 6, 450000, tzinfo=timezone(-timedelta(hours=5))
    )


def test_unknown_lens_values_are_left_out() -> None:
    assert parse_tiff_exif(tiff_exif(lens_unknown=True)).lens_specification is None


def test_jpeg_and_png_exif_written_by_a_camera(tmp_path: Path) -> None:
    for fmt in ("jpeg", "png"):
        data = make_photo(3, width=320, height=240, fmt=fmt, serial="CP24-777", taken=TAKEN)
        exif = read_exif(io.BytesIO(data))
        assert (exif.make, exif.model, exif.software) == (MANUFACTURER, MODEL, SOFTWARE)
        assert exif.body_serial_number == "CP24-777"
        assert exif.date_time_original == "2026:11:29 14:05:06"
        taken = exif.taken_at()
        assert taken is not None
        assert taken.replace(tzinfo=None) == TAKEN
        assert taken.utcoffset() is not None, "OffsetTimeOriginal makes the time absolute"


def test_photo_without_exif_and_fallback_identity(tmp_path: Path) -> None:
    path = tmp_path / "plain.jpg"
    Image.effect_noise((64, 48), 30).convert("RGB").save(path, "JPEG", subsampling=2)
    photo = examine(path, accept_native=True)
    assert photo.exif == CameraExif()
    bare = identity_for(photo.exif, PhotoFolderOptions(folder=tmp_path))
    assert (bare.manufacturer, bare.model, bare.serial_number) == ("", "", "")
    assert bare.software_versions == ()
    assert bare.device_class is DeviceClass.CAMERA
    options = PhotoFolderOptions(
        folder=tmp_path, manufacturer="Clinic Cams", model="Ward 3 camera", serial_number="W3-1"
    )
    fallback = identity_for(photo.exif, options)
    assert (fallback.manufacturer, fallback.model, fallback.serial_number) == (
        "Clinic Cams",
        "Ward 3 camera",
        "W3-1",
    )
    # What the camera says wins over the fallback.
    named = identity_for(CameraExif(make="Nikon", body_serial_number="N1"), options)
    assert (named.manufacturer, named.model, named.serial_number) == (
        "Nikon",
        "Ward 3 camera",
        "N1",
    )
    offer = offer_for(photo)
    assert offer.acquired_at is None
    assert offer.content_type is ContentType.JPEG
    assert offer.length == path.stat().st_size
    assert offer.device_capture_id == f"photo-{photo.sha256[:32]}"
    assert "plain" not in offer.device_capture_id
    assert PhotoExtra.from_extra(offer.extra).exif is not None


def test_options_reject_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="settle"):
        PhotoFolderOptions.model_validate({"folder": str(tmp_path), "settle": 3})


@pytest.mark.parametrize(
    ("content", "reason", "incomplete"),
    [
        (lambda: make_photo(1, width=96, height=64, subsampling=0), "4:4:4", False),
        (lambda: make_photo(1, width=96, height=64, progressive=True), "progressive", False),
        (lambda: make_photo(1, width=96, height=64)[:-300], "End Of Image", True),
        (lambda: make_photo(1, width=96, height=64)[:300], "truncated", True),
        (lambda: make_photo(1, width=96, height=64, fmt="png")[:-2000], "PNG", True),
        (lambda: b"", "empty", True),  # a copy that stalled at 0 bytes looks the same
        (lambda: b"%PDF-1.7\n" + b"x" * 100, "not a photo", False),
    ],
)
def test_files_dicom_cannot_carry_are_refused_with_a_reason(
    tmp_path: Path, content: object, reason: str, incomplete: bool
) -> None:
    path = tmp_path / "Doe_Jane.jpg"
    path.write_bytes(content())  # type: ignore[operator]
    with pytest.raises(NotAPhoto, match=reason) as caught:
        examine(path, accept_native=True)
    assert caught.value.incomplete is incomplete
    assert "Doe" not in str(caught.value)


def test_native_formats_can_be_turned_off(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(make_photo(1, width=96, height=64, fmt="png"))
    assert examine(path, accept_native=True).content_type is ContentType.PNG
    with pytest.raises(NotAPhoto, match="accept_tiff_png"):
        examine(path, accept_native=False)


# --- fuzzing ----------------------------------------------------------------------------

_SEEDS = [
    tiff_exif("<"),
    tiff_exif(">"),
    make_photo(5, width=64, height=48)[:4096],
    make_photo(5, width=64, height=48, fmt="png")[:4096],
]


def _never_raises_other(data: bytes) -> None:
    try:
        exif = read_exif(io.BytesIO(data))
        exif.taken_at()
    except ExifError:
        pass
    try:
        parsed = parse_tiff_exif(data)
        parsed.taken_at()
    except ExifError:
        pass


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes_only_raise_exif_error(data: bytes) -> None:
    _never_raises_other(data)
    _never_raises_other(b"\xff\xd8" + data)
    _never_raises_other(b"II*\x00" + data)
    _never_raises_other(b"MM\x00*" + data)
    _never_raises_other(b"\xff\xd8\xff\xe1" + struct.pack(">H", len(data) + 8) + b"Exif\0\0" + data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_SEEDS),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=12),
    st.one_of(st.none(), st.integers(min_value=0)),
)
def test_fuzz_mutated_exif_only_raises_exif_error(
    seed: bytes, flips: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(seed)
    for where, value in flips:
        data[where % len(data)] = value
    if cut is not None:
        del data[cut % len(data) :]
    _never_raises_other(bytes(data))
