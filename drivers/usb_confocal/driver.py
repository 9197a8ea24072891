"""USB confocal microscope driver: the adapter between the USB stream and the spool.

Transport (:mod:`.transport`) moves bytes over pyusb on worker threads; the
sans-I/O :class:`~.protocol.StackReader` turns them into events; this adapter
streams each stack's pixels into the spool and ACKs the stack only after the spool
says it is durable. Each frame's depth (or tile position) learned during the
transfer goes with the final offer at commit, in ``offer.extra`` as a
:class:`~gateway.driver_api.ConfocalStack`. The driver finds the device with
``usb.core.find`` and re-finds it for ever when it goes (jittered, capped
backoff); states: DISCONNECTED (not found), CONNECTING (attached, reading its
identity), READY, TRANSFERRING.
"""

from __future__ import annotations

import asyncio
import logging
from array import array
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drivers.usb_confocal import protocol as p
from drivers.usb_confocal.transport import LinkLost, UsbLink, UsbLocation, backend_from_option
from gateway.driver_api import (
    MAX_FRAMES,
    Backoff,
    BaseDriver,
    CaptureOffer,
    CaptureRefused,
    CaptureSink,
    ConfocalStack,
    ContentType,
    DeviceClass,
    DeviceHost,
    DeviceIdentity,
    DriverState,
    Laterality,
    Matcher,
    RowMajorTiles,
    UsbMatch,
)

log = logging.getLogger(__name__)

__all__ = ["UsbConfocalDriver", "UsbConfocalOptions", "identity_from_fields", "stack_of"]


class UsbConfocalOptions(BaseModel):
    """Options of a ``[[devices]]`` entry with ``driver = "usb-confocal"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    usb_backend: str | None = Field(
        default=None,
        description='pyusb backend: omitted = libusb; "emulated:/path/to.sock" = simulator.',
    )
    vendor_id: int = Field(default=p.VENDOR_ID, ge=0, le=0xFFFF, description="USB vendor id.")
    product_id: int = Field(default=p.PRODUCT_ID, ge=0, le=0xFFFF, description="USB product id.")
    usb_port: str | None = Field(
        default=None,
        description='Serve only the device at this place: a port such as "1-1.3" (stays '
        'the same across plug-ins) or a device node "/dev/bus/usb/001/007" (hotplug: '
        '"{devnode}"). Needed when identical microscopes share one box.',
    )
    read_size: int = Field(
        default=1 << 20, ge=512, le=16 << 20, description="Bytes asked per bulk IN transfer."
    )
    read_timeout_ms: int = Field(
        default=500, gt=0, description="Milliseconds one bulk IN transfer waits for data."
    )
    stall_timeout: float = Field(
        default=30.0,
        gt=0,
        description="A stack that gets no new frame or pixel bytes this long is NAKed "
        "(TIMEOUT), whatever other bytes (garbage) keep arriving.",
    )
    reconnect_max: float = Field(
        default=30.0, gt=0, description="Longest wait between attempts to find the device."
    )
    max_frames: int = Field(
        default=10_000,
        ge=1,
        le=MAX_FRAMES,
        description="A stack announcing more frames than this is refused at its header "
        "(NAK TOO_MANY_FRAMES), before anything is stored or acknowledged. Real RCMs "
        "record tens to a few hundred frames a stack and mosaics of up to a few "
        f"thousand tiles; at most {MAX_FRAMES} (what the DICOM writer takes).",
    )

    @field_validator("usb_port")
    @classmethod
    def _usb_location(cls, value: str | None) -> str | None:
        if value is not None:
            UsbLocation.parse(value)
        return value

    @field_validator("usb_backend")
    @classmethod
    def _known_backend(cls, value: str | None) -> str | None:
        if value is None or value == "libusb":
            return value
        kind, _, path = value.partition(":")
        if kind != "emulated" or not path:
            raise ValueError("use 'libusb' (or leave it out) or 'emulated:/path/to.sock'")
        return value


def identity_from_fields(fields: dict[p.IdentityField, str]) -> DeviceIdentity:
    """The gateway's view of the device's GET_IDENTITY answers."""
    wavelength = fields.get(p.IdentityField.WAVELENGTH_NM, "")
    return DeviceIdentity(
        manufacturer=fields.get(p.IdentityField.MANUFACTURER, ""),
        model=fields.get(p.IdentityField.MODEL, ""),
        serial_number=fields.get(p.IdentityField.SERIAL, ""),
        software_versions=(fields.get(p.IdentityField.FIRMWARE, ""),),
        device_class=DeviceClass.CONFOCAL_MICROSCOPE,
        capabilities=(f"laser-{wavelength}nm",) if wavelength else (),
    )


def stack_of(
    header: p.StackHeader,
    depths_um: array[float] | None = None,
    tiles: RowMajorTiles | None = None,
) -> ConfocalStack:
    """The DICOM builder's description of a stack (per-frame data when known)."""
    return ConfocalStack(
        kind="mosaic" if header.kind == "mosaic" else "z-stack",
        frames=header.frames,
        rows=header.height,
        columns=header.width,
        bits=header.bits,
        pixel_spacing_um=header.pixel_spacing_um,
        wavelength_nm=header.wavelength_nm,
        z_step_um=header.z_step_um,
        objective=header.objective,
        magnification=header.magnification,
        numerical_aperture=header.numerical_aperture,
        tile_rows=header.tile_rows,
        tile_columns=header.tile_cols,
        depths_um=depths_um if depths_um is not None else (),
        tiles=tiles if tiles is not None else (),
        frame_ms=header.frame_ms,
    )


