"""A pyusb backend that reaches an emulated USB device over a Unix socket.

There is no kernel USB on the test machines (DESIGN §7), so tests and demos plug
the simulator (:mod:`.simulator`, its own process) into pyusb through this
``usb.backend.IBackend``: ``usb.core.find(idVendor=…, idProduct=…,
backend=EmulatedBackend(path))`` finds the device while the simulator listens on
``path``, and every descriptor look-up, ``set_configuration``, control and bulk
transfer becomes one request on the socket. Select it with the driver option
``usb_backend = "emulated:/path/to.sock"``; ``"emulated:/path/to/folder"`` is a bus
with one device per ``*.sock`` in the folder (identical microscopes side by side).

Behaviour as a real libusb backend shows it:

* descriptor look-ups past the last index raise :class:`IndexError` (pyusb iterates
  until it sees one; anything else loops for ever);
* a transfer that times out raises :class:`usb.core.USBTimeoutError`
  (``errno.ETIMEDOUT``);
* a device that went away (simulator unplugged, stopped or killed) raises
  :class:`usb.core.USBError` with ``errno.ENODEV`` on every later call, and
  enumeration no longer lists it.

Wire format of the socket, both directions: ``u32 header length | u32 payload
length | JSON header | payload``. Requests carry ``{"op": …}``; answers
``{"ok": true, …}`` or ``{"error": "timeout" | "nodev" | "pipe", "detail": …}``.
"""

from __future__ import annotations

import array
import errno
import json
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import usb.backend
import usb.core

__all__ = ["EmulatedBackend", "read_message", "write_message"]

_LENGTHS: Final = struct.Struct("<II")
_MAX_HEADER: Final = 1 << 20
_MAX_PAYLOAD: Final = 64 << 20
_CONNECT_TIMEOUT: Final = 2.0
_MARGIN: Final = 10.0
LIBUSB_ERROR_TIMEOUT: Final = -7
LIBUSB_ERROR_NO_DEVICE: Final = -4
LIBUSB_ERROR_PIPE: Final = -9


