"""The serial dermatoscope protocol on its own: COBS framing, messages, the frame
decoder (the host session's captures are tests/unit/test_serial_session.py)."""

from __future__ import annotations

import itertools
import json
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.serial_dermatoscope.protocol import (
    MAX_ENCODED,
    Ack,
    CaptureBegin,
    CaptureData,
    CaptureEnd,
    CobsError,
    Frame,
    FrameDecoder,
    FrameError,
    Hello,
    HostHello,
    Message,
    MessageType,
    Nak,
    NakReason,
    cobs_decode,
    cobs_encode,
    decode_body,
    encode_body,
    encode_frame,
)
from drivers.serial_dermatoscope.session import (
    CaptureCompleted,
    HostSession,
)

# -- strategies ---------------------------------------------------------------------
from tests.support.serial_frames import (
    HELLO,
    raw_frame,
)

text = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=40)
capture_ids = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}", fullmatch=True)
seqs = st.integers(0, 0xFFFF)


def optional(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.none() | strategy


capture_begins = st.builds(
    CaptureBegin,
    capture_id=capture_ids,
    length=st.integers(0, 2**64 - 1),
    timestamp=optional(st.datetimes().map(lambda d: d.isoformat())),
    polarization=optional(st.sampled_from(["POLARIZED", "NON_POLARIZED"])),
    contact=optional(st.sampled_from(["CONTACT", "NON_CONTACT"])),
    immersion=optional(
        st.sampled_from(["ULTRASOUND_GEL", "ALCOHOL", "WATER", "MINERAL_OIL", "PLASTIC_CAP"])
    ),
    magnification=optional(st.floats(0.01, 1000.0)),
    color_temperature_k=optional(st.integers(1, 99_999)),
    anatomic_site=optional(st.from_regex(r"[0-9]{6,18}", fullmatch=True)),
    laterality=optional(st.sampled_from(["R", "L", "U", "B"])),
    lesion_id=optional(text.filter(bool)),
)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(HostHello, host=text, version=text),
    st.builds(
        Hello,
        manufacturer=text,
        model=text,
        serial=text,
        firmware=text,
        capabilities=st.lists(text, max_size=5).map(tuple),
    ),
    capture_begins,
    st.builds(
        CaptureData,
        capture_id=capture_ids,
        offset=st.integers(0, 2**64 - 1),
        data=st.binary(max_size=3000),
    ),
    st.builds(
        CaptureEnd,
        capture_id=capture_ids,
        length=st.integers(0, 2**64 - 1),
        sha256=st.from_regex(r"[0-9a-fA-F]{64}", fullmatch=True),
    ),
    st.builds(Ack, capture_id=capture_ids),
    st.builds(Nak, capture_id=capture_ids, reason=st.sampled_from(NakReason)),
)


