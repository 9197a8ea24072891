"""DermGate reference protocol for serial (USB-CDC) dermatoscopes, sans I/O.

This module is the specification of the wire protocol and the one place to import
its reference implementation from, which lives in three layers: :mod:`.messages`
(the messages as checked values), :mod:`.payloads` (a message's payload bytes) and
:mod:`.framing` (COBS frames on a byte stream). None of them does I/O or imports
the gateway: callers feed them bytes and send the bytes they return. A vendor who
wants a device to work with DermGate out of the box implements the device side of
what is written here.

Framing
=======
Every frame on the wire is ``COBS(body) + b"\\x00"``::

    body = type (u8) | seq (u16 BE) | payload (0..n bytes) | crc32 (u32 BE)

* COBS is Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999): the encoded
  body contains no 0x00 byte, so 0x00 always ends a frame and a receiver can
  resynchronise after garbage by waiting for the next 0x00.
* ``crc32`` is ``zlib.crc32(type + seq + payload)`` (CRC-32/ISO-HDLC, the one in
  zlib, Ethernet and PNG).
* ``seq`` counts the frames each side sends, starting at any value and adding 1 per
  frame, modulo 65536. It is for diagnostics (captures in both directions) only;
  correctness never depends on it: data frames carry their own byte offset.
* ``len(body)`` is at most :data:`MAX_BODY` (65536 + 64) bytes. A receiver discards
  any run of more than :data:`MAX_ENCODED` bytes without a 0x00 as garbage, so its
  memory stays bounded whatever arrives.
* Empty frames (a 0x00 right after a 0x00) are ignored. A sender may send a lone
  0x00 at any time to make sure its next frame starts cleanly; both sides do so
  before HOST_HELLO and HELLO.
* A frame that fails COBS decoding or the CRC, is too short or too long, has an
  unknown type or a malformed payload is dropped; the protocol recovers through
  offsets, lengths, checksums and NAK/re-offer, never by retransmitting frames.

Messages
========
JSON payloads are UTF-8 JSON objects. Field types are checked strictly (``true`` is
not a number, ``1.0`` is not an integer); unknown keys are ignored so later versions
can add fields. Keys marked "may be null" may also be left out.

=====  ==============  ======  ===============================================
type   name            dir     payload
=====  ==============  ======  ===============================================
0x01   HOST_HELLO      h → d   JSON ``{"host": str, "version": str}``
0x02   HELLO           d → h   JSON ``{"manufacturer": str, "model": str,
                               "serial": str, "firmware": str,
                               "capabilities": [str]}``
0x10   CAPTURE_BEGIN   d → h   JSON, see below
0x11   CAPTURE_DATA    d → h   binary ``u8 n | capture_id (n bytes UTF-8) |
                               u64 BE offset | chunk``
0x12   CAPTURE_END     d → h   JSON ``{"capture_id": str, "length": int,
                               "sha256": str (64 hex digits)}``
0x20   ACK             h → d   JSON ``{"capture_id": str}``
0x21   NAK             h → d   JSON ``{"capture_id": str, "reason": str}``
=====  ==============  ======  ===============================================

CAPTURE_BEGIN is ``{"capture_id": str, "length": int, "timestamp": str,
"polarization": str, "contact": str, "immersion": str, "magnification": number,
"color_temperature_k": int, "anatomic_site": str, "laterality": str,
"lesion_id": str}`` where every key after ``length`` may be null:

* ``timestamp``: ISO 8601 device time of the capture (``2024-05-01T10:31:07``,
  with or without UTC offset);
* ``polarization``: ``POLARIZED`` | ``NON_POLARIZED``;
* ``contact``: ``CONTACT`` | ``NON_CONTACT``;
* ``immersion``: ``ULTRASOUND_GEL`` | ``ALCOHOL`` | ``WATER`` | ``MINERAL_OIL`` |
  ``PLASTIC_CAP``, only meaningful with ``CONTACT``;
* ``magnification``: optical magnification factor, > 0;
* ``color_temperature_k``: illumination colour temperature in kelvin, > 0;
* ``anatomic_site``: a SNOMED CT code value (digits) from DICOM CID 4029
  "Dermatology Anatomic Site", chosen on the device;
* ``laterality``: ``R`` | ``L`` | ``U`` | ``B``;
* ``lesion_id``: the device's lesion label (1 to 64 printable characters).

A ``capture_id`` is 1 to 64 characters from ``A-Z a-z 0-9 . _ -``, not starting with
``.`` or ``-``, and unique per device serial number for the device's lifetime: the
pair (serial, capture_id) is how the host recognises a re-offered capture.
``length`` is the capture's size in bytes; ``sha256`` the lowercase (or uppercase)
hex SHA-256 of all its bytes. Capture data is a baseline JPEG (JFIF or EXIF) for a
dermatoscope, though the protocol does not depend on it.

Conversation
============
::

    host                                  device
    HOST_HELLO  ───────────────────────▶
                ◀───────────────────────  HELLO
                ◀───────────────────────  CAPTURE_BEGIN  (capture A)
                ◀───────────────────────  CAPTURE_DATA × k (offsets 0, c, 2c, …)
                ◀───────────────────────  CAPTURE_END
    (capture stored durably)
    ACK(A)      ───────────────────────▶
                ◀───────────────────────  CAPTURE_BEGIN  (capture B) …

1. The host sends HOST_HELLO whenever it opens the port (and may send it again at
   any time). The device abandons any transfer in progress, answers HELLO and then
   offers, from the start and oldest first, every capture not yet ACKed.
2. The device offers one capture at a time: BEGIN, DATA in increasing offset order
   without gaps (offset of each chunk = sum of the previous chunk sizes), END. It
   then waits for ACK or NAK of that capture before offering the next one.
3. The host checks that the data is gap-free, that the byte count matches BEGIN and
   END, and the SHA-256. It sends ACK **only after the capture is durably saved**.
   On ACK the device may delete the capture.
4. NAK carries a reason (:class:`NakReason`). The device keeps the capture and offers
   it again later (after a short delay, or on the next HOST_HELLO). A host may NAK a
   capture while its data is still arriving; the device should stop sending it.
   ``length`` in CAPTURE_BEGIN is a claim the host checks against its limits, never
   an allocation: a capture larger than the host accepts is NAKed ``TOO_LARGE``
   right at its BEGIN (a device should then offer its other captures first).
5. A host that sees a re-offer of a capture it already saved (same serial and
   capture id, same SHA-256) ACKs it again without storing a second copy. Same id
   with different content is refused with ``CONFLICT``.
6. A device that gets neither ACK nor NAK within its timeout (30 s suggested) treats
   the host as gone and waits for the next HOST_HELLO. A host whose transfer stalls
   (no new, in-order data for its stall timeout: lone 0x00 bytes, duplicated or
   unreadable frames do not count) NAKs the capture with ``TIMEOUT``.
7. Frames the host receives after sending HOST_HELLO and before the HELLO that
   answers it are stale (from before the reconnect) and are ignored. A duplicated
   DATA frame (same offset, same bytes) is ignored.

The host side of this conversation is
:class:`~drivers.serial_dermatoscope.session.HostSession`. The device side is small
enough to be written directly on top of :func:`encode_frame` and
:class:`FrameDecoder`; the simulator in this package does so.
"""

from __future__ import annotations

from drivers.serial_dermatoscope.framing import (
    DATA_CHUNK,
    MAX_BODY,
    MAX_ENCODED,
    CobsError,
    Frame,
    FrameDecoder,
    FrameError,
    cobs_decode,
    cobs_encode,
    decode_body,
    encode_body,
    encode_frame,
)
from drivers.serial_dermatoscope.messages import (
    Ack,
    CaptureBegin,
    CaptureData,
    CaptureEnd,
    Hello,
    HostHello,
    Message,
    MessageType,
    Nak,
    NakReason,
    ProtocolValueError,
)

__all__ = [
    "DATA_CHUNK",
    "MAX_BODY",
    "MAX_ENCODED",
    "Ack",
    "CaptureBegin",
    "CaptureData",
    "CaptureEnd",
    "CobsError",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "Hello",
    "HostHello",
    "Message",
    "MessageType",
    "Nak",
    "NakReason",
    "ProtocolValueError",
    "cobs_decode",
    "cobs_encode",
    "decode_body",
    "encode_body",
    "encode_frame",
]
