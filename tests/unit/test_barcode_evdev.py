"""The keyboard-wedge source: what can be tested without an input device.

This machine has no /dev/input and no /dev/uinput, so the grab of a real scanner
cannot be exercised here (it is the one line ``device.grab()``). What is tested: a
configured device that is absent, or is not an input device, is retried without
end and logged once; and the reads a wedge gives from any event source, including
keys left pending when the scanner goes quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from evdev import InputEvent

from gateway.context.barcode.evdev_source import evdev_events, wedge_reads
from gateway.context.barcode.read import ReadKind, ScanRead
from gateway.context.barcode.wedge import KeyEvent, WedgeDecoder
from tests.support.barcode import PERSON_GAP, Keyboard, key_source


async def _retry_for(path: str, seconds: float) -> None:
    async def consume() -> None:
        async for _ in evdev_events(path, "barcodes[1]", initial=0.02, cap=0.05):
            pytest.fail("no event can come from this path")

    task = asyncio.create_task(consume())
    await asyncio.sleep(seconds)
    assert not task.done(), "the source gave up instead of retrying"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    ("where", "why"),
    [("absent", "not connected"), ("/dev/null", "not the right kind of device")],
)
async def test_a_missing_or_wrong_device_is_retried_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str, why: str
) -> None:
    caplog.set_level(logging.INFO, "dermgate.barcodes")
    path = str(tmp_path / "usb-Scanner-event-kbd") if where == "absent" else where
    await _retry_for(path, 0.6)  # a dozen retries
    lines = [r.getMessage() for r in caplog.records if r.name == "dermgate.barcodes"]
    assert lines == [f"barcodes[1]: scanner not available at {path} ({why}); retrying"]


async def _collect(reads: AsyncIterator[ScanRead]) -> list[ScanRead]:
    return [read async for read in reads]


async def test_wedge_reads_from_an_event_source() -> None:
    kb = Keyboard()
    batches = [kb.type("PID0001"), kb.type("ACC-2026/0042_x"), kb.type("PID7", gap=PERSON_GAP)]
    reads = await _collect(wedge_reads(key_source(batches), WedgeDecoder(), quiet=5))
    assert reads == [
        ScanRead(ReadKind.CODE, "PID0001"),
        ScanRead(ReadKind.CODE, "ACC-2026/0042_x"),
        ScanRead(ReadKind.TYPED, "PID7"),
    ]


async def test_keys_left_pending_are_reported_after_a_quiet_spell() -> None:
    kb = Keyboard()
    sent = asyncio.Event()

    async def scanner_without_enter() -> AsyncIterator[KeyEvent]:
        for event in kb.type("PID0001", enter=None):
            yield event
        sent.set()
        await asyncio.sleep(3600)  # the device stays open, silent
        yield InputEvent(0, 0, 0, 0, 0)

    reads = wedge_reads(scanner_without_enter(), WedgeDecoder(), quiet=0.2)
    async with asyncio.timeout(5):
        first = await anext(reads)
    assert sent.is_set()
    assert first == ScanRead(ReadKind.INCOMPLETE, "PID0001")
    await reads.aclose()
