"""The wrapping stage survives a capture its writer chokes on.

A driver (a third-party plugin) may describe a capture in ``offer.extra`` in a way
a writer does not expect and fails on with something other than WrapError (here a
confocal stack with ``frames`` = infinity: OverflowError). The capture was
acknowledged, so it is kept and quarantined with a plain reason; the stage must not
fail, since a failed stage stops the gateway, and at every restart the capture
would be wrapped again and stop it again: one bad capture would halt every device.

Real intake, ledger, spool and wrapping stage in a temporary folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core.capture import (
    CaptureOffer,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    GatewayIdentity,
)
from gateway.intake import Intake
from gateway.intake.stage import InlineWrap
from gateway.spool import ledger as db
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from gateway.spool.states import CaptureState
from gateway.wrap import Wrapper

MICROSCOPE = DeviceIdentity("Acme", "RCM", "M-1", ("1",), DeviceClass.CONFOCAL_MICROSCOPE)


def stack_extra(frames: float) -> dict[str, object]:
    """A 2×2, 8-bit z-stack description with ``frames`` frames."""
    return {
        "kind": "z-stack",
        "frames": frames,
        "rows": 2,
        "columns": 2,
        "bits": 8,
        "pixel_spacing_um": 1.0,
        "wavelength_nm": 830,
        "z_step_um": 1.0,
        "depths_um": [0.0],
    }


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[tuple[Intake, Wrapper]]:
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.start()
    wrapper = Wrapper(ledger, dirs, GatewayIdentity("gw-1", "0.1"), ["pacs"], lambda: None)
    yield Intake(ledger, dirs, wrapper.notify), wrapper
    ledger.close()


async def capture(intake: Intake, capture_id: str, extra: dict[str, object]) -> None:
    data = bytes(range(4))
    offer = CaptureOffer(
        device_capture_id=capture_id, length=4, content_type=ContentType.PIXELS, extra=extra
    )
    sink = await intake.begin("plugin", MICROSCOPE, offer)
    await sink.write(data)
    await sink.commit(length=4, sha256=hashlib.sha256(data).hexdigest())


async def states(intake: Intake) -> dict[str, tuple[CaptureState, str | None]]:
    found = {}
    for state in CaptureState:
        for entry in await intake.ledger.call(db.captures_in_state, state, 100):
            found[entry.offer.device_capture_id] = (entry.state, entry.reason)
    return found


async def test_writer_failing_unexpectedly_quarantines_and_the_stage_runs_on(
    spool: tuple[Intake, Wrapper],
) -> None:
    intake, wrapper = spool
    await capture(intake, "bad", stack_extra(float("inf")))
    await capture(intake, "good", stack_extra(1))
    task = asyncio.create_task(wrapper.run(lambda: None))
    try:
        async with asyncio.timeout(20):
            while True:
                await asyncio.sleep(0.1)
                assert not task.done(), task.exception()
                found = await states(intake)
                if all(state is not CaptureState.CAPTURED for state, _ in found.values()):
                    break
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert found["good"][0] is CaptureState.WRAPPED
    state, reason = found["bad"]
    assert state is CaptureState.QUARANTINED
    assert reason is not None
    assert "OverflowError" in reason


async def test_capture_whose_raw_file_was_deleted_is_quarantined_at_once(
    spool: tuple[Intake, Wrapper], caplog: pytest.LogCaptureFixture
) -> None:
    """Someone deleted a device file from the spool by hand while the gateway ran.

    Waiting cannot bring it back: the capture is quarantined with the same reason a
    start-up check gives (visible in ``spool list``), not retried and logged every 30 s,
    and the capture beside it is wrapped as usual.
    """
    intake, wrapper = spool
    await capture(intake, "deleted", stack_extra(1))
    await capture(intake, "kept", stack_extra(1))
    (deleted,) = [
        e
        for e in await intake.ledger.call(db.captures_in_state, CaptureState.CAPTURED, 10)
        if e.offer.device_capture_id == "deleted"
    ]
    (intake.dirs.raw / deleted.raw_name).unlink()
    task = asyncio.create_task(wrapper.run(lambda: None))
    try:
        async with asyncio.timeout(10):
            while any(s is CaptureState.CAPTURED for s, _ in (await states(intake)).values()):
                await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    found = await states(intake)
    assert found["deleted"] == (CaptureState.QUARANTINED, "raw capture file missing")
    assert found["kept"][0] is CaptureState.WRAPPED
    assert "will retry" not in caplog.text


async def test_capture_written_at_intake_and_put_back_without_its_file_is_quarantined(
    spool: tuple[Intake, Wrapper], caplog: pytest.LogCaptureFixture
) -> None:
    """A stack written straight into DICOM at intake has no raw copy. Put back to
    CAPTURED (a retry by hand) after its DICOM file went, nothing can wrap it: it is
    quarantined at once, not retried for ever on the empty raw name (the raw folder)."""
    plain, wrapper = spool
    inline = InlineWrap(GatewayIdentity("gw-1", "0.1"), wrapper.destinations, lambda: None)
    intake = Intake(plain.ledger, plain.dirs, wrapper.notify, inline=inline)
    await capture(intake, "inline", stack_extra(1))
    (entry,) = await intake.ledger.call(db.captures_in_state, CaptureState.WRAPPED, 10)
    assert entry.raw_name == ""
    assert entry.dicom_name is not None
    (intake.dirs.dicom / entry.dicom_name).unlink()
    conn = sqlite3.connect(intake.ledger.path)
    with conn:
        conn.execute("UPDATE captures SET state = 'CAPTURED' WHERE id = ?", (entry.spool_id,))
    conn.close()
    task = asyncio.create_task(wrapper.run(lambda: None))
    try:
        async with asyncio.timeout(10):
            while any(s is CaptureState.CAPTURED for s, _ in (await states(intake)).values()):
                await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert (await states(intake))["inline"] == (
        CaptureState.QUARANTINED,
        "raw capture file missing",
    )
    assert "will retry" not in caplog.text
