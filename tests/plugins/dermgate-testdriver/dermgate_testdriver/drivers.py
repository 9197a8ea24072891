"""Drivers that misbehave on purpose, to test the gateway's supervision.

- ``test-crasher``: says CONNECTING, then raises ``crash_after`` seconds after each
  start, every time (a driver with a bug).
- ``test-hanger``: begins a capture, writes ``chunk`` bytes, says TRANSFERRING and then
  makes no progress at all (a driver stuck on a device that stopped talking).
- ``test-stubborn``: says READY; when stopped, its cleanup blocks in a thread for
  ``cleanup_seconds`` and ignores being cancelled again (a driver whose device call
  never returns).
- ``test-wedger``: says READY; once the file ``wedge_when`` exists it blocks the event
  loop in ``time.sleep(wedge_seconds)`` (a driver that calls a blocking library on the
  loop: the whole gateway stands still, which only systemd's watchdog can see).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from gateway.core.capture import CaptureOffer, ContentType, DeviceClass, DeviceIdentity
from gateway.devices.contract import DeviceHost, DriverState, Matcher

IDENTITY = DeviceIdentity(
    manufacturer="DermGate Test Plugins",
    model="Misbehaving Device",
    serial_number="TEST-0001",
    software_versions=("0.1.0",),
    device_class=DeviceClass.DERMATOSCOPE,
)


class CrasherOptions(BaseModel):
    """Options of ``driver = "test-crasher"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crash_after: float = Field(default=0.2, ge=0, description="Seconds until each crash.")


class CrasherDriver:
    """Driver ``test-crasher``: raises shortly after every start."""

    id: ClassVar[str] = "test-crasher"
    device_class: ClassVar[DeviceClass] = DeviceClass.DERMATOSCOPE
    Options: ClassVar[type[BaseModel]] = CrasherOptions
    matchers: ClassVar[tuple[Matcher, ...]] = ()

    def __init__(self, options: BaseModel, host: DeviceHost, name: str) -> None:
        assert isinstance(options, CrasherOptions)
        self.options = options
        self.host = host

    async def run(self) -> None:
        """Crash."""
        self.host.set_state(DriverState.CONNECTING, "about to crash")
        await asyncio.sleep(self.options.crash_after)
        raise RuntimeError("test-crasher: simulated driver bug")


class HangerOptions(BaseModel):
    """Options of ``driver = "test-hanger"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk: int = Field(default=4096, ge=1, description="Bytes written before hanging.")


class HangerDriver:
    """Driver ``test-hanger``: starts a capture and stops making progress."""

    id: ClassVar[str] = "test-hanger"
    device_class: ClassVar[DeviceClass] = DeviceClass.DERMATOSCOPE
    Options: ClassVar[type[BaseModel]] = HangerOptions
    matchers: ClassVar[tuple[Matcher, ...]] = ()

    runs: ClassVar[int] = 0

    def __init__(self, options: BaseModel, host: DeviceHost, name: str) -> None:
        assert isinstance(options, HangerOptions)
        self.options = options
        self.host = host

    async def run(self) -> None:
        """Begin a capture, write a little, then wait for ever."""
        HangerDriver.runs += 1
        self.host.set_state(DriverState.READY, "test device")
        offer = CaptureOffer(
            device_capture_id=f"hang-{HangerDriver.runs}",
            length=self.options.chunk * 10,
            content_type=ContentType.JPEG,
        )
        sink = await self.host.begin_capture(IDENTITY, offer)
        self.host.set_state(DriverState.TRANSFERRING)
        await sink.write(b"\xff" * self.options.chunk)
        await asyncio.Event().wait()


class StubbornOptions(BaseModel):
    """Options of ``driver = "test-stubborn"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cleanup_seconds: float = Field(default=3600, gt=0, description="How long cleanup blocks.")


class StubbornDriver:
    """Driver ``test-stubborn``: its cleanup does not finish when the gateway stops."""

    id: ClassVar[str] = "test-stubborn"
    device_class: ClassVar[DeviceClass] = DeviceClass.DERMATOSCOPE
    Options: ClassVar[type[BaseModel]] = StubbornOptions
    matchers: ClassVar[tuple[Matcher, ...]] = ()

    def __init__(self, options: BaseModel, host: DeviceHost, name: str) -> None:
        assert isinstance(options, StubbornOptions)
        self.options = options
        self.host = host

    async def run(self) -> None:
        """Wait for ever; on cancellation, block in a blocking call that never returns."""
        self.host.set_state(DriverState.READY, "test device")
        try:
            await asyncio.Event().wait()
        finally:
            closing = asyncio.ensure_future(
                asyncio.to_thread(time.sleep, self.options.cleanup_seconds)
            )
            while not closing.done():
                try:
                    await asyncio.shield(closing)
                except asyncio.CancelledError:
                    continue


class WedgerOptions(BaseModel):
    """Options of ``driver = "test-wedger"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wedge_when: Path = Field(description="Block the event loop once this file exists.")
    wedge_seconds: float = Field(default=3600, gt=0, description="How long it blocks.")


class WedgerDriver:
    """Driver ``test-wedger``: blocks the event loop when told to (a file appears)."""

    id: ClassVar[str] = "test-wedger"
    device_class: ClassVar[DeviceClass] = DeviceClass.DERMATOSCOPE
    Options: ClassVar[type[BaseModel]] = WedgerOptions
    matchers: ClassVar[tuple[Matcher, ...]] = ()

    def __init__(self, options: BaseModel, host: DeviceHost, name: str) -> None:
        assert isinstance(options, WedgerOptions)
        self.options = options
        self.host = host

    async def run(self) -> None:
        """Serve until the file appears, then block the loop (a blocking call on it)."""
        self.host.set_state(DriverState.READY, "test device")
        while not self.options.wedge_when.exists():
            await asyncio.sleep(0.1)
        logging.getLogger(__name__).warning("test-wedger: blocking the event loop")
        time.sleep(self.options.wedge_seconds)  # blocking the loop is the point
        await asyncio.Event().wait()