def offer_for(header: p.StackHeader) -> CaptureOffer:
    """The offer announced when a stack starts: geometry, and the lesion if the
    device named one."""
    try:
        acquired = datetime.fromisoformat(header.acquired_at) if header.acquired_at else None
    except ValueError:
        acquired = None
    return CaptureOffer(
        device_capture_id=header.stack_id,
        acquired_at=acquired,
        length=header.length,
        content_type=ContentType.PIXELS,
        extra=stack_of(header).to_extra(),
        anatomic_site=header.anatomic_site,
        laterality=Laterality(header.laterality) if header.laterality else None,
        lesion_id=header.lesion_id,
    )


#: Events that bring the stack in progress closer to its end.
_PROGRESS = (p.StackStarted, p.FrameStarted, p.PixelBytes)


class _Transfer:
    """The stack being received: 8 bytes a frame (its depth), whatever the count.

    The tiles of a mosaic are not recorded: the reader takes them only in row-major
    order (:class:`~drivers.usb_confocal.protocol.StackReader`), so the grid says it.
    """

    __slots__ = ("depths", "header", "offer", "sink")

    def __init__(self, header: p.StackHeader, offer: CaptureOffer, sink: CaptureSink) -> None:
        self.header = header
        self.offer = offer
        self.sink = sink
        self.depths = array("d")


#: Stack ids whose refusal for too many frames was logged (not again at each re-offer).
_REMEMBERED_REFUSALS = 64


