"""The device status snapshot: one record per configured device, kept current.

Every change (a driver's state, a crash, a restart, quarantine, a hotplug device
appearing or going) updates the in-memory record and wakes :meth:`StatusBoard.run`,
which writes the whole snapshot atomically to ``STATE_DIR/status/devices.json``
(temporary file, fsync, rename). Writes are coalesced: a burst of changes is one
write of the latest state, never a stale one. Status pages and MQTT read that file.

The document (``version`` 1)::

    {
      "version": 1,
      "updated": "2026-11-30T22:58:01.123456+00:00",
      "devices": [
        {
          "name": "scope",                  # [[devices]] name (or driver-index)
          "driver": "serial-dermatoscope",  # driver id
          "state": "READY",                 # DISCONNECTED|CONNECTING|READY|TRANSFERRING|
                                            # ERROR|QUARANTINED
          "detail": "DS-100 Dermatoscope SN123",  # plain words, no patient data
          "since": "2026-11-30T22:57:59.001+00:00",  # when state/detail last changed
          "running": true,                  # a driver instance is running now
          "restarts": 0,                    # restarts after crashes or hangs since start
          "last_crash": null,               # exception class of the last crash, or "hang"
          "hotplug": false,                 # started/stopped by device events
          "devnode": null                   # hotplug: the device node it serves now
        }
      ]
    }

Only exception *class names* are kept, never messages: a message may quote data
the driver received from the device.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.core.alarms import DRIVER_QUARANTINED
from gateway.core.events import (
    NO_EVENTS,
    AlarmCleared,
    AlarmRaised,
    DeviceConnected,
    DeviceGone,
    EventSink,
)
from gateway.core.files import atomic_write_bytes
from gateway.devices.contract import DriverState

log = logging.getLogger(__name__)

STATUS_VERSION = 1

_CONNECTED = {DriverState.READY, DriverState.TRANSFERRING}


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """What status shows about one configured device."""

    name: str
    driver: str
    state: DriverState = DriverState.DISCONNECTED
    detail: str = ""
    since: str = ""
    running: bool = False
    restarts: int = 0
    last_crash: str | None = None
    hotplug: bool = False
    devnode: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as written to ``devices.json``."""
        data = asdict(self)
        data["state"] = str(self.state)
        return data


class StatusBoard:
    """Holds every device's :class:`DeviceStatus` and writes the snapshot file."""

    def __init__(self, path: Path | None, bus: EventSink = NO_EVENTS) -> None:
        self.path = path
        self._bus = bus
        self._devices: dict[str, DeviceStatus] = {}
        self._changed = asyncio.Event()
        self._write_lock = threading.Lock()
        self._write_problem: str | None = None

    def add(self, name: str, driver: str, *, hotplug: bool = False, detail: str = "") -> None:
        """Register a configured device (DISCONNECTED, not running)."""
        self._devices[name] = DeviceStatus(
            name=name, driver=driver, hotplug=hotplug, detail=detail, since=_now()
        )
        self._changed.set()

    def get(self, name: str) -> DeviceStatus:
        """The current record of device ``name``."""
        return self._devices[name]

    def update(self, name: str, **changes: Any) -> None:
        """Change fields of device ``name``; ``since`` moves when state or detail does."""
        old = self._devices[name]
        new = replace(old, **changes)
        if new == old:
            return
        if (new.state, new.detail) != (old.state, old.detail):
            new = replace(new, since=_now())
        self._devices[name] = new
        self._changed.set()
        self._announce(old, new)

    def names(self) -> list[str]:
        """The configured devices' names, in configuration order."""
        return list(self._devices)

    def _announce(self, old: DeviceStatus, new: DeviceStatus) -> None:
        """Events for state changes: device connected/gone, quarantine alarm."""
        if old.state == new.state:
            return
        if new.state in _CONNECTED and old.state not in _CONNECTED:
            self._bus.publish(
                DeviceConnected(device=new.name, driver=new.driver, state=str(new.state))
            )
        elif old.state in _CONNECTED and new.state not in _CONNECTED:
            self._bus.publish(DeviceGone(device=new.name, driver=new.driver, state=str(new.state)))
        if new.state == DriverState.QUARANTINED:
            self._bus.publish(
                AlarmRaised(
                    code=DRIVER_QUARANTINED,
                    subject=new.name,
                    message=f"driver of {new.name} stopped after repeated failures",
                )
            )
        elif old.state == DriverState.QUARANTINED:
            self._bus.publish(AlarmCleared(code=DRIVER_QUARANTINED, subject=new.name))

    def snapshot(self) -> dict[str, Any]:
        """The whole document, as written to the file."""
        return {
            "version": STATUS_VERSION,
            "updated": _now(),
            "devices": [d.to_json() for d in self._devices.values()],
        }

    def _write(self, document: dict[str, Any]) -> None:
        assert self.path is not None
        # One writer at a time: a write left running on its thread when the stage was
        # cancelled must not race the final one over the same temporary file.
        with self._write_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, json.dumps(document, indent=2).encode() + b"\n")

    async def _flush(self) -> None:
        self._changed.clear()
        if self.path is None:
            return
        try:
            await asyncio.to_thread(self._write, self.snapshot())
        except OSError as err:  # status is advisory: never stop the gateway for it
            problem = str(err.strerror or err)
            if problem != self._write_problem:  # once per condition (a full disk), not per write
                log.warning("cannot write %s: %s", self.path, problem)
            self._write_problem = problem
            return
        if self._write_problem is not None:
            log.info("%s written again", self.path)
            self._write_problem = None

    async def write_now(self) -> None:
        """Write the snapshot at once (start-up: the file lists every configured
        device before the service says it runs), whatever :meth:`run` is doing."""
        await self._flush()

    async def run(self, ready: Callable[[], None]) -> None:
        """Write the snapshot now and after every change, until cancelled (then once more)."""
        await self._flush()
        ready()
        try:
            while True:
                await self._changed.wait()
                await self._flush()
        except asyncio.CancelledError:
            await self._flush()
            raise
