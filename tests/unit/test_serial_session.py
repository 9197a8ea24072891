"""The host's session of the serial dermatoscope protocol: captures reassembled from
frames, and every way a transfer can go wrong (sans-I/O, no device)."""

from __future__ import annotations

import itertools
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.serial_dermatoscope.protocol import (
    DATA_CHUNK,
    Ack,
    CaptureBegin,
    CaptureData,
    CaptureEnd,
    Frame,
    FrameDecoder,
    HostHello,
    Nak,
    NakReason,
    cobs_decode,
    cobs_encode,
    encode_frame,
)
from drivers.serial_dermatoscope.session import (
    CaptureCompleted,
    CaptureFailed,
    CaptureStarted,
    DeviceIdentified,
    Event,
    FrameDropped,
    HostSession,
)

# -- strategies ---------------------------------------------------------------------
from tests.support.serial_frames import (
    HELLO,
    device_stream,
    identified_session,
    raw_frame,
    received_bytes,
    sha,
    significant,
)


def test_complete_capture() -> None:
    content = bytes(range(256)) * 20  # has zeros: exercises COBS too
    session = identified_session()
    events = session.receive(device_stream("000001", content))
    assert significant(events) == [
        CaptureStarted(CaptureBegin("000001", len(content), polarization="POLARIZED")),
        CaptureCompleted("000001", len(content), sha(content)),
    ]
    assert received_bytes(events, "000001") == content
    assert session.current is None


@given(st.binary(max_size=4000), st.integers(1, 700), st.lists(st.integers(0, 5000), max_size=8))
@settings(deadline=None)
def test_complete_capture_any_chunking(content: bytes, chunk: int, cuts: list[int]) -> None:
    session = identified_session()
    stream = device_stream("c1", content, chunk=chunk)
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    events: list[Event] = []
    for start, end in itertools.pairwise(bounds):
        events += session.receive(stream[start:end])
    assert significant(events)[-1] == CaptureCompleted("c1", len(content), sha(content))
    assert received_bytes(events, "c1") == content


def test_zero_length_capture() -> None:
    events = identified_session().receive(device_stream("empty", b""))
    assert events[-1] == CaptureCompleted("empty", 0, sha(b""))


def test_sha_mismatch_is_checksum_failure() -> None:
    session = identified_session()
    content = b"jpeg bytes" * 100
    stream = device_stream("000001", content).rsplit(b"\x00", 2)[0] + b"\x00"
    stream += encode_frame(CaptureEnd("000001", len(content), sha(b"other")), 9)
    events = significant(session.receive(stream))
    assert events[-1] == CaptureFailed("000001", NakReason.CHECKSUM, "SHA-256 mismatch")


def test_gap_is_sequence_failure_and_rest_is_ignored() -> None:
    session = identified_session()
    content = bytes(3000)
    events = significant(
        session.receive(
            encode_frame(CaptureBegin("000001", 3000), 0)
            + encode_frame(CaptureData("000001", 0, content[:1000]), 1)
            + encode_frame(CaptureData("000001", 2000, content[2000:]), 2)
            + encode_frame(CaptureData("000001", 1000, content[1000:2000]), 3)
            + encode_frame(CaptureEnd("000001", 3000, sha(content)), 4)
        )
    )
    assert len(events) == 2
    assert isinstance(events[1], CaptureFailed)
    assert events[1].reason is NakReason.SEQUENCE
    # A re-offer of the same capture starts afresh and completes.
    events = session.receive(device_stream("000001", content))
    assert events[-1] == CaptureCompleted("000001", 3000, sha(content))


def test_corrupt_data_frame_leads_to_sequence_failure() -> None:
    session = identified_session()
    content = bytes(range(200)) * 15
    frames = device_stream("000001", content).split(b"\x00")[:-1]
    victim = bytearray(cobs_decode(frames[2]))
    victim[20] ^= 1
    frames[2] = cobs_encode(bytes(victim))
    events = significant(session.receive(b"\x00".join(frames) + b"\x00"))
    assert FrameDropped("crc", "CRC-32 mismatch") in events
    failed = [e for e in events if isinstance(e, CaptureFailed)]
    assert [f.reason for f in failed] == [NakReason.SEQUENCE]


def test_duplicate_data_frame_is_ignored() -> None:
    session = identified_session()
    content = bytes(range(256)) * 8
    frames = device_stream("000001", content, chunk=512).split(b"\x00")[:-1]
    frames.insert(2, frames[1])  # first DATA frame twice
    frames.insert(5, frames[4])  # and a later one
    events = session.receive(b"\x00".join(frames) + b"\x00")
    assert significant(events)[-1] == CaptureCompleted("000001", len(content), sha(content))
    assert received_bytes(events, "000001") == content


def test_same_offset_different_bytes_is_sequence_failure() -> None:
    session = identified_session()
    events = significant(
        session.receive(
            encode_frame(CaptureBegin("a", 4), 0)
            + encode_frame(CaptureData("a", 0, b"ab"), 1)
            + encode_frame(CaptureData("a", 0, b"xy"), 2)
        )
    )
    assert isinstance(events[-1], CaptureFailed)
    assert events[-1].reason is NakReason.SEQUENCE


