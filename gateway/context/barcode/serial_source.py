"""Serial (USB-CDC) scanners: one code per line, ended by CR, LF or CR LF.

:class:`LineDecoder` is pure (bytes in, reads out). :func:`serial_reads` opens the
port with pyserial (blocking, so on a worker thread, reads waiting at most
:data:`READ_SLICE` seconds so cancellation is prompt), yields the reads, and when
the port goes away (unplugged) or cannot be opened, retries with a capped backoff,
logging the change once. Characters left without a line end when the port goes
away, or for :data:`QUIET` seconds, are an :attr:`ReadKind.INCOMPLETE` read.
"""

from __future__ import annotations

import asyncio
import contextlib
import termios
import unicodedata
from collections.abc import AsyncIterator

import serial

from gateway.context.barcode.presence import Presence, reason
from gateway.context.barcode.read import MAX_CODE, ReadKind, ScanRead
from gateway.core.backoff import Backoff

__all__ = ["QUIET", "READ_SLICE", "LineDecoder", "serial_reads"]

READ_SLICE = 0.2
QUIET = 1.0
"""Seconds without a byte after which a line without its end is reported."""
_ENDS = b"\r\n"
# A vanished port fails as pyserial's error, an OSError (EIO) or termios.error.
_GONE = (serial.SerialException, OSError, termios.error)


class LineDecoder:
    """Splits a serial scanner's bytes into reads (empty lines are skipped)."""

    def __init__(self, max_length: int = MAX_CODE) -> None:
        """A decoder with nothing pending."""
        self.max_length = max_length
        self._line = bytearray()
        self._too_long = False

    @property
    def pending(self) -> bool:
        """Bytes of a line not yet ended."""
        return bool(self._line)

    def feed(self, data: bytes) -> list[ScanRead]:
        """Take bytes; the reads of the lines they end."""
        reads: list[ScanRead] = []
        for byte in data:
            if byte in _ENDS:
                if self._line:
                    reads.append(self._end(None))
            elif len(self._line) < self.max_length * 4:  # UTF-8: up to 4 bytes a character
                self._line.append(byte)
            else:
                self._too_long = True
        return reads

    def flush(self) -> ScanRead | None:
        """End the pending bytes, if any, as an :attr:`ReadKind.INCOMPLETE` read."""
        return self._end(ReadKind.INCOMPLETE) if self._line else None

    def _end(self, kind: ReadKind | None) -> ScanRead:
        raw = bytes(self._line)
        too_long = self._too_long
        self._line.clear()
        self._too_long = False
        try:
            text = raw.decode("utf-8")
            readable = not any(unicodedata.category(c) == "Cc" for c in text)
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            readable = False
        if not readable:
            text = "".join("\ufffd" if unicodedata.category(c) == "Cc" else c for c in text)
        if kind is None:
            if too_long or len(text) > self.max_length:
                kind = ReadKind.TOO_LONG
            else:
                kind = ReadKind.CODE if readable else ReadKind.UNREADABLE
        return ScanRead(kind, text[: self.max_length])


def _open(port: str, baudrate: int) -> serial.SerialBase:
    link = serial.serial_for_url(port, baudrate=baudrate, timeout=READ_SLICE, exclusive=True)
    link.reset_input_buffer()
    return link


def _read(link: serial.SerialBase) -> bytes:
    waiting = int(getattr(link, "in_waiting", 0))
    return bytes(link.read(min(max(waiting, 1), 4096)))


async def serial_reads(
    port: str,
    baudrate: int,
    label: str,
    *,
    initial: float = 0.5,
    cap: float = 10.0,
    quiet: float = QUIET,
) -> AsyncIterator[ScanRead]:
    """Reads of the serial scanner at ``port``, for ever (reconnecting; cancel to stop)."""
    presence = Presence(label, port)
    backoff = Backoff(initial=initial, cap=cap)
    decoder = LineDecoder()
    loop = asyncio.get_running_loop()
    while True:
        try:
            link = await asyncio.to_thread(_open, port, baudrate)
        except (*_GONE, ValueError) as err:
            presence.away(reason(err))
            await asyncio.sleep(backoff.next_delay())
            continue
        presence.here()
        backoff.reset()
        last = loop.time()
        try:
            while True:
                data = await asyncio.to_thread(_read, link)
                if data:
                    last = loop.time()
                    for read in decoder.feed(data):
                        yield read
                elif decoder.pending and loop.time() - last >= quiet:
                    flushed = decoder.flush()
                    if flushed is not None:
                        yield flushed
        except _GONE as err:
            presence.away(reason(err))
        finally:
            with contextlib.suppress(*_GONE):
                await asyncio.to_thread(link.close)
        flushed = decoder.flush()
        if flushed is not None:
            yield flushed
        await asyncio.sleep(backoff.next_delay())