class ProtocolError(OSError):
    """The peer sent something that is not a message of this wire format."""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionResetError("peer closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    """One message from ``sock`` (raises OSError when the peer goes away)."""
    header_size, payload_size = _LENGTHS.unpack(_recv_exact(sock, _LENGTHS.size))
    if header_size > _MAX_HEADER or payload_size > _MAX_PAYLOAD:
        raise ProtocolError("message too large")
    header = json.loads(_recv_exact(sock, header_size))
    if not isinstance(header, dict):
        raise ProtocolError("header is not an object")
    payload = _recv_exact(sock, payload_size) if payload_size else b""
    return header, payload


def write_message(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    """Send one message."""
    encoded = json.dumps(header, separators=(",", ":")).encode()
    sock.sendall(_LENGTHS.pack(len(encoded), len(payload)) + encoded)
    if payload:
        sock.sendall(payload)


def _no_device(detail: str) -> usb.core.USBError:
    return usb.core.USBError(
        f"No such device (it may have been disconnected): {detail}",
        LIBUSB_ERROR_NO_DEVICE,
        errno.ENODEV,
    )


class _Descriptor:
    """A descriptor as pyusb expects it: plain attributes."""

    def __init__(self, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            if key not in ("configurations", "interfaces", "endpoints"):
                setattr(self, key, value)
        self.extra_descriptors: list[int] = []


@dataclass(slots=True)
class _Device:
    """An enumerated device: its descriptors, as the simulator described them."""

    descriptors: dict[str, Any]
    socket_path: str


@dataclass(slots=True)
class _Handle:
    """An open device: one socket session with the simulator."""

    sock: socket.socket | None
    configuration: int = 0
    claimed: set[int] = field(default_factory=set)


class EmulatedBackend(usb.backend.IBackend):  # type: ignore[misc]
    """pyusb backend for one emulated device listening on a Unix socket."""

    def __init__(self, socket_path: str) -> None:
        """Reach the device whose simulator listens on ``socket_path``; a folder is a
        bus: every ``*.sock`` in it is one attached device."""
        super().__init__()
        self.socket_path = socket_path

    def _sockets(self) -> list[str]:
        if os.path.isdir(self.socket_path):
            return sorted(str(p) for p in Path(self.socket_path).glob("*.sock"))
        return [self.socket_path]

    # -- enumeration and descriptors ------------------------------------------------

    def enumerate_devices(self) -> Iterator[_Device]:
        """The emulated devices whose simulators answer (the others: unplugged)."""
        for path in self._sockets():
            try:
                sock = self._connect(path)
            except OSError:
                continue
            try:
                header, _ = self._call(sock, {"op": "describe"}, timeout=_CONNECT_TIMEOUT)
            except usb.core.USBError:
                continue
            finally:
                sock.close()
            yield _Device(header["descriptors"], path)

    def get_device_descriptor(self, dev: _Device) -> _Descriptor:
        """The device descriptor (plus bus/address/port/speed as libusb reports them)."""
        return _Descriptor(dev.descriptors["device"])

    def get_configuration_descriptor(self, dev: _Device, config: int) -> _Descriptor:
        """Configuration ``config`` (0-based); IndexError past the last."""
        configurations = dev.descriptors["device"]["configurations"]
        if not 0 <= config < len(configurations):
            raise IndexError(f"no configuration {config}")
        return _Descriptor(configurations[config])

    def get_interface_descriptor(
        self, dev: _Device, intf: int, alt: int, config: int
    ) -> _Descriptor:
        """Interface ``intf`` alternate setting ``alt``; IndexError past the last."""
        interfaces = self._interfaces(dev, config)
        if not 0 <= intf < len(interfaces) or not 0 <= alt < len(interfaces[intf]):
            raise IndexError(f"no interface {intf} alt {alt}")
        return _Descriptor(interfaces[intf][alt])

    def get_endpoint_descriptor(
        self, dev: _Device, ep: int, intf: int, alt: int, config: int
    ) -> _Descriptor:
        """Endpoint ``ep`` of an interface; IndexError past the last."""
        interfaces = self._interfaces(dev, config)
        if not 0 <= intf < len(interfaces) or not 0 <= alt < len(interfaces[intf]):
            raise IndexError(f"no interface {intf} alt {alt}")
        endpoints = interfaces[intf][alt]["endpoints"]
        if not 0 <= ep < len(endpoints):
            raise IndexError(f"no endpoint {ep}")
        return _Descriptor(endpoints[ep])

    @staticmethod
    def _interfaces(dev: _Device, config: int) -> list[list[dict[str, Any]]]:
        configurations = dev.descriptors["device"]["configurations"]
        if not 0 <= config < len(configurations):
            raise IndexError(f"no configuration {config}")
        interfaces: list[list[dict[str, Any]]] = configurations[config]["interfaces"]
        return interfaces

    # -- sessions -------------------------------------------------------------------

    def open_device(self, dev: _Device) -> _Handle:
        """Open a session (the host attaches to the device)."""
        try:
            sock = self._connect(dev.socket_path)
        except OSError as err:
            raise _no_device(str(err)) from err
        handle = _Handle(sock)
        self._request(handle, {"op": "open"})
        return handle

    def close_device(self, dev_handle: _Handle) -> None:
        """Close the session."""
        if dev_handle.sock is not None:
            dev_handle.sock.close()
            dev_handle.sock = None

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        """SET_CONFIGURATION."""
        self._request(dev_handle, {"op": "set_configuration", "value": config_value})
        dev_handle.configuration = config_value

    def get_configuration(self, dev_handle: _Handle) -> int:
        """The active configuration value."""
        return dev_handle.configuration

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        """Only alternate setting 0 exists."""
        if altsetting != 0:
            raise usb.core.USBError("no such alternate setting", LIBUSB_ERROR_PIPE, errno.EPIPE)

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        """Claim an interface (local bookkeeping; the device has one host)."""
        self._alive(dev_handle)
        dev_handle.claimed.add(intf)

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        """Release an interface."""
        dev_handle.claimed.discard(intf)

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        """No kernel driver is ever bound to an emulated device."""
        return False

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        """Nothing to detach."""

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        """Nothing to attach."""

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        """CLEAR_FEATURE(ENDPOINT_HALT)."""
        self._alive(dev_handle)

    def reset_device(self, dev_handle: _Handle) -> None:
        """A bus reset: the device forgets the session's configuration."""
        self._request(dev_handle, {"op": "reset"})
        dev_handle.configuration = 0

    # -- transfers ------------------------------------------------------------------

    def ctrl_transfer(
        self,
        dev_handle: _Handle,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: array.array[int],
        timeout: int,
    ) -> int:
        """A control transfer; IN requests fill ``data`` and return the length read."""
        request = {
            "op": "ctrl",
            "bmRequestType": bmRequestType,
            "bRequest": bRequest,
            "wValue": wValue,
            "wIndex": wIndex,
            "length": len(data),
            "timeout_ms": timeout,
        }
        if bmRequestType & 0x80:
            _, payload = self._request(dev_handle, request, timeout_ms=timeout)
            count = min(len(payload), len(data))
            data[:count] = array.array("B", payload[:count])
            return count
        header, _ = self._request(dev_handle, request, bytes(data), timeout_ms=timeout)
        return int(header.get("written", len(data)))

    def bulk_read(
        self, dev_handle: _Handle, ep: int, intf: int, buff: array.array[int], timeout: int
    ) -> int:
        """Read up to ``len(buff)`` bytes from bulk IN endpoint ``ep``."""
        request = {"op": "bulk_read", "ep": ep, "size": len(buff), "timeout_ms": timeout}
        _, payload = self._request(dev_handle, request, timeout_ms=timeout)
        count = min(len(payload), len(buff))
        memoryview(buff).cast("B")[:count] = payload[:count]
        return count

    def bulk_write(
        self, dev_handle: _Handle, ep: int, intf: int, data: array.array[int], timeout: int
    ) -> int:
        """Write ``data`` to bulk OUT endpoint ``ep``."""
        request = {"op": "bulk_write", "ep": ep, "timeout_ms": timeout}
        header, _ = self._request(dev_handle, request, bytes(data), timeout_ms=timeout)
        return int(header.get("written", len(data)))

    # -- plumbing -------------------------------------------------------------------

    @staticmethod
    def _connect(path: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(_CONNECT_TIMEOUT)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return sock

    @staticmethod
    def _alive(handle: _Handle) -> socket.socket:
        if handle.sock is None:
            raise _no_device("device closed")
        return handle.sock

    def _request(
        self,
        handle: _Handle,
        request: dict[str, Any],
        payload: bytes = b"",
        *,
        timeout_ms: int = 1000,
    ) -> tuple[dict[str, Any], bytes]:
        sock = self._alive(handle)
        try:
            return self._call(sock, request, payload, timeout=timeout_ms / 1000 + _MARGIN)
        except usb.core.USBError as err:
            if err.errno == errno.ENODEV:
                self.close_device(handle)
            raise

    @staticmethod
    def _call(
        sock: socket.socket, request: dict[str, Any], payload: bytes = b"", *, timeout: float
    ) -> tuple[dict[str, Any], bytes]:
        try:
            sock.settimeout(timeout)
            write_message(sock, request, payload)
            header, answer = read_message(sock)
        except (OSError, ValueError) as err:
            raise _no_device(type(err).__name__) from err
        error = header.get("error")
        if error == "timeout":
            raise usb.core.USBTimeoutError(
                "Operation timed out", LIBUSB_ERROR_TIMEOUT, errno.ETIMEDOUT
            )
        if error == "pipe":
            raise usb.core.USBError(
                f"Pipe error: {header.get('detail', '')}", LIBUSB_ERROR_PIPE, errno.EPIPE
            )
        if error is not None:
            raise _no_device(str(header.get("detail", error)))
        return header, answer
