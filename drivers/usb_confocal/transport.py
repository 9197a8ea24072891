"""Bytes in and out of the confocal microscope over pyusb, off the event loop.

pyusb calls block (a bulk read waits up to its timeout), so every call runs on a
worker thread (``asyncio.to_thread``); one link is used by one task at a time.
The device is found with plain ``usb.core.find(idVendor=…, idProduct=…,
backend=…)``: libusb in production, :class:`~.emulated.EmulatedBackend` when the
option ``usb_backend = "emulated:PATH"`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from typing import Any

import usb.core
import usb.util

from drivers.usb_confocal import protocol as p

__all__ = ["LinkLost", "UsbLink", "backend_from_option"]

_WRITE_TIMEOUT_MS = 5000
_CONTROL_TIMEOUT_MS = 2000


class LinkLost(Exception):
    """The device is not there (any more): reconnect later."""


def backend_from_option(option: str | None) -> Any:
    """The pyusb backend an option names: ``emulated:PATH``, or None for libusb."""
    if option is None or option in ("", "libusb"):
        return None
    kind, _, path = option.partition(":")
    if kind != "emulated" or not path:
        raise ValueError(f"unknown usb_backend {option!r} (use 'emulated:/path/to.sock')")
    from drivers.usb_confocal.emulated import EmulatedBackend

    return EmulatedBackend(path)


class UsbLink:
    """One attached device: configured, interface claimed."""

    def __init__(self, device: Any) -> None:
        self.device = device

    @classmethod
    async def open(cls, vendor_id: int, product_id: int, backend: Any) -> UsbLink:
        """Find, configure and claim the device; LinkLost if it is not there."""
        return await asyncio.to_thread(cls._open, vendor_id, product_id, backend)

    @classmethod
    def _open(cls, vendor_id: int, product_id: int, backend: Any) -> UsbLink:
        try:
            device = usb.core.find(idVendor=vendor_id, idProduct=product_id, backend=backend)
            if device is None:
                raise LinkLost("device not found")
            device.set_configuration()
            usb.util.claim_interface(device, p.INTERFACE)
        except usb.core.USBError as err:
            raise LinkLost(f"cannot attach: {err.strerror or err}") from err
        return cls(device)

    async def identity(self) -> dict[p.IdentityField, str]:
        """Every GET_IDENTITY field."""
        return await asyncio.to_thread(self._identity)

    def _identity(self) -> dict[p.IdentityField, str]:
        values: dict[p.IdentityField, str] = {}
        for field in p.IdentityField:
            try:
                data = self.device.ctrl_transfer(
                    p.REQUEST_TYPE_VENDOR_IN,
                    p.GET_IDENTITY,
                    int(field),
                    0,
                    64,
                    timeout=_CONTROL_TIMEOUT_MS,
                )
            except usb.core.USBError as err:
                raise LinkLost(f"identity request failed: {err.strerror or err}") from err
            values[field] = bytes(data).decode("utf-8", "replace").strip("\x00 ")
        return values

    async def read(self, size: int, timeout_ms: int) -> bytes:
        """Up to ``size`` bytes from bulk IN; b"" when nothing came within the timeout."""
        return await asyncio.to_thread(self._read, size, timeout_ms)

    def _read(self, size: int, timeout_ms: int) -> bytes:
        try:
            data = self.device.read(p.EP_IN, size, timeout=timeout_ms)
        except usb.core.USBTimeoutError:
            return b""
        except usb.core.USBError as err:
            if err.errno == errno.ETIMEDOUT:
                return b""
            raise LinkLost(f"read failed: {err.strerror or err}") from err
        return bytes(data)

    async def write(self, data: bytes) -> None:
        """Send a message on bulk OUT."""
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        try:
            self.device.write(p.EP_OUT, data, timeout=_WRITE_TIMEOUT_MS)
        except usb.core.USBError as err:
            raise LinkLost(f"write failed: {err.strerror or err}") from err

    async def close(self) -> None:
        """Release the device (never raises)."""
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with contextlib.suppress(usb.core.USBError, OSError):
            usb.util.dispose_resources(self.device)
