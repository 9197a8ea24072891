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
import logging
import re
from dataclasses import dataclass
from typing import Any

import usb.core
import usb.util

from drivers.usb_confocal import protocol as p

__all__ = ["LinkLost", "UsbLink", "UsbLocation", "backend_from_option"]

log = logging.getLogger(__name__)

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


_WARNED: set[str] = set()  # the sets of identical devices already warned about
_PORT = re.compile(r"^(\d{1,3})-(\d{1,3}(?:\.\d{1,3})*)$")
_DEVNODE = re.compile(r"^/dev/bus/usb/(\d{3})/(\d{3})$")


@dataclass(frozen=True, slots=True)
class UsbLocation:
    """Where on the box a device must be, to tell identical devices apart.

    Either a physical port (``"1-1.3"``: bus 1, port 3 of the hub on port 1, as
    Linux names it under /sys/bus/usb/devices; stays the same when the device is
    plugged in again) or a device node (``/dev/bus/usb/001/007``: bus 1, address 7;
    changes with every plug-in, so for hotplug's ``"{devnode}"``).
    """

    bus: int
    ports: tuple[int, ...] | None = None
    address: int | None = None

    @classmethod
    def parse(cls, text: str) -> UsbLocation:
        """``"BUS-PORT[.PORT...]"`` or ``"/dev/bus/usb/BBB/DDD"``; ValueError otherwise."""
        if match := _PORT.match(text):
            return cls(int(match[1]), ports=tuple(int(n) for n in match[2].split(".")))
        if match := _DEVNODE.match(text):
            return cls(int(match[1]), address=int(match[2]))
        raise ValueError(
            f"{text!r} is neither a USB port such as '1-1.3' nor a device node such as "
            "'/dev/bus/usb/001/007'"
        )

    def matches(self, device: Any) -> bool:
        """True if pyusb's ``device`` sits here."""
        if device.bus != self.bus:
            return False
        if self.address is not None:
            return bool(device.address == self.address)
        return tuple(getattr(device, "port_numbers", None) or ()) == self.ports

    def __str__(self) -> str:
        if self.ports is not None:
            return f"USB port {self.bus}-{'.'.join(map(str, self.ports))}"
        return f"/dev/bus/usb/{self.bus:03d}/{self.address or 0:03d}"


def describe(device: Any) -> str:
    """Where a found device sits, in the form ``usb_port`` takes."""
    ports = tuple(getattr(device, "port_numbers", None) or ())
    if device.bus is None or not ports:
        return f"bus {device.bus} address {device.address}"
    return f"USB port {device.bus}-{'.'.join(map(str, ports))}"


class UsbLink:
    """One attached device: configured, interface claimed."""

    def __init__(self, device: Any) -> None:
        self.device = device

    @classmethod
    async def open(
        cls, vendor_id: int, product_id: int, backend: Any, where: UsbLocation | None = None
    ) -> UsbLink:
        """Find, configure and claim the device; LinkLost if it is not there.

        Without ``where``, the first device with these ids is taken; when there are
        several, a warning names where each sits, so that ``usb_port`` can choose.
        """
        return await asyncio.to_thread(cls._open, vendor_id, product_id, backend, where)

    @classmethod
    def _open(
        cls, vendor_id: int, product_id: int, backend: Any, where: UsbLocation | None
    ) -> UsbLink:
        try:
            found = list(
                usb.core.find(
                    find_all=True, idVendor=vendor_id, idProduct=product_id, backend=backend
                )
            )
            if where is not None:
                found = [d for d in found if where.matches(d)]
                if not found:
                    raise LinkLost(f"no device {vendor_id:04x}:{product_id:04x} at {where}")
            if not found:
                raise LinkLost("device not found")
            places = ", ".join(describe(d) for d in found)
            if len(found) > 1 and places not in _WARNED:  # once per set of devices
                _WARNED.add(places)
                log.warning(
                    "%d devices %04x:%04x are attached (%s); serving the first. Set usb_port "
                    "on each device entry to choose",
                    len(found),
                    vendor_id,
                    product_id,
                    places,
                )
            device = found[0]
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
