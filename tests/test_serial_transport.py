"""The serial transport turns every way a vanished port fails into LinkLost.

Found by the conformance kit: after the device closed its end of the pty, the
driver's next write failed in ``tcdrain`` with ``termios.error`` (not an OSError),
which crashed the driver instead of being handled as an unplug.
"""

from __future__ import annotations

import os
import tty

import pytest

from drivers.serial_dermatoscope.transport import LinkLost, SerialLink


async def test_writes_and_reads_on_an_unplugged_port_raise_link_lost() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    link = await SerialLink.open(path, 115200)
    os.close(slave)
    await link.write(b"hello")
    assert os.read(master, 16) == b"hello"
    os.close(master)  # the device is unplugged
    with pytest.raises(LinkLost):
        await link.write(b"x" * 4096)
    with pytest.raises(LinkLost):
        await link.read()
    await link.close()


async def test_opening_a_missing_port_raises_link_lost() -> None:
    with pytest.raises(LinkLost):
        await SerialLink.open("/dev/does-not-exist-ttyACM9", 115200)
