"""Serial dermatoscope driver: the adapter between the wire and the spool.

Transport (:mod:`.transport`) moves bytes; the sans-I/O :class:`HostSession`
(:mod:`.protocol`) turns them into events; this adapter streams each capture into
the gateway's spool and ACKs it only after the spool says it is durable. It
reconnects for ever when the port disappears (jittered, capped backoff) and treats
the device as connected only after its HELLO answers our HOST_HELLO.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from drivers.serial_dermatoscope import protocol as p
from drivers.serial_dermatoscope import session as hs
from drivers.serial_dermatoscope.transport import LinkLost, SerialLink
from gateway.driver_api import (
    Backoff,
    BaseDriver,
    CaptureOffer,
    CaptureRefused,
    CaptureSink,
    ContactMethod,
    DermoscopySettings,
    DeviceClass,
    DeviceHost,
    DeviceIdentity,
    DriverState,
    ImmersionMedium,
    Laterality,
    Matcher,
    Polarization,
    SerialMatch,
)

log = logging.getLogger(__name__)


class SerialDermatoscopeOptions(BaseModel):
    """Options of a ``[[devices]]`` entry with ``driver = "serial-dermatoscope"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: str = Field(description="Device path or pyserial URL (socket://, rfc2217://).")
    baudrate: int = Field(default=115200, gt=0, description="Line speed (ignored by USB-CDC).")
    handshake_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait for HELLO before asking again."
    )
    stall_timeout: float = Field(
        default=30.0,
        gt=0,
        description="A transfer that gets no new data this long is NAKed (TIMEOUT), "
        "whatever other bytes (keep-alive 0x00, repeated frames) keep arriving.",
    )
    reconnect_max: float = Field(
        default=30.0, gt=0, description="Longest wait between attempts to reopen the port."
    )


def identity_from_hello(hello: p.Hello) -> DeviceIdentity:
    """The gateway's view of a device's HELLO."""
    return DeviceIdentity(
        manufacturer=hello.manufacturer,
        model=hello.model,
        serial_number=hello.serial,
        software_versions=(hello.firmware,),
        device_class=DeviceClass.DERMATOSCOPE,
        capabilities=hello.capabilities,
    )


def offer_from_begin(begin: p.CaptureBegin) -> CaptureOffer:
    """The gateway's view of a CAPTURE_BEGIN (values were checked by the protocol)."""
    return CaptureOffer(
        device_capture_id=begin.capture_id,
        acquired_at=datetime.fromisoformat(begin.timestamp) if begin.timestamp else None,
        length=begin.length,
        settings=DermoscopySettings(
            polarization=Polarization(begin.polarization) if begin.polarization else None,
            contact=ContactMethod(begin.contact) if begin.contact else None,
            immersion=ImmersionMedium(begin.immersion) if begin.immersion else None,
            magnification=float(begin.magnification) if begin.magnification else None,
            color_temperature_k=begin.color_temperature_k,
        ),
        anatomic_site=begin.anatomic_site,
        laterality=Laterality(begin.laterality) if begin.laterality else None,
        lesion_id=begin.lesion_id,
    )


