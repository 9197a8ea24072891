"""Hotplug: udev events become DeviceEvents; drivers follow their device in and out.

udev conversion is tested on real ``pyudev.Device`` objects (built by libudev from
a uevent environment, as a udev RUN helper sees them, and from this machine's
sysfs). The end-to-end test runs ``dermgate run`` with ``[hotplug] source =
"simulated:SOCKET"``: the serial dermatoscope simulator's pty is linked at a
``/dev/ttyACM<n>`` node (which the driver's ``SerialMatch("/dev/ttyACM*")``
accepts) and the test announces it on the socket; captures reach a real Orthanc.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pyudev

from gateway.demo.local_orthanc import OrthancProcess
from gateway.devices.hotplug import (
    DeviceEvent,
    UdevSource,
    event_from_udev,
)
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.simulator import SimulatorProcess
from tests.support.state import device_status, states
from tests.support.waiting import wait_for

USB_TTY = "/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/tty/ttyACM0"


_CONVERT = """
import dataclasses, json, pyudev
from gateway.devices.hotplug import event_from_udev
device = pyudev.Devices.from_environment(pyudev.Context())
event = event_from_udev(device.action, device)
print(json.dumps(dataclasses.asdict(event) if event else None))
"""


def udev_event(**props: str) -> DeviceEvent | None:
    """Convert a real pyudev Device, built by libudev from a uevent environment (as
    udev hands it to a RUN helper), in a child process with exactly that environment."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin"), **props}
    result = subprocess.run(
        [sys.executable, "-c", _CONVERT], env=env, capture_output=True, text=True, check=True
    )
    data = json.loads(result.stdout)
    return DeviceEvent(**data) if data is not None else None


def test_udev_tty_add_and_remove() -> None:
    props = {
        "DEVPATH": USB_TTY,
        "SUBSYSTEM": "tty",
        "DEVNAME": "/dev/ttyACM0",
        "SEQNUM": "1",
        "ID_VENDOR_ID": "2341",
        "ID_MODEL_ID": "8036",
        "ID_SERIAL_SHORT": "DS100-7",
    }
    assert udev_event(ACTION="add", **props) == DeviceEvent(
        action="appeared",
        subsystem="tty",
        devnode="/dev/ttyACM0",
        vendor_id=0x2341,
        product_id=0x8036,
        serial="DS100-7",
        sys_path="/sys" + USB_TTY,
    )
    event = udev_event(ACTION="remove", **props)
    assert event is not None
    assert event.action == "gone"
    assert event.devnode == "/dev/ttyACM0"


def test_udev_usb_device_ids_from_the_kernel_product_key() -> None:
    event = udev_event(
        ACTION="add",
        DEVPATH="/devices/pci0000:00/0000:00:14.0/usb1/1-3",
        SUBSYSTEM="usb",
        DEVTYPE="usb_device",
        DEVNAME="/dev/bus/usb/001/004",
        PRODUCT="1d6b/104/100",
        SEQNUM="2",
    )
    assert event is not None
    assert (event.subsystem, event.vendor_id, event.product_id) == ("usb", 0x1D6B, 0x0104)
    assert event.devnode == "/dev/bus/usb/001/004"
    assert event.serial is None


def test_udev_interfaces_and_other_actions_are_not_device_events() -> None:
    interface = udev_event(
        ACTION="add",
        DEVPATH="/devices/pci0000:00/0000:00:14.0/usb1/1-3/1-3:1.0",
        SUBSYSTEM="usb",
        DEVTYPE="usb_interface",
        SEQNUM="3",
    )
    assert interface is None
    assert udev_event(ACTION="change", DEVPATH=USB_TTY, SUBSYSTEM="tty", SEQNUM="4") is None


def test_udev_device_from_this_machines_sysfs() -> None:
    device = pyudev.Devices.from_sys_path(pyudev.Context(), "/sys/class/tty/tty")
    event = event_from_udev("add", device)
    assert event is not None
    assert (event.action, event.subsystem, event.devnode) == ("appeared", "tty", "/dev/tty")
    assert event.vendor_id is None


async def test_udev_source_listens_and_enumerates_present_devices() -> None:
    """The production source opens a real netlink monitor here (no events arrive
    without udevd) and reports the ttys present as appeared."""
    source = UdevSource()
    await source.open()
    try:
        seen = []
        async with asyncio.timeout(5):
            async for event in source.events():
                seen.append(event)
                if len(seen) == 3:
                    break
    finally:
        await source.close()
    assert all(e.action == "appeared" and e.subsystem == "tty" for e in seen)
    assert all(e.devnode and e.devnode.startswith("/dev/") for e in seen)


@pytest.fixture
def dev_node() -> Iterator[Path]:
    """A free /dev/ttyACM<n> path for the simulator's pty link (removed afterwards)."""
    rng = random.Random()
    while True:
        path = Path(f"/dev/ttyACM{rng.randrange(200, 10000)}")
        if not os.path.lexists(path):
            break
    yield path
    if path.is_symlink():
        path.unlink()


def announce(sock_path: Path, **event: str) -> None:
    """Write one event line to the gateway's simulated hotplug socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(sock_path))
        sock.sendall(json.dumps(event).encode() + b"\n")


def test_driver_follows_its_device_in_and_out(
    tmp_path: Path,
    dev_node: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    events = tmp_path / "hotplug.sock"
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        devices=f"""
[hotplug]
source = "simulated:{events}"

[[devices]]
driver = "serial-dermatoscope"
name = "scope"
hotplug = true
port = "{{devnode}}"
stall_timeout = 5
reconnect_max = 1
""",
    )
    state_dir = tmp_path / "state"
    sim = simulator_factory("--captures", "2", "--interval", "0.2", link=dev_node)
    gateway = gateway_factory(config)
    gateway.wait_running()
    assert events.exists()
    scope = device_status(state_dir)["scope"]
    assert scope["hotplug"] is True
    assert scope["running"] is False
    assert scope["detail"] == "waiting for the device to appear"

    announce(events, action="appeared", subsystem="tty", devnode="/dev/ttyUSB7")
    announce(events, action="appeared", subsystem="tty", devnode=str(dev_node))
    assert sim.wait(120) == 0, gateway.log()
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 2, 60, "2 captures COMMITTED")
    scope = device_status(state_dir)["scope"]
    assert scope["running"] is True
    assert scope["devnode"] == str(dev_node)
    assert "ttyUSB7 appeared" not in gateway.log(), "a device no driver matches is left alone"

    announce(events, action="gone", subsystem="tty", devnode=str(dev_node))
    wait_for(
        lambda: device_status(state_dir)["scope"]["running"] is False, 20, "the driver to stop"
    )
    scope = device_status(state_dir)["scope"]
    assert scope["state"] == "DISCONNECTED"
    assert scope["detail"] == "device removed"
    assert scope["devnode"] is None
    assert scope["restarts"] == 0, "a device going away is not a crash"

    # Plugged in again (another device on the same node): a fresh driver serves it.
    sim2 = simulator_factory("--captures", "1", "--seed", "5", link=dev_node)
    announce(events, action="appeared", subsystem="tty", devnode=str(dev_node))
    assert sim2.wait(120) == 0, gateway.log()
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 3, 60, "3 captures COMMITTED")
    assert orthanc.count_instances() == 3
    assert gateway.stop() == 0
    log = gateway.log()
    assert "Traceback" not in log
    assert log.count("device scope: DISCONNECTED (device removed)") == 1
    assert log.count("appeared; starting its driver") == 2
