"""What the supervisor's hang watchdog counts as a driver making no progress."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.capture import CaptureOffer, DeviceIdentity
from gateway.devices.contract import CaptureReceipt, CaptureSink, DriverState
from gateway.devices.host import DriverHost

IDENTITY = DeviceIdentity("ACME", "RCM-1", "SN1", ("1.0",))


class SlowSpool:
    """The spool side of one capture whose commit (the fsync) takes as long as the test says."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def write(self, chunk: bytes) -> None:
        """Take the bytes."""

    async def commit(
        self, *, length: int, sha256: str, offer: CaptureOffer | None = None
    ) -> CaptureReceipt:
        """Durable only when the test releases it."""
        await self.release.wait()
        return CaptureReceipt(1, "2.25.1", duplicate=False)

    async def abort(self, reason: str) -> None:
        """Nothing kept."""


async def test_a_slow_commit_is_not_a_hung_driver() -> None:
    spool = SlowSpool()

    async def begin(_identity: DeviceIdentity, _offer: CaptureOffer) -> CaptureSink:
        return spool

    host = DriverHost("rcm", begin)
    sink = await host.begin_capture(IDENTITY, CaptureOffer("stack-1"))
    host.set_state(DriverState.TRANSFERRING)
    await sink.write(b"x" * 1024)
    later = host.last_progress + 3600.0
    assert host.hung_for(later) == pytest.approx(3600.0), "a transfer that stopped moving is hung"

    committing = asyncio.create_task(sink.commit(length=1024, sha256="0" * 64))
    await asyncio.sleep(0)  # the commit is now waiting for its fsync
    assert host.hung_for(later) is None, "the spool's own fsync is not the driver hanging"

    spool.release.set()
    await committing
    assert host.hung_for(host.last_progress + 3600.0) == pytest.approx(3600.0)
