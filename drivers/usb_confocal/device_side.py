"""The device side of the confocal USB protocol, sans I/O (what the simulator speaks).

:class:`HostMessageReader` parses the host's bulk OUT stream (HOST_HELLO, ACK,
NAK); :func:`encode_stack` produces the bulk IN bytes of one stack. Specified in
:mod:`drivers.usb_confocal.protocol`.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from drivers.usb_confocal.messages import (
    CRC,
    MAGIC,
    MAX_PAYLOAD,
    PREFIX,
    MessageType,
    StackHeader,
    encode_frame_header,
    encode_json,
    partial_magic,
)

__all__ = ["HostMessage", "HostMessageReader", "encode_stack"]


@dataclass(frozen=True, slots=True)
class HostMessage:
    """A host → device message as the device decodes it."""

    kind: MessageType
    data: dict[str, Any]


class HostMessageReader:
    """Parses the host's bulk OUT stream (device side); skips garbage, never raises."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[HostMessage]:
        """Take bytes; return the complete, valid messages."""
        self._buffer += data
        out: list[HostMessage] = []
        buffer = self._buffer
        while True:
            start = buffer.find(MAGIC)
            if start < 0:
                del buffer[: len(buffer) - partial_magic(buffer)]
                return out
            del buffer[:start]
            if len(buffer) < PREFIX.size:
                return out
            _magic, kind, flags, length = PREFIX.unpack_from(buffer)
            if length > MAX_PAYLOAD or flags != 0:
                del buffer[:1]
                continue
            end = PREFIX.size + length + CRC.size
            if len(buffer) < end:
                return out
            body = bytes(buffer[4 : PREFIX.size + length])
            (crc,) = CRC.unpack_from(buffer, PREFIX.size + length)
            if zlib.crc32(body) != crc:
                del buffer[:1]
                continue
            del buffer[:end]
            try:
                data = json.loads(body[4:])
                message_type = MessageType(kind)
            except (ValueError, UnicodeDecodeError, RecursionError):
                continue
            if isinstance(data, dict):
                out.append(HostMessage(message_type, data))


def encode_stack(header: StackHeader, frames: Iterable[tuple[float, bytes]]) -> Iterator[bytes]:
    """The device side of one stack: header, each frame (z position, pixels), trailer.

    ``frames`` may be a generator, so a device can stream a stack larger than its
    memory; the SHA-256 of the trailer is computed on the way.
    """
    sha = hashlib.sha256()
    length = 0
    yield encode_json(MessageType.STACK_HEADER, header.to_json())
    for index, (z_um, pixels) in enumerate(frames):
        row, col = (
            (index // header.tile_cols, index % header.tile_cols)
            if header.kind == "mosaic"
            else (0, 0)
        )
        yield encode_frame_header(index, z_um, row, col)
        sha.update(pixels)
        length += len(pixels)
        yield pixels
    yield encode_json(
        MessageType.STACK_TRAILER,
        {"stack_id": header.stack_id, "length": length, "sha256": sha.hexdigest()},
    )