class _Connection:
    """One attached device: identity, HOST_HELLO, then stacks until the link is lost."""

    def __init__(
        self, link: UsbLink, host: DeviceHost, options: UsbConfocalOptions, name: str
    ) -> None:
        self.link = link
        self.host = host
        self.options = options
        self.name = name
        self.reader = p.StackReader()
        self.identity: DeviceIdentity | None = None
        self.transfer: _Transfer | None = None
        self.skipping: str | None = None  # a refused stack whose bytes are ignored
        self.resynchronised = 0
        self.too_many_frames: OrderedDict[str, None] = OrderedDict()

    async def serve(self) -> None:
        self.host.set_state(DriverState.CONNECTING, "reading the device identity")
        self.identity = identity_from_fields(await self.link.identity())
        await self.link.write(p.encode_json(p.MessageType.HOST_HELLO, {"host": "dermgate"}))
        self._idle()
        loop = asyncio.get_running_loop()
        progress = loop.time()
        try:
            while True:
                data = await self.link.read(self.options.read_size, self.options.read_timeout_ms)
                now = loop.time()
                for event in self.reader.feed(data) if data else ():
                    await self._handle(event)
                    if isinstance(event, _PROGRESS):
                        progress = now = loop.time()
                if self.reader.current_stack is not None and (
                    now - progress > self.options.stall_timeout
                ):
                    # Bytes that bring the stack no closer to its end (garbage skipped
                    # while resynchronising) do not keep it alive.
                    for event in self.reader.interrupt("transfer stalled"):
                        await self._handle(event, reason=p.NakReason.TIMEOUT)
        finally:
            if self.transfer is not None:
                await self.transfer.sink.abort("link lost during transfer")
                self.transfer = None

    def _idle(self) -> None:
        if self.identity is not None:
            self.host.set_state(
                DriverState.READY, f"{self.identity.model} {self.identity.serial_number}"
            )

    async def _handle(self, event: p.Event, reason: p.NakReason | None = None) -> None:
        match event:
            case p.StackStarted(header=header):
                await self._begin(header)
            case p.FrameStarted(z_um=z_um):
                if self.transfer is not None:
                    self.transfer.depths.append(z_um)
            case p.PixelBytes(stack_id=stack_id, data=data):
                if self.transfer is not None:
                    try:
                        await self.transfer.sink.write(data)
                    except CaptureRefused as err:  # e.g. the disk filled up mid-transfer
                        self.transfer = None
                        await self._refuse(stack_id, err)
            case p.StackCompleted(stack_id=stack_id, length=length, sha256=sha256):
                await self._complete(stack_id, length, sha256)
            case p.StackFailed(stack_id=stack_id, reason=failed, detail=detail):
                if self.transfer is not None:
                    await self.transfer.sink.abort(f"{failed}: {detail}")
                    self.transfer = None
                nak = reason or failed
                log.warning("%s: stack %s failed: %s (%s)", self.name, stack_id, nak, detail)
                if stack_id is not None and self.skipping != stack_id:
                    await self._nak(stack_id, nak)
                self.skipping = None
                self._idle()
            case p.Resynchronised(skipped=skipped):
                self.resynchronised += skipped
                log.debug("%s: skipped %d bytes that were not a message", self.name, skipped)

    async def _begin(self, header: p.StackHeader) -> None:
        if self.transfer is not None:
            await self.transfer.sink.abort("superseded by a new offer")
            self.transfer = None
        self.skipping = None
        assert self.identity is not None
        if header.frames > self.options.max_frames and header.length <= self.host.max_capture_bytes:
            # (Too large in bytes as well: intake refuses it as TOO_LARGE just below,
            # naming the gateway-wide limit, which comes first.)
            await self._refuse_frames(header)
            return
        self.host.set_state(DriverState.TRANSFERRING, header.stack_id)
        offer = offer_for(header)
        try:
            sink = await self.host.begin_capture(self.identity, offer)
        except CaptureRefused as err:
            await self._refuse(header.stack_id, err)
            return
        self.transfer = _Transfer(header, offer, sink)

    async def _complete(self, stack_id: str, length: int, sha256: str) -> None:
        transfer, self.transfer = self.transfer, None
        if transfer is None or transfer.header.stack_id != stack_id:
            return
        header = transfer.header
        mosaic = header.kind == "mosaic"
        final = replace(
            transfer.offer,
            extra=stack_of(
                header,
                depths_um=None if mosaic else transfer.depths,
                tiles=RowMajorTiles(header.tile_rows, header.tile_cols) if mosaic else None,
            ).to_extra(),
        )
        try:
            receipt = await transfer.sink.commit(length=length, sha256=sha256, offer=final)
        except CaptureRefused as err:
            await self._refuse(stack_id, err)
            return
        await self.link.write(p.encode_json(p.MessageType.ACK, {"stack_id": stack_id}))
        log.info(
            "%s: stack %s saved (spool id %d%s); ACKed",
            self.name,
            stack_id,
            receipt.spool_id,
            ", a re-offer" if receipt.duplicate else "",
        )
        self._idle()

    async def _refuse(self, stack_id: str, err: CaptureRefused) -> None:
        log.warning("%s: stack %s refused: %s", self.name, stack_id, err)
        self.skipping = stack_id
        await self._nak(stack_id, p.NakReason(err.reason.value))
        if self.reader.current_stack == stack_id:
            # The device abandons a NAKed offer mid-stream; what is still in flight is
            # skipped as garbage up to its next message (a re-offer starts clean).
            self.reader.interrupt("refused by the host")
        self._idle()

    async def _refuse_frames(self, header: p.StackHeader) -> None:
        """NAK TOO_MANY_FRAMES at the header: nothing is staged, the device keeps it.

        Logged once per stack (the device offers it again and again), not at each offer.
        """
        stack_id = header.stack_id
        level = logging.DEBUG if stack_id in self.too_many_frames else logging.WARNING
        log.log(
            level,
            "%s: stack %s refused: %d frames, more than max_frames (%d); it stays on "
            "the device (NAK TOO_MANY_FRAMES)",
            self.name,
            stack_id,
            header.frames,
            self.options.max_frames,
        )
        self.too_many_frames[stack_id] = None
        self.too_many_frames.move_to_end(stack_id)
        while len(self.too_many_frames) > _REMEMBERED_REFUSALS:
            self.too_many_frames.popitem(last=False)
        self.skipping = stack_id
        await self._nak(stack_id, p.NakReason.TOO_MANY_FRAMES)
        if self.reader.current_stack == stack_id:
            self.reader.interrupt("refused by the host")  # see _refuse
        self._idle()

    async def _nak(self, stack_id: str, reason: p.NakReason) -> None:
        await self.link.write(
            p.encode_json(p.MessageType.NAK, {"stack_id": stack_id, "reason": reason.value})
        )


