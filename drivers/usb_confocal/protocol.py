r"""The reference USB protocol of a reflectance confocal microscope, sans I/O.

Vendors publish no protocol for these devices, so DermGate defines this one; the
driver speaks it and so does the simulator, at the USB transfer level. This module
is its specification and the one place to import it from; the code lives in
:mod:`.messages` (what both sides share: ids, types, the stack header, framing and
encoding), :mod:`.stack_reader` (the host side) and :mod:`.device_side` (the
device side), none of which does I/O.

**Device**: vendor-specific class (bDeviceClass 0xFF), VID:PID ``0x1d50:0x6189``
(DermGate reference RCM-1), one configuration, one interface (class 0xFF) with two
bulk endpoints: ``0x81`` IN (device → host stream) and ``0x02`` OUT (host → device).

**Identity** by vendor control requests (bmRequestType 0xC0: IN, vendor, device),
bRequest ``0x01`` GET_IDENTITY, wValue = field, wIndex 0, answer UTF-8 (≤ 64 bytes):
0 manufacturer, 1 model, 2 serial number, 3 firmware version, 4 laser wavelength
in nm (decimal text).

**Messages** (both directions) are framed so a reader can resynchronise after
garbage::

    "DGCF" | type u8 | flags u8 (0) | length u16 LE | payload (length bytes) | CRC-32 u32 LE

The CRC-32 (zlib) covers type, flags, length and payload. A payload is at most
4096 bytes. JSON payloads are UTF-8 objects.

Device → host (bulk IN):

* ``0x01 STACK_HEADER`` JSON: ``stack_id`` (1–64 printable ASCII, unique per
  device), ``kind`` ("z-stack" | "mosaic"), ``frames``, ``width``, ``height``,
  ``bits`` (8 | 16), ``pixel_spacing_um``, ``z_step_um``, ``wavelength_nm``,
  ``objective`` (text), ``magnification``, optional ``numerical_aperture``,
  ``acquired_at`` (ISO 8601), optional ``frame_ms`` (time to acquire one frame,
  ms: DICOM needs it as Frame Acquisition Duration of each original frame), and
  for mosaics ``tile_rows``, ``tile_cols`` (rows × cols = frames; tiles are sent
  row by row). Optional lesion fields (added later; a host that does not know them
  ignores them, a device that does not send them means "not said"):
  ``anatomic_site`` (a SNOMED CT code value from DICOM CID 4029, digits only),
  ``laterality`` ("R", "L", "B" or "U") and ``lesion_id`` (the device's lesion
  label, 1–64 printable characters; it becomes the Tracking ID). A present but
  invalid value makes the header invalid, as for any other field.
* ``0x02 FRAME`` binary ``<IdHH``: frame index (0-based, in order), z position
  in µm below the surface, tile row, tile column. It is followed **immediately and
  unframed** by the frame's raw pixels: width × height × bits/8 bytes, little
  endian, row by row. The pixels are not CRC-protected; the stack's SHA-256 is.
* ``0x03 STACK_TRAILER`` JSON: ``stack_id``, ``length`` (all pixel bytes),
  ``sha256`` (hex digest of all pixel bytes of all frames, in order).

Host → device (bulk OUT): ``0x10 HOST_HELLO`` JSON ``{"host": …}`` (the device
restarts offering from its oldest unacknowledged stack); ``0x11 ACK`` JSON
``{"stack_id": …}`` sent **only after the stack is durable**; ``0x12 NAK`` JSON
``{"stack_id": …, "reason": …}`` (:class:`NakReason`).

The device keeps every stack until it is ACKed and offers unacknowledged stacks
again after a NAK, a reconnect or a HOST_HELLO; the host recognises a re-offer of
a stack it already saved and ACKs it again. A NAK may come while the stack is
still streaming (the host refuses it at its header, e.g. disk full, TOO_LARGE
when frames × width × height × bits/8 is more than it accepts, or TOO_MANY_FRAMES
when ``frames`` is more than it accepts, however small each frame): the device
then abandons that offer at once, and the host drops its reader state
(:meth:`StackReader.interrupt`) so the bytes still in flight are skipped as
garbage up to the next message. (Pixels are unframed, so a reader that kept
waiting for the rest of an abandoned frame would swallow the next header.)

:class:`StackReader` parses the IN stream: bytes in, :data:`Event`\ s out. It never
raises on garbage: bytes that are not a valid message are skipped until the next
valid one (``Resynchronised``); a stack that cannot complete (a message missing,
a frame out of order, a wrong checksum, an interrupted transfer) ends with
``StackFailed`` so the host can discard what it staged and NAK. Pixel bytes are
passed through in the pieces they arrive in, never accumulated: memory is bounded
by the largest message (4 KiB), whatever the stack size.
"""

from __future__ import annotations

from drivers.usb_confocal.device_side import HostMessage, HostMessageReader, encode_stack
from drivers.usb_confocal.messages import (
    EP_IN,
    EP_OUT,
    GET_IDENTITY,
    INTERFACE,
    MAGIC,
    MAX_PAYLOAD,
    PRODUCT_ID,
    REQUEST_TYPE_VENDOR_IN,
    VENDOR_ID,
    IdentityField,
    MessageType,
    NakReason,
    StackHeader,
    encode_frame_header,
    encode_json,
    encode_message,
)
from drivers.usb_confocal.stack_reader import (
    Event,
    FrameStarted,
    PixelBytes,
    Resynchronised,
    StackCompleted,
    StackFailed,
    StackReader,
    StackStarted,
)

__all__ = [
    "EP_IN",
    "EP_OUT",
    "GET_IDENTITY",
    "INTERFACE",
    "MAGIC",
    "MAX_PAYLOAD",
    "PRODUCT_ID",
    "REQUEST_TYPE_VENDOR_IN",
    "VENDOR_ID",
    "Event",
    "FrameStarted",
    "HostMessage",
    "HostMessageReader",
    "IdentityField",
    "MessageType",
    "NakReason",
    "PixelBytes",
    "Resynchronised",
    "StackCompleted",
    "StackFailed",
    "StackHeader",
    "StackReader",
    "StackStarted",
    "encode_frame_header",
    "encode_json",
    "encode_message",
    "encode_stack",
]
