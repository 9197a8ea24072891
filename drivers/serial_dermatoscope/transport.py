"""Bytes in and out of a serial port, for asyncio.

pyserial is blocking; a read waits at most :data:`READ_SLICE` seconds on a worker
thread, so cancellation is prompt. The port is opened through
``serial.serial_for_url``: a device path (``/dev/ttyACM0``) or a pyserial URL
(``socket://host:port``, ``rfc2217://host:port``) both work.
"""

from __future__ import annotations

import asyncio
import contextlib
import termios

import serial

READ_SLICE = 0.2
READ_MAX = 1 << 16
# A port whose device vanished fails in any of these ways: pyserial's own error, an
# OSError (EIO on a read), or termios.error (EIO from tcdrain/tcflush), which is not an
# OSError.
_GONE = (serial.SerialException, OSError, termios.error)


class LinkLost(Exception):
    """The port went away (unplugged, closed by the peer) or cannot be opened."""


class SerialLink:
    """An open serial port."""

    def __init__(self, port: serial.SerialBase) -> None:
        self._port = port

    @classmethod
    async def open(cls, url: str, baudrate: int) -> SerialLink:
        """Open ``url``; raise :class:`LinkLost` if it is not there."""

        def _open() -> serial.SerialBase:
            port = serial.serial_for_url(url, baudrate=baudrate, timeout=READ_SLICE)
            port.reset_input_buffer()
            return port

        try:
            return cls(await asyncio.to_thread(_open))
        except (*_GONE, ValueError) as err:
            raise LinkLost(str(err)) from err

    def _read(self) -> bytes:
        waiting = int(getattr(self._port, "in_waiting", 0))
        return bytes(self._port.read(min(max(waiting, 1), READ_MAX)))

    async def read(self) -> bytes:
        """The next bytes (empty after a quiet slice); raise :class:`LinkLost`."""
        try:
            return await asyncio.to_thread(self._read)
        except _GONE as err:
            raise LinkLost(str(err)) from err

    async def write(self, data: bytes) -> None:
        """Send ``data``; raise :class:`LinkLost`."""

        def _write() -> None:
            self._port.write(data)
            self._port.flush()

        try:
            await asyncio.to_thread(_write)
        except _GONE as err:
            raise LinkLost(str(err)) from err

    async def close(self) -> None:
        """Close the port (errors ignored: it may be gone already)."""
        with contextlib.suppress(*_GONE):
            await asyncio.to_thread(self._port.close)