class _Connection:
    """One open port: handshake, then captures until the link is lost."""

    def __init__(
        self, link: SerialLink, host: DeviceHost, options: SerialDermatoscopeOptions, name: str
    ) -> None:
        self.link = link
        self.host = host
        self.options = options
        self.name = name
        self.session = hs.HostSession(host="dermgate")
        self.identity: DeviceIdentity | None = None
        self.sink: CaptureSink | None = None
        self.dropped = 0

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        await self.link.write(self.session.hello_frame())
        asked = progress = loop.time()
        try:
            while True:
                data = await self.link.read()
                now = loop.time()
                for event in self.session.receive(data) if data else ():
                    await self._handle(event)
                    if isinstance(event, hs.CaptureStarted | hs.CaptureBytes):
                        # only new, in-order bytes bring a capture closer to its end
                        progress = now = loop.time()
                if self.identity is None and now - asked > self.options.handshake_timeout:
                    await self.link.write(self.session.hello_frame())
                    asked = now
                if self.sink is not None and now - progress > self.options.stall_timeout:
                    # Bytes that bring the capture no closer to its end (lone 0x00, a
                    # repeated DATA frame, garbage) do not keep it alive.
                    failed = self.session.fail_current(p.NakReason.TIMEOUT, "transfer stalled")
                    if failed is not None:
                        await self._handle(failed)
        finally:
            if self.sink is not None:
                await self.sink.abort("link lost during transfer")
                self.sink = None

    async def _handle(self, event: hs.Event) -> None:
        match event:
            case hs.DeviceIdentified(hello=hello):
                if self.sink is not None:
                    await self.sink.abort("device restarted its offers")
                    self.sink = None
                self.identity = identity_from_hello(hello)
                self._idle()
            case hs.CaptureStarted(begin=begin):
                await self._begin(begin)
            case hs.CaptureBytes(capture_id=capture_id, data=data):
                if self.sink is not None:
                    try:
                        await self.sink.write(data)
                    except CaptureRefused as err:  # e.g. the disk filled up mid-transfer
                        self.sink = None
                        await self._refuse(capture_id, err)
            case hs.CaptureCompleted(capture_id=capture_id, length=length, sha256=sha256):
                await self._complete(capture_id, length, sha256)
            case hs.CaptureFailed(capture_id=capture_id, reason=reason, detail=detail):
                if self.sink is not None:
                    await self.sink.abort(f"{reason}: {detail}")
                    self.sink = None
                log.warning(
                    "%s: capture %s refused: %s (%s)", self.name, capture_id, reason, detail
                )
                await self.link.write(self.session.nak_frame(capture_id, reason))
                self._idle()
            case hs.FrameDropped():
                self.dropped += 1

    def _idle(self) -> None:
        if self.identity is not None:
            self.host.set_state(
                DriverState.READY, f"{self.identity.model} {self.identity.serial_number}"
            )

    async def _begin(self, begin: p.CaptureBegin) -> None:
        if self.sink is not None:
            await self.sink.abort("superseded by a new offer")
            self.sink = None
        if self.identity is None:
            return
        self.host.set_state(DriverState.TRANSFERRING)
        try:
            self.sink = await self.host.begin_capture(self.identity, offer_from_begin(begin))
        except CaptureRefused as err:
            await self._refuse(begin.capture_id, err)

    async def _complete(self, capture_id: str, length: int, sha256: str) -> None:
        sink, self.sink = self.sink, None
        if sink is None:
            return
        try:
            await sink.commit(length=length, sha256=sha256)
        except CaptureRefused as err:
            await self._refuse(capture_id, err)
            return
        await self.link.write(self.session.ack_frame(capture_id))
        self._idle()

    async def _refuse(self, capture_id: str, err: CaptureRefused) -> None:
        log.warning("%s: capture %s refused: %s", self.name, capture_id, err)
        self.session.fail_current(p.NakReason(err.reason.value), err.detail)
        await self.link.write(self.session.nak_frame(capture_id, p.NakReason(err.reason.value)))
        self._idle()


class SerialDermatoscopeDriver(BaseDriver[SerialDermatoscopeOptions]):
    """Driver ``serial-dermatoscope``: a handheld dermatoscope on USB-CDC serial."""

    id: ClassVar[str] = "serial-dermatoscope"
    device_class: ClassVar[DeviceClass] = DeviceClass.DERMATOSCOPE
    Options = SerialDermatoscopeOptions
    matchers: ClassVar[tuple[Matcher, ...]] = (SerialMatch("/dev/ttyACM*"),)
    simulator: ClassVar[str] = "drivers.serial_dermatoscope.simulator:main"
    #: How ``dermgate conformance`` drives the simulator (the kit's simulator hook).
    conformance: ClassVar[str] = "drivers.serial_dermatoscope.conformance:SerialDermatoscopeAdapter"

    async def run(self) -> None:
        """Open the port, serve the device, and reopen it for ever when it goes."""
        backoff = Backoff(initial=0.5, cap=self.options.reconnect_max)
        while True:
            try:
                link = await SerialLink.open(self.options.port, self.options.baudrate)
            except LinkLost:
                self.host.set_state(DriverState.DISCONNECTED, "port not available")
                await asyncio.sleep(backoff.next_delay())
                continue
            self.host.set_state(DriverState.CONNECTING, "waiting for the device's HELLO")
            connection = _Connection(link, self.host, self.options, self.name)
            try:
                await connection.serve()
            except LinkLost:
                self.host.set_state(DriverState.DISCONNECTED, "port lost")
            finally:
                await link.close()
            if connection.identity is not None:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())
