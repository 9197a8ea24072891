"""Serial (USB-CDC) barcode scanners: lines into reads, over a real pty, with replugs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.serial_dermatoscope.pty_link import PtyLink
from gateway.context.barcode.read import MAX_CODE, ReadKind, ScanRead
from gateway.context.barcode.serial_source import LineDecoder, serial_reads
from tests.support.barcode import scanner_connected


def test_lines_end_at_cr_lf_or_both_and_empty_lines_are_skipped() -> None:
    decoder = LineDecoder()
    reads = decoder.feed(b"PID0001\r\nACC-2026/0042_x\r\r\nPI") + decoder.feed(b"D2\n\n")
    assert reads == [
        ScanRead(ReadKind.CODE, "PID0001"),
        ScanRead(ReadKind.CODE, "ACC-2026/0042_x"),
        ScanRead(ReadKind.CODE, "PID2"),
    ]
    assert not decoder.pending


def test_utf8_reads_and_bytes_that_are_not_text_are_unreadable() -> None:
    decoder = LineDecoder()
    reads = decoder.feed("Müller-7\r\n".encode() + b"PID\xff01\r\n" + b"AB\x1dCD\r\n")
    assert reads == [
        ScanRead(ReadKind.CODE, "Müller-7"),
        ScanRead(ReadKind.UNREADABLE, "PID\ufffd01"),
        ScanRead(ReadKind.UNREADABLE, "AB\ufffdCD"),  # GS1's group separator
    ]


def test_a_line_over_the_cap_is_dropped_and_memory_stays_bounded() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b"9" * 100_000) == []
    assert len(decoder._line) <= MAX_CODE * 4
    (read,) = decoder.feed(b"\r\n")
    assert read == ScanRead(ReadKind.TOO_LONG, "9" * MAX_CODE)
    assert decoder.feed(b"PID1\r\n") == [ScanRead(ReadKind.CODE, "PID1")]


def test_flush_reports_a_line_without_its_end() -> None:
    decoder = LineDecoder()
    decoder.feed(b"PID00")
    assert decoder.flush() == ScanRead(ReadKind.INCOMPLETE, "PID00")
    assert decoder.flush() is None


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_garbage_bytes_never_crash_and_reads_stay_bounded(chunks: list[bytes]) -> None:
    decoder = LineDecoder(max_length=16)
    for chunk in chunks:
        for read in decoder.feed(chunk):
            assert 0 < len(read.text) <= 16
            assert read.kind in (ReadKind.CODE, ReadKind.UNREADABLE, ReadKind.TOO_LONG)
            assert not any(c in read.text for c in "\r\n")
        assert len(decoder._line) <= 16 * 4


class Reader:
    """Collects a serial_reads generator's reads in a task."""

    def __init__(self, reads: AsyncIterator[ScanRead]) -> None:
        self.reads: list[ScanRead] = []
        self._source = reads
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for read in self._source:
            self.reads.append(read)

    async def wait(self, count: int, timeout: float = 10) -> list[ScanRead]:
        async with asyncio.timeout(timeout):
            while len(self.reads) < count:
                await asyncio.sleep(0.02)
        return self.reads

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def write(link: PtyLink, data: bytes) -> None:
    assert link.master is not None
    os.write(link.master, data)


async def test_a_pty_scanner_is_read_line_by_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "dermgate.barcodes")
    link = PtyLink(tmp_path / "ttyACM1")
    link.open()
    reader = Reader(serial_reads(str(link.path), 9600, "barcodes[0]", quiet=0.3))
    try:
        await scanner_connected(caplog, "barcodes[0]")  # input is flushed at open
        write(link, b"PID0001\r\n")
        write(link, b"ACC-2026/")
        await asyncio.sleep(0.05)
        write(link, b"0042_x\r\nPID9")  # a scanner without its line end, then quiet
        reads = await reader.wait(3)
        assert reads == [
            ScanRead(ReadKind.CODE, "PID0001"),
            ScanRead(ReadKind.CODE, "ACC-2026/0042_x"),
            ScanRead(ReadKind.INCOMPLETE, "PID9"),
        ]
    finally:
        await reader.stop()
        link.close()


async def test_unplug_and_replug_reconnects_and_logs_each_change_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "dermgate.barcodes")
    link = PtyLink(tmp_path / "ttyACM1")
    reader = Reader(serial_reads(str(link.path), 9600, "barcodes[0]", initial=0.05, cap=0.1))
    try:
        await asyncio.sleep(1.0)  # absent: about ten retries
        link.open()
        await scanner_connected(caplog, "barcodes[0]")
        write(link, b"PID0001\r\nPID")
        await reader.wait(1)
        link.close()  # unplugged mid-code
        await reader.wait(2)
        await asyncio.sleep(0.5)
        link.open()
        await scanner_connected(caplog, "barcodes[0]", times=2)
        write(link, b"PID0002\r\n")
        reads = await reader.wait(3)
        assert reads == [
            ScanRead(ReadKind.CODE, "PID0001"),
            ScanRead(ReadKind.INCOMPLETE, "PID"),
            ScanRead(ReadKind.CODE, "PID0002"),
        ]
    finally:
        await reader.stop()
        link.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "dermgate.barcodes"]
    assert [line.split(": scanner ")[1].split(" at ")[0] for line in lines] == [
        "not available",
        "connected",
        "not available",
        "connected",
    ], lines
    assert not any("PID" in line for line in lines)