@given(st.binary(max_size=2000))
def test_cobs_round_trip(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert b"\x00" not in encoded
    assert len(encoded) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(encoded) == data


@pytest.mark.parametrize("size", [0, 1, 253, 254, 255, 508, 509, 1000])
@pytest.mark.parametrize("fill", [b"\x01", b"\x00", b"\x00\x01"])
def test_cobs_block_boundaries(size: int, fill: bytes) -> None:
    data = (fill * size)[:size]
    assert cobs_decode(cobs_encode(data)) == data


def test_cobs_canonical_examples() -> None:
    # From Cheshire & Baker / the usual published examples.
    assert cobs_encode(b"\x00") == b"\x01\x01"
    assert cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert cobs_encode(bytes(range(1, 255))) == b"\xff" + bytes(range(1, 255))
    assert cobs_encode(bytes(range(0, 255))) == b"\x01\xff" + bytes(range(1, 255))


def test_cobs_rejects_invalid() -> None:
    with pytest.raises(CobsError):
        cobs_decode(b"\x05\x01")
    with pytest.raises(CobsError):
        cobs_decode(b"\x02\x00")


@given(messages, seqs)
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_encode_decode_round_trip(message: Message, seq: int) -> None:
    assert FrameDecoder().feed(encode_frame(message, seq)) == [Frame(seq, message)]
    assert decode_body(encode_body(message, seq)) == Frame(seq, message)


def test_every_message_type_is_covered() -> None:
    samples: list[Message] = [
        HostHello("gw", "1"),
        HELLO,
        CaptureBegin("000001", 10),
        CaptureData("000001", 0, b"\x00" * 10),
        CaptureEnd("000001", 10, "0" * 64),
        Ack("000001"),
        Nak("000001", NakReason.DISK_FULL),
    ]
    types = {encode_body(message, 0)[0] for message in samples}
    assert types == {int(t) for t in MessageType}
    decoder = FrameDecoder()
    stream = b"".join(encode_frame(message, n) for n, message in enumerate(samples))
    assert decoder.feed(stream) == [Frame(n, m) for n, m in enumerate(samples)]


def test_wire_format_is_as_documented() -> None:
    frame = encode_frame(Ack("7"), 0x0102)
    body = cobs_decode(frame[:-1])
    assert frame.endswith(b"\x00")
    assert body[0] == 0x20
    assert body[1:3] == b"\x01\x02"
    assert json.loads(body[3:-4]) == {"capture_id": "7"}
    assert body[-4:] == struct.pack(">I", zlib.crc32(body[:-4]))
    data = cobs_decode(encode_frame(CaptureData("ab", 5, b"xyz"), 0)[:-1])
    assert data[3:-4] == b"\x02ab" + (5).to_bytes(8, "big") + b"xyz"


@given(messages, seqs, st.data())
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_frame_split_anywhere_still_decodes(
    message: Message, seq: int, data: st.DataObject
) -> None:
    frame = encode_frame(message, seq)
    cut = data.draw(st.integers(0, len(frame)))
    decoder = FrameDecoder()
    assert decoder.feed(frame[:cut]) + decoder.feed(frame[cut:]) == [Frame(seq, message)]


def test_frame_split_at_every_position() -> None:
    message = CaptureData("000001", 65536, bytes(range(256)) * 3)
    frame = encode_frame(message, 7)
    for cut in range(len(frame) + 1):
        decoder = FrameDecoder()
        assert decoder.feed(frame[:cut]) + decoder.feed(frame[cut:]) == [Frame(7, message)]
    decoder = FrameDecoder()
    results = [item for byte in frame for item in decoder.feed(bytes([byte]))]
    assert results == [Frame(7, message)]


@given(messages, st.data())
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_corrupt_byte_gives_crc_error(message: Message, data: st.DataObject) -> None:
    body = bytearray(encode_body(message, 1))
    index = data.draw(st.integers(0, len(body) - 1))
    body[index] ^= data.draw(st.integers(1, 255))
    decoder = FrameDecoder()
    (result,) = decoder.feed(cobs_encode(bytes(body)) + b"\x00")
    assert isinstance(result, FrameError)
    assert result.reason == "crc"
    # The decoder is back in sync for the next frame.
    assert decoder.feed(encode_frame(message, 2)) == [Frame(2, message)]


@given(st.binary(max_size=5000), st.lists(st.integers(0, 5000), max_size=5))
@settings(deadline=None)
def test_arbitrary_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder()
    session = HostSession()
    session.hello_frame()
    session.receive(encode_frame(HELLO, 0))
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        for item in decoder.feed(data[start:end]):
            assert isinstance(item, Frame | FrameError)
        session.receive(data[start:end])


@given(
    st.lists(
        st.one_of(
            messages,
            st.builds(
                CaptureData,
                capture_id=st.sampled_from(["a", "b"]),
                offset=st.sampled_from([0, 3, 6, 100]),
                data=st.binary(max_size=6),
            ),
            st.builds(
                CaptureBegin, capture_id=st.sampled_from(["a", "b"]), length=st.integers(0, 12)
            ),
            st.builds(Hello, manufacturer=text, model=text, serial=text, firmware=text),
            st.binary(max_size=30),
        ),
        max_size=30,
    ),
    st.data(),
)
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_session_survives_any_frame_sequence(items: list[object], data: st.DataObject) -> None:
    session = HostSession()
    session.hello_frame()
    stream = bytearray(encode_frame(HELLO, 0))
    for item in items:
        if isinstance(item, bytes):
            stream += item  # garbage, possibly with 0x00 in it
        else:
            stream += encode_frame(item, 0)  # type: ignore[arg-type]
    cut = data.draw(st.integers(0, len(stream)))
    events = session.receive(bytes(stream[:cut])) + session.receive(bytes(stream[cut:]))
    if data.draw(st.booleans()):
        session.fail_current(NakReason.TIMEOUT)
    for event in events:
        if isinstance(event, CaptureCompleted):
            assert event.length >= 0


def test_run_without_delimiter_is_discarded_with_bounded_memory() -> None:
    decoder = FrameDecoder()
    errors: list[Frame | FrameError] = []
    for _ in range(40):  # 40 × 16 KiB of junk, no 0x00
        errors += decoder.feed(b"\x07" * 16384)
        assert len(decoder._buffer) <= MAX_ENCODED
    assert errors == [FrameError("too-long", errors[0].detail)]  # type: ignore[union-attr]
    message = Ack("000001")
    # The junk run ends at the next 0x00; the frame after it decodes.
    assert decoder.feed(b"\x00" + encode_frame(message, 3)) == [Frame(3, message)]


def test_largest_frame_fits() -> None:
    message = CaptureData("x" * 64, 0, b"\xaa" * (65536 + 64 - 3 - 4 - 1 - 64 - 8))
    assert FrameDecoder().feed(encode_frame(message, 0)) == [Frame(0, message)]
    with pytest.raises(ValueError, match="MAX_BODY"):
        encode_frame(CaptureData("x", 0, b"\xaa" * 70000), 0)


def test_empty_frames_are_ignored() -> None:
    assert FrameDecoder().feed(b"\x00\x00\x00") == []


@pytest.mark.parametrize(
    ("msg_type", "payload", "reason"),
    [
        (0x7F, b"{}", "unknown-type"),
        (0x20, b"not json", "bad-payload"),
        (0x20, b"\xff\xfe", "bad-payload"),
        (0x20, b"[]", "bad-payload"),
        (0x20, b'{"capture_id": 5}', "bad-payload"),
        (0x20, b'{"capture_id": "a/b"}', "bad-payload"),
        (0x20, b'{"capture_id": ""}', "bad-payload"),
        (0x20, b'{"capture_id": "a", "capture_id": "b"}', "bad-payload"),
        (0x21, b'{"capture_id": "a", "reason": "BORED"}', "bad-payload"),
        (0x21, b'{"capture_id": "a"}', "bad-payload"),
        (0x10, b'{"capture_id": "a", "length": "5"}', "bad-payload"),
        (0x10, b'{"capture_id": "a", "length": true}', "bad-payload"),
        (0x10, b'{"capture_id": "a", "length": 1.0}', "bad-payload"),
        (0x10, b'{"capture_id": "a", "length": -1}', "bad-payload"),
        (0x10, b'{"capture_id": "a", "length": 1, "magnification": NaN}', "bad-payload"),
        (0x10, b'{"capture_id": "a", "length": 1, "magnification": true}', "bad-payload"),
        (0x10, b'{"capture_id": "a", "length": 1, "polarization": "SIDEWAYS"}', "bad-payload"),
        (0x10, b'{"capture_id": "a", "length": 1, "timestamp": "yesterday"}', "bad-payload"),
        (0x10, b'{"capture_id": "a", "length": 1, "anatomic_site": "arm"}', "bad-payload"),
        (0x10, b'{"capture_id": "a", "length": 1, "lesion_id": "\\ud800"}', "bad-payload"),
        (0x10, b'{"capture_id": "a", "length": 1, "color_temperature_k": 5e3}', "bad-payload"),
        (0x02, b'{"manufacturer": "m", "model": "m", "serial": "s"}', "bad-payload"),
        (
            0x02,
            b'{"manufacturer":"m","model":"m","serial":"s","firmware":"f","capabilities":"jpeg"}',
            "bad-payload",
        ),
        (0x12, b'{"capture_id": "a", "length": 1, "sha256": "xyz"}', "bad-payload"),
        (0x11, b"", "bad-payload"),
        (0x11, b"\x05ab", "bad-payload"),
        (0x11, b"\x02\xff\xfe" + bytes(8), "bad-payload"),
        (0x01, b"[" * 100_00 + b"]" * 100_00, "bad-payload"),
    ],
)
def test_malformed_payloads_are_frame_errors(msg_type: int, payload: bytes, reason: str) -> None:
    (result,) = FrameDecoder().feed(raw_frame(msg_type, payload))
    assert isinstance(result, FrameError)
    assert result.reason == reason


def test_unknown_json_keys_are_ignored() -> None:
    payload = b'{"capture_id": "a", "length": 3, "future_field": [1, 2]}'
    (result,) = FrameDecoder().feed(raw_frame(0x10, payload))
    assert result == Frame(0, CaptureBegin("a", 3))


def test_short_frame() -> None:
    (result,) = FrameDecoder().feed(cobs_encode(b"\x20\x00") + b"\x00")
    assert isinstance(result, FrameError)
    assert result.reason == "short"


# -- host session -----------------------------------------------------------------------
