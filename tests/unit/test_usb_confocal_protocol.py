"""The USB confocal protocol on its own: framing, stack reader, host messages.

Hypothesis feeds the reader arbitrary bytes and mutated valid streams (flipped,
inserted and deleted bytes, random split points): it never raises, never reports
pixel bytes outside a stack, and a stack it completes always carries exactly the
pixels the device sent (the SHA-256 check makes a corrupted stack fail instead).
Profiles: "ci" (default, 300 examples), "slow" (30000): HYPOTHESIS_PROFILE=slow.
"""

from __future__ import annotations

import hashlib
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.usb_confocal.protocol import (
    MAGIC,
    Event,
    FrameStarted,
    HostMessageReader,
    MessageType,
    NakReason,
    PixelBytes,
    Resynchronised,
    StackCompleted,
    StackFailed,
    StackHeader,
    StackReader,
    StackStarted,
    encode_json,
    encode_stack,
)


def header(
    stack_id: str = "S000001",
    *,
    kind: str = "z-stack",
    frames: int = 3,
    width: int = 4,
    height: int = 3,
    bits: int = 8,
) -> StackHeader:
    rows, cols = (1, frames) if kind == "mosaic" else (0, 0)
    return StackHeader(
        stack_id=stack_id,
        kind=kind,
        frames=frames,
        width=width,
        height=height,
        bits=bits,
        pixel_spacing_um=0.5,
        z_step_um=3.0,
        wavelength_nm=830,
        objective="30x/0.9 water",
        magnification=30.0,
        numerical_aperture=0.9,
        acquired_at="2026-11-30T10:15:00",
        tile_rows=rows,
        tile_cols=cols,
    )


def frames_for(h: StackHeader, seed: int = 0) -> list[tuple[float, bytes]]:
    rng = random.Random(seed)
    return [(3.0 * i, rng.randbytes(h.frame_bytes)) for i in range(h.frames)]


def stream(h: StackHeader, frames: list[tuple[float, bytes]]) -> bytes:
    return b"".join(encode_stack(h, frames))


def feed_in_pieces(reader: StackReader, data: bytes, cuts: list[int]) -> list[Event]:
    events: list[Event] = []
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        events += reader.feed(data[last:cut])
        last = cut
    events += reader.feed(data[last:])
    return events


def check_invariants(events: list[Event]) -> dict[str, bytes]:
    """Events are well formed; return the pixels of every completed stack."""
    current: str | None = None
    pixels = bytearray()
    completed: dict[str, bytes] = {}
    for event in events:
        match event:
            case StackStarted(header=h):
                current = h.stack_id
                pixels.clear()
            case FrameStarted(stack_id=sid) | PixelBytes(stack_id=sid):
                assert sid == current, "frame or pixels outside their stack"
                if isinstance(event, PixelBytes):
                    pixels += event.data
            case StackCompleted(stack_id=sid, length=length, sha256=sha):
                assert sid == current
                assert len(pixels) == length
                assert hashlib.sha256(pixels).hexdigest() == sha
                completed[sid] = bytes(pixels)
                current = None
            case StackFailed(stack_id=sid):
                if current is not None:
                    assert sid == current
                current = None
            case Resynchronised(skipped=n):
                assert n > 0
    return completed


def test_round_trip_z_stack_and_mosaic_16bit() -> None:
    for h in (header(), header("M1", kind="mosaic", frames=4, bits=16)):
        frames = frames_for(h)
        events = StackReader().feed(stream(h, frames))
        assert isinstance(events[0], StackStarted)
        assert events[0].header == h
        starts = [e for e in events if isinstance(e, FrameStarted)]
        assert [f.index for f in starts] == list(range(h.frames))
        if h.kind == "mosaic":
            assert [(f.tile_row, f.tile_col) for f in starts] == [(0, i) for i in range(4)]
        else:
            assert [f.z_um for f in starts] == [z for z, _ in frames]
        completed = check_invariants(events)
        assert completed == {h.stack_id: b"".join(p for _, p in frames)}


@given(
    frames=st.integers(1, 5),
    width=st.integers(1, 9),
    height=st.integers(1, 5),
    bits=st.sampled_from([8, 16]),
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
    seed=st.integers(0, 1000),
)
def test_fuzz_split_points_do_not_matter(
    frames: int, width: int, height: int, bits: int, cuts: list[int], seed: int
) -> None:
    h = header(frames=frames, width=width, height=height, bits=bits)
    data = stream(h, frames_for(h, seed))
    completed = check_invariants(feed_in_pieces(StackReader(), data, cuts))
    assert completed[h.stack_id] == b"".join(p for _, p in frames_for(h, seed))


