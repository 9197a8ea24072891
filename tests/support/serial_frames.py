"""Frames and sessions of the serial dermatoscope protocol, built by hand for its tests."""

from __future__ import annotations

import hashlib
import struct
import zlib

from drivers.serial_dermatoscope.protocol import (
    CaptureBegin,
    CaptureData,
    CaptureEnd,
    Hello,
    cobs_encode,
    encode_frame,
)
from drivers.serial_dermatoscope.session import (
    CaptureBytes,
    DeviceIdentified,
    Event,
    HostSession,
)

# -- strategies ---------------------------------------------------------------------


HELLO = Hello("DermGate Reference Devices", "DS-100 Dermatoscope", "DS100-1", "2.4.1", ("jpeg",))


def body_with_crc(msg_type: int, seq: int, payload: bytes) -> bytes:
    head = struct.pack(">BH", msg_type, seq) + payload
    return head + struct.pack(">I", zlib.crc32(head))


def raw_frame(msg_type: int, payload: bytes, seq: int = 0) -> bytes:
    return cobs_encode(body_with_crc(msg_type, seq, payload)) + b"\x00"


def device_stream(capture_id: str, content: bytes, *, chunk: int = 1000, seq: int = 0) -> bytes:
    """The frames a device sends for one capture (BEGIN, DATA…, END)."""
    frames = [encode_frame(CaptureBegin(capture_id, len(content), polarization="POLARIZED"), seq)]
    for offset in range(0, len(content), chunk):
        frames.append(encode_frame(CaptureData(capture_id, offset, content[offset:][:chunk]), 1))
    frames.append(encode_frame(CaptureEnd(capture_id, len(content), sha(content)), 2))
    return b"".join(frames)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def identified_session() -> HostSession:
    session = HostSession("pytest", "0")
    session.hello_frame()
    assert session.receive(encode_frame(HELLO, 0)) == [DeviceIdentified(HELLO)]
    return session


def significant(events: list[Event]) -> list[Event]:
    """Events without the byte chunks."""
    return [event for event in events if not isinstance(event, CaptureBytes)]


def received_bytes(events: list[Event], capture_id: str) -> bytes:
    return b"".join(
        e.data for e in events if isinstance(e, CaptureBytes) and e.capture_id == capture_id
    )


# -- COBS and framing -----------------------------------------------------------------