def test_length_mismatches() -> None:
    session = identified_session()
    events = session.receive(
        encode_frame(CaptureBegin("a", 4), 0) + encode_frame(CaptureData("a", 0, b"abcde"), 1)
    )
    assert isinstance(events[-1], CaptureFailed)
    assert events[-1].reason is NakReason.LENGTH

    events = session.receive(
        encode_frame(CaptureBegin("b", 4), 0)
        + encode_frame(CaptureData("b", 0, b"abc"), 1)
        + encode_frame(CaptureEnd("b", 4, sha(b"abc")), 2)
    )
    assert isinstance(events[-1], CaptureFailed)
    assert events[-1].reason is NakReason.LENGTH

    events = session.receive(
        encode_frame(CaptureBegin("c", 3), 0)
        + encode_frame(CaptureData("c", 0, b"abc"), 1)
        + encode_frame(CaptureEnd("c", 4, sha(b"abc")), 2)
    )
    assert isinstance(events[-1], CaptureFailed)
    assert events[-1].reason is NakReason.LENGTH


def test_new_begin_or_foreign_data_fails_capture_in_progress() -> None:
    session = identified_session()
    events = significant(
        session.receive(
            encode_frame(CaptureBegin("a", 4), 0)
            + encode_frame(CaptureData("a", 0, b"ab"), 1)
            + encode_frame(CaptureBegin("b", 2), 2)
        )
    )
    assert isinstance(events[1], CaptureFailed)
    assert (events[1].capture_id, events[1].reason) == ("a", NakReason.SEQUENCE)
    assert events[2] == CaptureStarted(CaptureBegin("b", 2))

    events = significant(session.receive(encode_frame(CaptureData("c", 0, b"ab"), 3)))
    assert [(e.capture_id, e.reason) for e in events if isinstance(e, CaptureFailed)] == [
        ("b", NakReason.SEQUENCE),
        ("c", NakReason.SEQUENCE),
    ]
    # More of "c" is not reported again.
    assert session.receive(encode_frame(CaptureData("c", 2, b"cd"), 4)) == []


def test_bad_metadata_is_reported_for_the_capture() -> None:
    session = identified_session()
    payload = b'{"capture_id": "000004", "length": 3, "contact": "SOMETIMES"}'
    events = session.receive(
        raw_frame(0x10, payload)
        + encode_frame(CaptureData("000004", 0, b"abc"), 1)
        + encode_frame(CaptureEnd("000004", 3, sha(b"abc")), 2)
    )
    assert len(events) == 2
    assert isinstance(events[0], FrameDropped)
    assert isinstance(events[1], CaptureFailed)
    assert (events[1].capture_id, events[1].reason) == ("000004", NakReason.BAD_METADATA)


def test_stale_frames_before_hello_are_ignored() -> None:
    session = HostSession()
    content = b"stale" * 100
    # Before we said HOST_HELLO, and between HOST_HELLO and the device's HELLO.
    assert session.receive(device_stream("000001", content)) == []
    assert session.receive(encode_frame(HELLO, 0)) == [DeviceIdentified(HELLO)]
    session.hello_frame()  # reconnect: forget the device until it answers again
    assert session.identity is None
    half = device_stream("000002", content)
    assert session.receive(half[: len(half) // 2]) == []
    events = session.receive(
        half[len(half) // 2 :] + b"\x00" + encode_frame(HELLO, 1) + device_stream("000002", content)
    )
    assert significant(events)[0] == DeviceIdentified(HELLO)
    assert significant(events)[-1] == CaptureCompleted("000002", len(content), sha(content))


def test_hello_abandons_capture_in_progress() -> None:
    session = identified_session()
    session.receive(encode_frame(CaptureBegin("a", 10), 0))
    assert session.current == CaptureBegin("a", 10)
    assert session.receive(encode_frame(HELLO, 1)) == [DeviceIdentified(HELLO)]
    assert session.current is None


def test_fail_current() -> None:
    session = identified_session()
    assert session.fail_current(NakReason.TIMEOUT) is None
    session.receive(encode_frame(CaptureBegin("a", 10), 0))
    session.receive(encode_frame(CaptureData("a", 0, b"12345"), 1))
    assert session.received == 5
    failed = session.fail_current(NakReason.TIMEOUT, "no data for 10 s")
    assert failed == CaptureFailed("a", NakReason.TIMEOUT, "no data for 10 s")
    assert session.current is None
    # The rest of that offer is ignored.
    assert session.receive(encode_frame(CaptureData("a", 5, b"67890"), 2)) == []


def test_host_frames_and_sequence_numbers() -> None:
    session = HostSession("gateway-7", "0.1.0")
    decoder = FrameDecoder()
    hello = decoder.feed(session.hello_frame())
    ack = decoder.feed(session.ack_frame("000001"))
    nak = decoder.feed(session.nak_frame("000002", NakReason.DISK_FULL))
    assert hello == [Frame(0, HostHello("gateway-7", "0.1.0"))]
    assert ack == [Frame(1, Ack("000001"))]
    assert nak == [Frame(2, Nak("000002", NakReason.DISK_FULL))]


def test_host_frames_are_dropped_when_received_by_host() -> None:
    session = identified_session()
    assert session.receive(encode_frame(Ack("a"), 0)) == [FrameDropped("unexpected", "Ack")]


def test_realistic_size_capture() -> None:
    content = bytes(range(256)) * 20_000  # ~5 MB
    session = identified_session()
    events = session.receive(device_stream("big", content, chunk=DATA_CHUNK))
    assert events[-1] == CaptureCompleted("big", len(content), sha(content))


def test_message_constructors_validate() -> None:
    with pytest.raises(ValueError, match="capture_id"):
        Ack("../etc")
    with pytest.raises(ValueError, match="seq"):
        encode_frame(Ack("a"), 70000)
    with pytest.raises(ValueError, match="laterality"):
        CaptureBegin("a", 1, laterality="X")
    assert CaptureBegin("a", 1, timestamp=datetime(2024, 5, 1, 10, 31, 7).isoformat())
