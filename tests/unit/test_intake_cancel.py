"""A driver stopped while its commit is in flight leaves no staging file behind.

The supervisor cancels a driver that hangs, whose device is unplugged, or when the
gateway stops; it leaves a sink whose commit had started to that commit. If the
commit itself is cancelled before the capture is durable nothing was acknowledged
(the device keeps it and offers it again), and its staging file (up to a whole
confocal stack) must go at once, not fill the spool until the next start-up.

Real intake, spool and ledger in a temporary folder; the commit is cancelled at
every point it can be (each of its awaits in turn; a driver awaits its commit, so
the commit has always started).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core.capture import CaptureOffer, ContentType, DeviceClass, DeviceIdentity
from gateway.intake import Intake
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger

MICROSCOPE = DeviceIdentity("Acme", "RCM", "M-1", ("1",), DeviceClass.CONFOCAL_MICROSCOPE)
DATA = bytes(range(256)) * 4096 * 8  # 8 MiB


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[Intake]:
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.start()
    yield Intake(ledger, dirs, lambda: None)
    ledger.close()


@pytest.mark.parametrize("steps", range(1, 14))
async def test_cancelled_commit_leaves_no_staging_file(intake: Intake, steps: int) -> None:
    offer = CaptureOffer(
        device_capture_id=f"stack-{steps}", length=len(DATA), content_type=ContentType.PIXELS
    )
    sink = await intake.begin("usb-confocal", MICROSCOPE, offer)
    for start in range(0, len(DATA), 1 << 20):
        await sink.write(DATA[start : start + (1 << 20)])
    commit = asyncio.create_task(
        sink.commit(length=len(DATA), sha256=hashlib.sha256(DATA).hexdigest())
    )
    for _ in range(steps):
        await asyncio.sleep(0)
    commit.cancel()
    await asyncio.gather(commit, return_exceptions=True)
    await asyncio.sleep(0.5)  # worker threads started by the commit finish

    assert list(intake.dirs.staging.iterdir()) == []
