"""The template driver's wire format, sans-I/O: what a newcomer's protocol tests look like.

No socket and no gateway: frames are bytes in, values out. Garbage is never an error,
only "not a frame", which the driver skips.
"""

from __future__ import annotations

import hashlib

from dermgate_testdriver.template import protocol
from hypothesis import given
from hypothesis import strategies as st

DIGEST = hashlib.sha256(b"photo").hexdigest()


def test_frames_read_back_as_built() -> None:
    assert protocol.parse_frame(protocol.hello("TC1-00007", "1.0.0")) == protocol.Hello(
        "TC1-00007", "1.0.0"
    )
    offer = protocol.parse_frame(protocol.offer("IMG0001", 5, DIGEST))
    assert offer == protocol.Offer("IMG0001", 5, DIGEST)
    assert protocol.parse_reply(protocol.saved("IMG0001")) == protocol.Reply("IMG0001", None)
    assert protocol.parse_reply(protocol.refused("IMG0001", "DISK_FULL")) == protocol.Reply(
        "IMG0001", "DISK_FULL"
    )


def test_a_header_out_of_bounds_is_no_frame() -> None:
    for line in (
        b"OFFER IMG0001 5 " + DIGEST.upper().encode() + b"\n",  # digest not lower-case hex
        b"OFFER IMG0001 -5 " + DIGEST.encode() + b"\n",  # a negative length
        b"OFFER IMG0001 9999999999999 " + DIGEST.encode() + b"\n",  # 13 digits
        b"OFFER " + b"A" * 65 + b" 5 " + DIGEST.encode() + b"\n",  # id too long
        b"OFFER ../../etc 5 " + DIGEST.encode() + b"\n",  # not a plain id
        b"HELLO a b c\n",
        b"\xff\xfe\n",
    ):
        assert protocol.parse_frame(line) is None, line


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(line: bytes) -> None:
    frame = protocol.parse_frame(line)
    assert frame is None or isinstance(frame, protocol.Hello | protocol.Offer)
    reply = protocol.parse_reply(line)
    assert reply is None or isinstance(reply, protocol.Reply)
