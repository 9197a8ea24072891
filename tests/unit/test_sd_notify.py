"""The notify protocol (to a real AF_UNIX datagram socket), the watchdog's health rule
(a dead stage stops the pings), STATUS= lines from the alarms, and the clock alarm.

The service as a whole under a notify socket: ``tests/e2e/test_systemd_notify.py``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.alarms import CLOCK_NOT_SYNCHRONISED, DESTINATION_UNREACHABLE, DISK_FULL
from gateway.core.clock import PLAUSIBLE_SINCE, clock_synchronised
from gateway.core.events import AlarmCleared, AlarmRaised, EventBus
from gateway.service.clock import ClockWatch
from gateway.service.sd_notify import ServiceNotifier, notify, status_text, watchdog_interval
from gateway.service.supervise import Ready, Supervisor


class Listener:
    """systemd's end: a datagram socket and what arrived on it."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.got: list[str] = []

    def read(self) -> list[str]:
        """Every message so far."""
        while True:
            try:
                self.got.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.got

    def lines(self) -> list[str]:
        """Every line of every message so far."""
        return [line for m in self.read() for line in m.splitlines()]


@pytest.fixture
def listener() -> Iterator[Listener]:
    """An abstract notify socket (no file to clean up)."""
    sock = Listener(f"@dermgate-unit-{os.getpid()}-{time.monotonic_ns()}")
    yield sock
    sock.sock.close()


def test_notify_sends_one_datagram_to_a_path_or_an_abstract_socket(
    listener: Listener, tmp_path: Path
) -> None:
    assert notify("READY=1\nSTATUS=delivering", {"NOTIFY_SOCKET": listener.address})
    assert listener.read() == ["READY=1\nSTATUS=delivering"]
    path = Listener(str(tmp_path / "n.sock"))
    assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": path.address})
    assert path.read() == ["WATCHDOG=1"]
    path.sock.close()


def test_notify_without_a_socket_or_with_systemd_gone_is_quiet(tmp_path: Path) -> None:
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")}) is False


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_us() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=42) == 0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42) == 15
    assert watchdog_interval({}) == 0
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) == 0


def test_status_says_delivering_or_what_is_wrong() -> None:
    bus = EventBus()
    assert status_text(bus.alarms) == "delivering"
    bus.publish(AlarmRaised(code=DESTINATION_UNREACHABLE, subject="pacs", message="m"))
    bus.publish(AlarmRaised(code=DISK_FULL, subject="", message="m"))
    assert status_text(bus.alarms) == "pacs unreachable; disk full"
    bus.publish(AlarmRaised(code=CLOCK_NOT_SYNCHRONISED, subject="", message="m"))
    assert "clock not synchronised" in status_text(bus.alarms)


async def _until(condition: object, what: str) -> None:
    assert callable(condition)
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.02)


async def test_pings_while_every_stage_runs_and_stop_when_a_stage_has_ended(
    listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    """A stage that ends (here one returning instead of serving) is a dead gateway to
    systemd: the pings stop, so WatchdogSec restarts the service."""
    bus = EventBus()
    bus.bind(asyncio.get_running_loop())
    finish = asyncio.Event()

    async def mortal(ready: Ready) -> None:
        ready()
        await finish.wait()  # … and then returns: the stage is dead

    env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "100000"}
    async with asyncio.TaskGroup() as group:
        supervisor = Supervisor(group)
        await supervisor.start("mortal", mortal)
        notifier = ServiceNotifier(bus, supervisor.healthy, environ=env)
        await supervisor.start("sd-notify", notifier.run)
        await asyncio.sleep(0.2)
        assert listener.lines() == []  # nothing before READY=1
        notifier.ready()
        await _until(lambda: listener.lines().count("WATCHDOG=1") >= 3, "pings")
        assert listener.lines()[:2] == ["READY=1", "STATUS=delivering"]

        bus.publish(AlarmRaised(code=DESTINATION_UNREACHABLE, subject="pacs", message="m"))
        await _until(lambda: "STATUS=pacs unreachable" in listener.lines(), "status")
        bus.publish(AlarmCleared(code=DESTINATION_UNREACHABLE, subject="pacs"))
        await _until(lambda: listener.lines().count("STATUS=delivering") == 2, "cleared")

        finish.set()
        await _until(lambda: not supervisor.healthy(), "the stage to end")
        assert supervisor.dead_stages() == ["mortal"]
        await asyncio.sleep(0.05)  # a ping already on its way
        pings = listener.lines().count("WATCHDOG=1")
        await asyncio.sleep(0.5)  # ten intervals
        assert listener.lines().count("WATCHDOG=1") == pings
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert "the mortal stage has ended on its own; the gateway is not whole" in errors
        assert len([e for e in errors if e.startswith("watchdog pings stop")]) == 1  # once
        notifier.stopping()
        assert "STOPPING=1" in listener.lines()
        # While it stops, stages end on purpose: the pings go on as long as the loop turns.
        await _until(lambda: listener.lines().count("WATCHDOG=1") > pings, "pings again")
        await supervisor.stop()


def test_clock_is_unsynchronised_before_2025_or_until_timesyncd_says_so(tmp_path: Path) -> None:
    later = PLAUSIBLE_SINCE + 86400
    assert clock_synchronised(now=lambda: 0.0, timesync_dir=tmp_path) is False  # 1970
    assert clock_synchronised(now=lambda: later, timesync_dir=tmp_path / "none") is None
    assert clock_synchronised(now=lambda: later, timesync_dir=tmp_path) is False
    (tmp_path / "synchronized").touch()
    assert clock_synchronised(now=lambda: later, timesync_dir=tmp_path) is True


def test_clock_synchronised_reads_this_machine_without_failing() -> None:
    """The real sources (the clock, /run/systemd/timesync) give an answer or None."""
    assert clock_synchronised() in (True, False, None)


async def test_clock_alarm_is_raised_while_unsynchronised_and_cleared_after() -> None:
    bus = EventBus()
    bus.bind(asyncio.get_running_loop())
    events = bus.subscribe()
    answers = iter([False, False, None, True])
    watch = ClockWatch(bus, lambda: next(answers))
    await watch.check()
    assert (CLOCK_NOT_SYNCHRONISED, "") in bus.alarms
    assert "clock not synchronised" in status_text(bus.alarms)
    await watch.check()  # still: raised once
    await watch.check()  # cannot tell: the alarm stays
    assert (CLOCK_NOT_SYNCHRONISED, "") in bus.alarms
    await watch.check()
    assert bus.alarms == {}
    kinds = [(await events.get())[1]["kind"] for _ in range(len(events))]
    assert kinds == ["alarm_raised", "alarm_cleared"]