class UsbConfocalDriver(BaseDriver[UsbConfocalOptions]):
    """Driver ``usb-confocal``: a reflectance confocal microscope on USB (bulk)."""

    id: ClassVar[str] = "usb-confocal"
    device_class: ClassVar[DeviceClass] = DeviceClass.CONFOCAL_MICROSCOPE
    Options = UsbConfocalOptions
    matchers: ClassVar[tuple[Matcher, ...]] = (UsbMatch(p.VENDOR_ID, p.PRODUCT_ID),)
    simulator: ClassVar[str] = "drivers.usb_confocal.simulator:main"
    #: How ``dermgate conformance`` drives the simulator (the kit's simulator hook).
    conformance: ClassVar[str] = "drivers.usb_confocal.conformance:UsbConfocalAdapter"

    def __init__(self, options: UsbConfocalOptions, host: DeviceHost, name: str) -> None:
        super().__init__(options, host, name)
        self.backend: Any = backend_from_option(options.usb_backend)
        port = options.usb_port
        self.where = None if port is None else UsbLocation.parse(port)

    async def run(self) -> None:
        """Find the device, serve it, and find it again for ever when it goes."""
        backoff = Backoff(initial=0.5, cap=self.options.reconnect_max)
        while True:
            try:
                link = await UsbLink.open(
                    self.options.vendor_id, self.options.product_id, self.backend, self.where
                )
            except LinkLost as err:
                self.host.set_state(DriverState.DISCONNECTED, str(err))
                await asyncio.sleep(backoff.next_delay())
                continue
            connection = _Connection(link, self.host, self.options, self.name)
            try:
                await connection.serve()
            except LinkLost as err:
                self.host.set_state(DriverState.DISCONNECTED, str(err))
            finally:
                await link.close()
            if connection.identity is not None:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())