@given(st.binary(max_size=4000), st.lists(st.integers(0, 4000), max_size=10))
def test_fuzz_arbitrary_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    reader = StackReader()
    events = feed_in_pieces(reader, data, cuts)
    events += reader.interrupt("unplugged")
    assert not [e for e in events if isinstance(e, StackCompleted)]
    check_invariants(events)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    mutations=st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "magic"]),
            st.integers(0, 100_000),
            st.binary(min_size=1, max_size=12),
        ),
        min_size=1,
        max_size=6,
    ),
    cuts=st.lists(st.integers(0, 100_000), max_size=8),
    seed=st.integers(0, 1000),
)
def test_fuzz_mutated_streams_never_complete_wrong_pixels(
    mutations: list[tuple[str, int, bytes]], cuts: list[int], seed: int
) -> None:
    first = header("S1", frames=3, width=5, height=4)
    second = header("S2", kind="mosaic", frames=2, width=3, height=3, bits=16)
    originals = {
        "S1": b"".join(p for _, p in frames_for(first, seed)),
        "S2": b"".join(p for _, p in frames_for(second, seed + 1)),
    }
    data = bytearray(
        stream(first, frames_for(first, seed)) + stream(second, frames_for(second, seed + 1))
    )
    for op, position, blob in mutations:
        at = position % (len(data) + 1)
        if op == "flip" and data:
            data[at % len(data)] ^= blob[0] or 0xFF
        elif op == "insert":
            data[at:at] = blob
        elif op == "delete":
            del data[at : at + len(blob)]
        else:
            data[at:at] = MAGIC + blob
    events = feed_in_pieces(StackReader(), bytes(data), cuts)
    completed = check_invariants(events)
    for stack_id, pixels in completed.items():
        assert pixels == originals[stack_id], "a completed stack has exactly the device's pixels"


def test_garbage_between_stacks_is_skipped() -> None:
    a, b = header("A"), header("B", frames=2)
    data = b"\x00junk" + stream(a, frames_for(a)) + b"DGC\xffmore junk" + stream(b, frames_for(b))
    events = StackReader().feed(data)
    assert set(check_invariants(events)) == {"A", "B"}
    assert any(isinstance(e, Resynchronised) for e in events)


def test_corrupted_pixels_fail_the_checksum() -> None:
    h = header()
    parts = list(encode_stack(h, frames_for(h)))
    data = bytearray(b"".join(parts))
    data[-len(parts[-1]) - 5] ^= 0x01  # inside the last frame's pixels
    events = StackReader().feed(bytes(data))
    failed = [e for e in events if isinstance(e, StackFailed)]
    assert failed == [StackFailed("S000001", NakReason.CHECKSUM, "SHA-256 mismatch")]


def test_bad_header_is_refused_with_its_stack_id() -> None:
    data = encode_json(MessageType.STACK_HEADER, {**header().to_json(), "bits": 12})
    events = StackReader().feed(data)
    assert events == [StackFailed("S000001", NakReason.BAD_HEADER, "field bits")]


def test_interrupted_stack_fails_and_a_new_offer_starts_clean() -> None:
    h = header(width=64, height=64)
    data = stream(h, frames_for(h))
    reader = StackReader()
    events = reader.feed(data[: len(data) // 2])
    events += reader.interrupt("device unplugged")
    assert events[-1] == StackFailed("S000001", NakReason.INTERRUPTED, "device unplugged")
    completed = check_invariants(reader.feed(data))
    assert "S000001" in completed


def test_a_restart_mid_frame_fails_the_stack_and_the_next_offer_completes() -> None:
    """Pixels are unframed: a restart mid-frame is swallowed as pixels, then caught."""
    h = header(width=64, height=64)
    data = stream(h, frames_for(h))
    reader = StackReader()
    events = reader.feed(data[: len(data) // 2] + data)
    assert [e for e in events if isinstance(e, StackFailed)], "the broken offer fails"
    assert check_invariants(events) == {}
    completed = check_invariants(events + reader.feed(data))
    assert completed == {"S000001": b"".join(p for _, p in frames_for(h))}


def test_a_new_header_between_frames_abandons_the_old_stack() -> None:
    h = header(width=8, height=8)
    parts = list(encode_stack(h, frames_for(h)))
    cut = b"".join(parts[:3])  # header, first frame header and its pixels
    events = StackReader().feed(cut + b"".join(parts))
    assert StackFailed("S000001", NakReason.INTERRUPTED, "a new stack began") in events
    assert "S000001" in check_invariants(events)


def test_host_messages_survive_garbage() -> None:
    ack = encode_json(MessageType.ACK, {"stack_id": "S1"})
    nak = encode_json(MessageType.NAK, {"stack_id": "S2", "reason": "CHECKSUM"})
    reader = HostMessageReader()
    messages = []
    for byte in b"xx" + ack + b"DGCF\x00" + nak:
        messages += reader.feed(bytes([byte]))
    assert [(m.kind, m.data) for m in messages] == [
        (MessageType.ACK, {"stack_id": "S1"}),
        (MessageType.NAK, {"stack_id": "S2", "reason": "CHECKSUM"}),
    ]


@given(st.binary(max_size=2000))
def test_fuzz_host_reader_never_raises(data: bytes) -> None:
    HostMessageReader().feed(data)
