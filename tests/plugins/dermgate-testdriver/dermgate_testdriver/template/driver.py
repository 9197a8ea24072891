"""Driver ``test-template``: the TC-1 socket camera (a template to copy).

The whole contract in one class: ``id``, ``device_class``, ``Options`` (the
``[[devices]]`` keys), ``matchers`` (empty: nothing to hotplug), the simulator hook
(``simulator`` and ``conformance``), ``__init__(options, host, name)`` and ``run()``,
which serves the device until the gateway cancels it and reconnects on its own.

The one rule that matters: tell the device "saved" only after ``sink.commit``
returned. Before that, nothing is durable; if anything goes wrong the sink is
aborted and the device, never told, offers the photo again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

# The only DermGate module a driver imports: what is not exported there may change.
from gateway.driver_api import (
    Backoff,
    BaseDriver,
    CaptureOffer,
    CaptureRefused,
    CaptureSink,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    DriverState,
    Matcher,
)

from . import protocol

log = logging.getLogger(__name__)

#: Bytes read (and handed to the gateway) at a time.
CHUNK = 64 * 1024


class TemplateOptions(BaseModel):
    """Options of ``driver = "test-template"`` (``extra="forbid"``: a typo is an error
    that ``dermgate check-config`` names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    socket: Path = Field(description="The Unix socket the camera listens on.")
    stall_timeout: float = Field(
        default=10.0, gt=0, description="Seconds without a byte mid-photo before giving up."
    )
    reconnect_max: float = Field(
        default=5.0, gt=0, description="Longest wait between reconnection attempts (seconds)."
    )


class DeviceLost(Exception):
    """The device closed the connection, or went quiet in the middle of a photo."""


class TemplateDriver(BaseDriver[TemplateOptions]):
    """Driver ``test-template``: photos from a TC-1 camera on a Unix socket."""

    id: ClassVar[str] = "test-template"
    device_class: ClassVar[DeviceClass] = DeviceClass.CAMERA
    Options = TemplateOptions  # mypy checks it is the model named in BaseDriver[...]
    matchers: ClassVar[tuple[Matcher, ...]] = ()
    # The simulator hook: "module:attribute" strings, imported only by `dermgate
    # simulate` and `dermgate conformance`, never by a running gateway.
    simulator: ClassVar[str] = "dermgate_testdriver.template.simulator:main"
    conformance: ClassVar[str] = "dermgate_testdriver.template.conformance:TemplateAdapter"

    # BaseDriver.__init__(options, host, name) keeps them as self.options (typed
    # TemplateOptions: the gateway validated the [[devices]] keys with Options),
    # self.host and self.name; a driver that needs more overrides it and calls super().

    async def run(self) -> None:
        """Connect, serve until the device goes away, wait (backing off), again."""
        backoff = Backoff(initial=0.2, cap=self.options.reconnect_max)
        while True:
            self.host.set_state(DriverState.CONNECTING, str(self.options.socket))
            try:
                reader, writer = await asyncio.open_unix_connection(self.options.socket)
            except OSError as err:
                self.host.set_state(DriverState.DISCONNECTED, err.strerror or type(err).__name__)
                await asyncio.sleep(backoff.next_delay())
                continue
            try:
                await self._serve(reader, writer, backoff)
            except (OSError, DeviceLost) as err:
                log.info("%s: connection lost: %s", self.name, err)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            self.host.set_state(DriverState.DISCONNECTED, "device went away")
            await asyncio.sleep(backoff.next_delay())

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, backoff: Backoff
    ) -> None:
        """One connection: the device's HELLO, then its offers until it hangs up."""
        hello = protocol.parse_frame(await self._line(reader))
        if not isinstance(hello, protocol.Hello):
            raise DeviceLost("the device did not say HELLO")
        identity = DeviceIdentity(
            manufacturer="DermGate Template Devices",
            model="TC-1 Socket Camera",
            serial_number=hello.serial,
            software_versions=(hello.firmware,),
            device_class=DeviceClass.CAMERA,
        )
        backoff.reset()  # the device answered: the next loss starts the waits afresh
        ready = f"{identity.model} {identity.serial_number}"
        self.host.set_state(DriverState.READY, ready)
        while True:
            frame = protocol.parse_frame(await self._line(reader))
            if not isinstance(frame, protocol.Offer):
                log.debug("%s: skipped a line that is no offer", self.name)
                continue
            writer.write(await self._receive(reader, identity, frame))
            await writer.drain()
            self.host.set_state(DriverState.READY, ready)

    async def _line(self, reader: asyncio.StreamReader) -> bytes:
        """The next header line; garbage too long to be one is skipped."""
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # over the stream's limit (64 KiB): garbage, dropped
                continue
            if not line:
                raise DeviceLost("the device closed the connection")
            if len(line) <= protocol.MAX_LINE:
                return line

    def capture_offer(self, offer: protocol.Offer) -> CaptureOffer:
        """What the gateway is told about a photo. The device's own capture id, the
        same each time it offers this photo, is how a re-offer is recognised."""
        return CaptureOffer(
            device_capture_id=offer.capture_id,
            length=offer.length,  # a claim: the gateway refuses one over its limit
            content_type=ContentType.JPEG,
        )

    async def _receive(
        self, reader: asyncio.StreamReader, identity: DeviceIdentity, offer: protocol.Offer
    ) -> bytes:
        """Stream one offered photo into the gateway; the reply to send the device."""
        try:
            sink = await self.host.begin_capture(identity, self.capture_offer(offer))
        except CaptureRefused as refusal:  # e.g. TOO_LARGE, DISK_FULL: read past it
            await self._copy(reader, offer.length, None)
            return protocol.refused(offer.capture_id, refusal.reason.value)
        self.host.set_state(DriverState.TRANSFERRING, offer.capture_id)
        try:
            await self._copy(reader, offer.length, sink)
            await sink.commit(length=offer.length, sha256=offer.sha256)
        except CaptureRefused as refusal:  # a wrong checksum, the disk filled up …
            return protocol.refused(offer.capture_id, refusal.reason.value)  # sink discarded it
        except BaseException:  # the device went away, or the gateway stops the driver
            await sink.abort("transfer interrupted")
            raise
        return protocol.saved(offer.capture_id)  # durable: now the device may forget it

    async def _copy(
        self, reader: asyncio.StreamReader, length: int, sink: CaptureSink | None
    ) -> None:
        """Read ``length`` bytes into ``sink`` (or drop them, without a sink). A refusal
        mid-way is raised only once the photo's last byte is read: the next line on
        the wire is then a header again."""
        refusal: CaptureRefused | None = None
        remaining = length
        while remaining:
            try:
                async with asyncio.timeout(self.options.stall_timeout):
                    chunk = await reader.read(min(remaining, CHUNK))
            except TimeoutError as err:
                raise DeviceLost(f"no byte for {self.options.stall_timeout:g} s") from err
            if not chunk:
                raise DeviceLost(f"connection closed {remaining} bytes before the end")
            remaining -= len(chunk)
            if sink is not None and refusal is None:
                try:
                    await sink.write(chunk)
                except CaptureRefused as err:
                    refusal = err
        if refusal is not None:
            raise refusal
