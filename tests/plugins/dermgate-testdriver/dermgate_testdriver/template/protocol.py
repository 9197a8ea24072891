"""The TC-1 wire format, sans-I/O: frames built and parsed, nothing sent or read.

One connection, device → gateway::

    HELLO <serial> <firmware>\n                       once, when the gateway connects
    OFFER <capture-id> <length> <sha256>\n<length bytes>  each photo (a JPEG)

and gateway → device, once the gateway decided about an offer::

    SAVED <capture-id>\n                 durable: the device may forget the photo
    REFUSED <capture-id> <reason>\n      not kept: the device keeps it and offers again

Anything else on the line from the device (garbage) is not a frame: the driver skips
it, line by line. Every field is checked here, where bytes become values: a capture id
is short and plain, a length is a claim the driver checks against the gateway's limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The longest header line a driver reads; a longer "line" is garbage.
MAX_LINE = 256

_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LENGTH = re.compile(r"[0-9]{1,12}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_WORD = re.compile(r"[\x21-\x7e]{1,64}")  # printable, no spaces


@dataclass(frozen=True, slots=True)
class Hello:
    """The device introduces itself."""

    serial: str
    firmware: str


@dataclass(frozen=True, slots=True)
class Offer:
    """The device offers a photo; ``length`` bytes follow the header."""

    capture_id: str
    length: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Reply:
    """The gateway's answer to an offer: ``reason`` is None when it was saved."""

    capture_id: str
    reason: str | None


def parse_frame(line: bytes) -> Hello | Offer | None:
    """The device frame in one header line (with or without its ``\\n``); None if
    the line is not one (garbage, a truncated header, a field out of bounds)."""
    try:
        words = line.decode("ascii").rstrip("\r\n").split(" ")
    except UnicodeDecodeError:
        return None
    match words:
        case ["HELLO", serial, firmware] if _WORD.fullmatch(serial) and _WORD.fullmatch(firmware):
            return Hello(serial, firmware)
        case ["OFFER", capture_id, length, sha256] if (
            _ID.fullmatch(capture_id) and _LENGTH.fullmatch(length) and _SHA256.fullmatch(sha256)
        ):
            return Offer(capture_id, int(length), sha256)
    return None


def parse_reply(line: bytes) -> Reply | None:
    """The gateway's reply in one line; None if the line is not one."""
    match line.decode("ascii", errors="replace").rstrip("\r\n").split(" "):
        case ["SAVED", capture_id]:
            return Reply(capture_id, None)
        case ["REFUSED", capture_id, reason]:
            return Reply(capture_id, reason)
    return None


def hello(serial: str, firmware: str) -> bytes:
    """A HELLO line."""
    return f"HELLO {serial} {firmware}\n".encode("ascii")


def offer(capture_id: str, length: int, sha256: str) -> bytes:
    """An OFFER header line (the photo's bytes follow it)."""
    return f"OFFER {capture_id} {length} {sha256}\n".encode("ascii")


def saved(capture_id: str) -> bytes:
    """A SAVED line."""
    return f"SAVED {capture_id}\n".encode("ascii")


def refused(capture_id: str, reason: str) -> bytes:
    """A REFUSED line (``reason`` is one word, e.g. ``DISK_FULL``)."""
    return f"REFUSED {capture_id} {reason}\n".encode("ascii")
