"""Hotplug without udev: matchers, simulated event lines and sources, and a hotplug
device that needs a source. Real ``pyudev`` devices and ``dermgate run`` following its
device are in ``tests/e2e/test_hotplug.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from drivers.serial_dermatoscope.driver import SerialDermatoscopeDriver
from gateway.devices.contract import SerialMatch, UsbMatch
from gateway.devices.hotplug import (
    DeviceEvent,
    HotplugSlot,
    SimulatedSource,
    event_from_json,
    fill_devnode,
)


def test_matchers_and_narrowing() -> None:
    scope = HotplugSlot(0, "scope", SerialDermatoscopeDriver.matchers)
    assert SerialDermatoscopeDriver.matchers == (SerialMatch("/dev/ttyACM*"),)
    assert scope.accepts(DeviceEvent("appeared", "tty", "/dev/ttyACM3"))
    assert not scope.accepts(DeviceEvent("appeared", "tty", "/dev/ttyUSB0"))
    assert not scope.accepts(DeviceEvent("appeared", "usb", "/dev/ttyACM3"))
    one = HotplugSlot(0, "scope", SerialDermatoscopeDriver.matchers, usb_serial="A1")
    assert one.accepts(DeviceEvent("appeared", "tty", "/dev/ttyACM3", serial="A1"))
    assert not one.accepts(DeviceEvent("appeared", "tty", "/dev/ttyACM3", serial="B2"))
    pinned = HotplugSlot(0, "scope", (SerialMatch("/dev/tty*", 0x2341),), match_devnode="*ACM1")
    assert pinned.accepts(DeviceEvent("appeared", "tty", "/dev/ttyACM1", vendor_id=0x2341))
    assert not pinned.accepts(DeviceEvent("appeared", "tty", "/dev/ttyACM1", vendor_id=0x1))
    assert not pinned.accepts(DeviceEvent("appeared", "tty", "/dev/ttyACM2", vendor_id=0x2341))
    usb = HotplugSlot(0, "confocal", (UsbMatch(0x1209, 0x0001),))
    assert usb.accepts(DeviceEvent("appeared", "usb", None, 0x1209, 0x0001))
    assert not usb.accepts(DeviceEvent("appeared", "usb", None, 0x1209, 0x0002))
    assert fill_devnode({"port": "{devnode}", "baudrate": 9600}, "/dev/ttyACM1") == {
        "port": "/dev/ttyACM1",
        "baudrate": 9600,
    }


def test_simulated_event_lines() -> None:
    event = event_from_json(
        '{"action": "appeared", "subsystem": "usb", "vendor_id": "1209", "product_id": 1}'
    )
    assert (event.vendor_id, event.product_id, event.devnode) == (0x1209, 1, None)
    for bad in ('{"action": "plugged", "subsystem": "tty"}', "[]", "not json", '{"x": 1}'):
        with pytest.raises(ValueError, match=r"."):
            event_from_json(bad)


async def test_simulated_source_reads_lines_and_skips_bad_ones(tmp_path: Path) -> None:
    source = SimulatedSource(tmp_path / "hotplug.sock")
    await source.open()
    try:
        _reader, writer = await asyncio.open_unix_connection(str(source.path))
        writer.write(b'garbage\n{"action": "gone", "subsystem": "tty", "devnode": "/dev/x"}\n')
        await writer.drain()
        async with asyncio.timeout(5):
            event = await anext(source.events())
        assert (event.action, event.devnode, event.sys_path) == ("gone", "/dev/x", "/dev/x")
        writer.close()
        await writer.wait_closed()
    finally:
        await source.close()
    assert not source.path.exists()


def test_hotplug_device_needs_a_source(tmp_path: Path) -> None:
    from gateway.core.config import ConfigError
    from gateway.service.config import parse_config

    text = '[[devices]]\ndriver = "serial-dermatoscope"\nhotplug = true\nport = "{devnode}"\n'
    with pytest.raises(ConfigError) as err:
        parse_config(text, tmp_path / "x.toml")
    assert err.value.problems == [
        f'{tmp_path / "x.toml"}: devices[0].hotplug: needs [hotplug] source other than "none"'
    ]
    config = parse_config('[hotplug]\nsource = "udev"\n' + text, tmp_path / "x.toml")
    assert config.devices[0].hotplug
    assert config.devices[0].options() == {"port": "{devnode}"}
    with pytest.raises(ConfigError, match="simulated:PATH"):
        parse_config('[hotplug]\nsource = "usb"\n', tmp_path / "x.toml")
