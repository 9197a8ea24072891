"""Devices appearing and disappearing: one seam, :class:`HotplugSource`.

A source yields :class:`DeviceEvent` s: first an ``appeared`` for every matching
device already present when it opened, then every change as it happens. Two
sources exist:

- :class:`UdevSource` (``[hotplug] source = "udev"``, for boxes): a
  ``pyudev.Monitor`` on the ``usb`` and ``tty`` subsystems, read from the event
  loop (``loop.add_reader`` on its socket), plus an enumeration of present devices
  made after the monitor listens, so nothing plugged in meanwhile is missed (a device
  seen twice is harmless: a device node already served is ignored).
- :class:`SimulatedSource` (``source = "simulated:PATH"``, tests and demos): the
  gateway listens on a Unix socket at PATH; each line written to it is one event as
  JSON, e.g. ``{"action": "appeared", "subsystem": "tty", "devnode": "/dev/ttyACM0",
  "vendor_id": "2341", "product_id": "0043", "serial": "A1"}`` (``sys_path``
  defaults to the devnode; ids are hex strings or integers; all but ``action`` and
  ``subsystem`` optional).

:class:`HotplugManager` matches events against the ``[[devices]]`` entries that set
``hotplug = true``: an entry accepts a device when one of its driver's declarative
matchers does (:class:`~gateway.devices.contract.SerialMatch`: a ``tty`` whose
device node matches the pattern, and the adapter's USB ids when given;
:class:`~gateway.devices.contract.UsbMatch`: a ``usb`` device with those ids) and
its ``usb_serial`` / ``match_devnode`` narrowing, if any, holds. One entry serves
one device at a time: the first matching device claims it. When it appears, the
driver starts with ``"{devnode}"`` in its string options replaced by the device
node; when it goes, the driver is cancelled (its cleanup runs, an unfinished
capture is aborted and stays on the device) and its status says DISCONNECTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from gateway.devices.contract import Matcher, SerialMatch, UsbMatch

log = logging.getLogger(__name__)

Action = Literal["appeared", "gone"]
Subsystem = Literal["usb", "tty"]

_UDEV_ACTIONS: dict[str, Action] = {"add": "appeared", "remove": "gone"}


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A device appeared or went away."""

    action: Action
    subsystem: Subsystem
    devnode: str | None
    vendor_id: int | None = None
    product_id: int | None = None
    serial: str | None = None
    sys_path: str = ""


class HotplugSource(Protocol):
    """Where device events come from."""

    async def open(self) -> None:
        """Start listening; events from now on are not missed."""

    def events(self) -> AsyncGenerator[DeviceEvent, None]:
        """Devices present at :meth:`open` (as appeared), then every change."""

    async def close(self) -> None:
        """Stop listening."""


def _hex_id(value: object) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    return int(str(value), 16)


class UdevDevice(Protocol):
    """What :func:`event_from_udev` reads of a ``pyudev.Device``."""

    @property
    def subsystem(self) -> str | None: ...

    @property
    def device_node(self) -> str | None: ...

    @property
    def sys_path(self) -> str: ...

    @property
    def properties(self) -> Mapping[str, str]: ...


def event_from_udev(action: str | None, device: UdevDevice) -> DeviceEvent | None:
    """The :class:`DeviceEvent` for a udev ``add``/``remove`` of a usb device or tty.

    Other actions (change, bind, unbind), other subsystems and USB interfaces give
    None. USB ids come from udev's ``ID_VENDOR_ID``/``ID_MODEL_ID`` (set for a tty
    behind a USB adapter too), else from the kernel's ``PRODUCT`` (``vid/pid/rev``).
    """
    kind = _UDEV_ACTIONS.get(action or "")
    subsystem = device.subsystem
    if kind is None or subsystem not in ("usb", "tty"):
        return None
    props = device.properties
    if subsystem == "usb" and props.get("DEVTYPE") != "usb_device":
        return None
    vendor, product = props.get("ID_VENDOR_ID"), props.get("ID_MODEL_ID")
    if vendor is None and "PRODUCT" in props:
        vendor, product, *_ = [*props["PRODUCT"].split("/"), None, None]
    try:
        vendor_id, product_id = _hex_id(vendor), _hex_id(product)
    except ValueError:
        vendor_id = product_id = None
    return DeviceEvent(
        action=kind,
        subsystem="usb" if subsystem == "usb" else "tty",
        devnode=device.device_node,
        vendor_id=vendor_id,
        product_id=product_id,
        serial=props.get("ID_SERIAL_SHORT"),
        sys_path=device.sys_path,
    )


class UdevSource:
    """Device events from udev (a box; needs udevd, which this VM lacks)."""

    SUBSYSTEMS = ("usb", "tty")

    def __init__(self) -> None:
        self._queue: asyncio.Queue[DeviceEvent] = asyncio.Queue()
        self._monitor: Any = None

    async def open(self) -> None:
        """Listen to udev, then enumerate the devices already present."""
        import pyudev

        context = pyudev.Context()
        monitor = pyudev.Monitor.from_netlink(context)
        for subsystem in self.SUBSYSTEMS:
            monitor.filter_by(subsystem)
        monitor.start()
        self._monitor = monitor
        asyncio.get_running_loop().add_reader(monitor.fileno(), self._readable)
        for subsystem in self.SUBSYSTEMS:
            for device in context.list_devices(subsystem=subsystem):
                self._put("add", device)

    def _put(self, action: str | None, device: UdevDevice) -> None:
        event = event_from_udev(action, device)
        if event is not None:
            self._queue.put_nowait(event)

    def _readable(self) -> None:
        while (device := self._monitor.poll(timeout=0)) is not None:
            self._put(device.action, device)

    async def events(self) -> AsyncGenerator[DeviceEvent, None]:
        """Every event, as it comes."""
        while True:
            yield await self._queue.get()

    async def close(self) -> None:
        """Stop reading the monitor."""
        if self._monitor is not None:
            asyncio.get_running_loop().remove_reader(self._monitor.fileno())
            self._monitor = None


def event_from_json(line: bytes | str) -> DeviceEvent:
    """A :class:`DeviceEvent` from one JSON line; ValueError if it is not one."""
    try:
        data = json.loads(line)
        action, subsystem = data["action"], data["subsystem"]
        if action not in ("appeared", "gone") or subsystem not in ("usb", "tty"):
            raise ValueError("action must be appeared|gone, subsystem usb|tty")
        devnode = data.get("devnode")
        return DeviceEvent(
            action=action,
            subsystem=subsystem,
            devnode=str(devnode) if devnode is not None else None,
            vendor_id=_hex_id(data.get("vendor_id")),
            product_id=_hex_id(data.get("product_id")),
            serial=data.get("serial"),
            sys_path=str(data.get("sys_path") or devnode or ""),
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"not a device event: {type(err).__name__}") from err


class SimulatedSource:
    """Device events as JSON lines on a Unix socket the gateway listens on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: asyncio.Queue[DeviceEvent] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        """Create the socket (replacing a stale one)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._client, path=str(self.path))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while line := await reader.readline():
                if not line.strip():
                    continue
                try:
                    self._queue.put_nowait(event_from_json(line))
                except ValueError as err:
                    log.warning("simulated hotplug: ignored a line: %s", err)
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def events(self) -> AsyncGenerator[DeviceEvent, None]:
        """Every event, in the order written."""
        while True:
            yield await self._queue.get()

    async def close(self) -> None:
        """Stop listening and remove the socket."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def source_from_config(value: str) -> HotplugSource | None:
    """The source named by ``[hotplug] source`` (None for "none")."""
    if value == "none":
        return None
    if value == "udev":
        return UdevSource()
    return SimulatedSource(Path(value.removeprefix("simulated:")))


def matcher_accepts(matcher: Matcher, event: DeviceEvent) -> bool:
    """Does ``matcher`` (declared by a driver class) accept the device of ``event``?"""
    if isinstance(matcher, UsbMatch):
        return (
            event.subsystem == "usb"
            and event.vendor_id == matcher.vendor_id
            and event.product_id == matcher.product_id
        )
    assert isinstance(matcher, SerialMatch)
    return (
        event.subsystem == "tty"
        and event.devnode is not None
        and fnmatch.fnmatchcase(event.devnode, matcher.pattern)
        and matcher.vendor_id in (None, event.vendor_id)
        and matcher.product_id in (None, event.product_id)
    )


def fill_devnode(options: dict[str, Any], devnode: str | None) -> dict[str, Any]:
    """Driver options with ``"{devnode}"`` in string values replaced by ``devnode``."""
    if devnode is None:
        return dict(options)
    return {
        key: value.replace("{devnode}", devnode) if isinstance(value, str) else value
        for key, value in options.items()
    }


@dataclass(frozen=True, slots=True)
class HotplugSlot:
    """A ``[[devices]]`` entry with ``hotplug = true``."""

    index: int
    name: str
    matchers: tuple[Matcher, ...]
    usb_serial: str | None = None
    match_devnode: str | None = None

    def accepts(self, event: DeviceEvent) -> bool:
        """Does this entry serve the device of ``event``?"""
        if not any(matcher_accepts(m, event) for m in self.matchers):
            return False
        if self.usb_serial is not None and event.serial != self.usb_serial:
            return False
        return self.match_devnode is None or (
            event.devnode is not None and fnmatch.fnmatchcase(event.devnode, self.match_devnode)
        )


class Running(Protocol):
    """A started driver instance, as the manager sees it."""

    async def stop(self, detail: str) -> None:
        """Cancel it and wait until its cleanup ran."""


Launch = Callable[[HotplugSlot, DeviceEvent], Awaitable[Running | None]]


class HotplugManager:
    """Starts and stops hotplug-managed drivers as their devices come and go."""

    def __init__(self, source: HotplugSource, slots: list[HotplugSlot], launch: Launch) -> None:
        self._source = source
        self._slots = slots
        self._launch = launch
        self._claims: dict[str, tuple[DeviceEvent, Running]] = {}

    async def run(self, ready: Callable[[], None]) -> None:
        """Serve events until cancelled; then stop every driver this manager started."""
        await self._source.open()
        try:
            ready()
            async with contextlib.aclosing(self._source.events()) as events:
                async for event in events:
                    await self._handle(event)
        finally:
            for name in list(self._claims):
                _, running = self._claims.pop(name)
                await running.stop("gateway stopped")
            await self._source.close()

    def _claimed_by(self, event: DeviceEvent) -> str | None:
        for name, (seen, _) in self._claims.items():
            if (event.devnode is not None and seen.devnode == event.devnode) or (
                event.sys_path and seen.sys_path == event.sys_path
            ):
                return name
        return None

    async def _handle(self, event: DeviceEvent) -> None:
        claimed = self._claimed_by(event)
        if event.action == "gone":
            if claimed is not None:
                _, running = self._claims.pop(claimed)
                log.info("device %s: %s went away; stopping its driver", claimed, event.devnode)
                await running.stop("device removed")
            return
        if claimed is not None:
            return  # already served (enumeration and an add event may overlap)
        for slot in self._slots:
            if slot.name in self._claims or not slot.accepts(event):
                continue
            log.info("device %s: %s appeared; starting its driver", slot.name, event.devnode)
            started = await self._launch(slot, event)
            if started is not None:
                self._claims[slot.name] = (event, started)
            return
        log.debug("hotplug: no free [[devices]] entry for %s %s", event.subsystem, event.devnode)
