"""``dermgate run`` under a systemd-like service manager (``Type=notify``, ``WatchdogSec=``).

The test plays systemd's part: it binds an AF_UNIX datagram socket, passes it as
``$NOTIFY_SOCKET`` with ``$WATCHDOG_USEC`` to ``dermgate run`` (a subprocess) and reads
what the service says: READY=1 once every stage is serving, WATCHDOG=1 while the loop
turns, STOPPING=1 on SIGTERM. A driver that blocks the event loop (``test-wedger``,
a third-party plugin) makes the pings stop, which is how systemd would know to
restart the service.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import signal
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.demo.local_orthanc import free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.waiting import wait_for

#: 1 s of WatchdogSec: a ping every 0.5 s.
WATCHDOG_USEC = 1_000_000


class NotifySocket:
    """The service manager's end of the notify protocol: every datagram received."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        """Read whatever arrived; return every message so far (one per datagram)."""
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.append(data.decode())

    def count(self, line: str) -> int:
        """How many messages so far carry ``line`` (e.g. ``WATCHDOG=1``)."""
        return sum(line in m.splitlines() for m in self.drain())

    def close(self) -> None:
        """Stop listening."""
        self.sock.close()


def _notify_address(kind: str, tmp_path: Path) -> str:
    if kind == "path":
        address = str(tmp_path / "notify.sock")
        return address if len(address) <= 100 else f"/tmp/dermgate-notify-{os.getpid()}.sock"
    return f"@dermgate-test-notify-{os.getpid()}-{time.monotonic_ns()}"


@contextlib.contextmanager
def _listening(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NotifySocket]:
    """A notify socket (a path, or an abstract ``@`` one, sun_path ≤ 108 bytes) in the
    service's environment, with a 1 s watchdog."""
    address = _notify_address(kind, tmp_path)
    sock = NotifySocket(address)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield sock
    finally:
        sock.close()
        if not address.startswith("@"):
            Path(address).unlink(missing_ok=True)


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NotifySocket]:
    """A notify socket of each kind in the service's environment."""
    with _listening(request.param, tmp_path, monkeypatch) as sock:
        yield sock


def _config(tmp_path: Path) -> Path:
    """A gateway whose only device is ``test-wedger`` (it wedges once ``wedge`` exists)."""
    return gateway_config(
        tmp_path,
        pacs_port=free_port(),  # nothing listens: the PACS is not what this is about
        devices=f"""
[[devices]]
driver = "test-wedger"
name = "wedger"
wedge_when = "{tmp_path / "wedge"}"
""",
    )


def test_ready_after_start_watchdog_while_running_stopping_on_sigterm(
    tmp_path: Path,
    notify_socket: NotifySocket,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    gateway = gateway_factory(_config(tmp_path))
    wait_for(lambda: notify_socket.count("READY=1"), 120, "READY=1")
    # Every stage was serving before READY=1: the service had said so in its log.
    assert " running as " in gateway.log()
    ready = next(m for m in notify_socket.messages if "READY=1" in m.splitlines())
    assert "STATUS=" in ready  # systemctl status shows a line from the start
    assert notify_socket.messages[0] == ready  # nothing before it: no ping while starting
    # The pings keep coming for as long as the service runs (several WatchdogSec).
    pings = notify_socket.count("WATCHDOG=1")
    wait_for(lambda: notify_socket.count("WATCHDOG=1") >= pings + 8, 60, "8 more pings")
    assert notify_socket.count("STOPPING=1") == 0

    assert gateway.stop() == 0
    assert notify_socket.count("STOPPING=1") == 1
    stopping = next(i for i, m in enumerate(notify_socket.messages) if "STOPPING=1" in m)
    assert stopping > notify_socket.messages.index(ready)


def test_a_wedged_event_loop_stops_the_watchdog_pings(
    tmp_path: Path,
    notify_socket: NotifySocket,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    gateway = gateway_factory(_config(tmp_path))
    wait_for(lambda: notify_socket.count("READY=1"), 120, "READY=1")
    pings = notify_socket.count("WATCHDOG=1")
    wait_for(lambda: notify_socket.count("WATCHDOG=1") >= pings + 3, 60, "pings before")

    (tmp_path / "wedge").touch()  # the driver now blocks the loop (time.sleep on it)
    wait_for(lambda: "blocking the event loop" in gateway.log(), 60, "the driver to wedge")
    before = notify_socket.count("WATCHDOG=1")
    # Ten ping intervals without a ping; the process is alive all along (a wedged
    # service, not a dead one: only the missing pings tell systemd).
    time.sleep(10 * WATCHDOG_USEC / 2e6)
    assert notify_socket.count("WATCHDOG=1") == before
    assert gateway.running()
    gateway.kill()  # what systemd does at WatchdogSec (SIGABRT, then SIGKILL)


def test_under_journald_each_line_has_its_priority_and_no_timestamp(
    tmp_path: Path,
    gateway_factory: Callable[[Path], GatewayProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``$JOURNAL_STREAM`` names stderr (its device:inode, as systemd sets it): lines go
    out as ``<6>…`` (info), ``<4>…`` (warning), so ``journalctl -p warning`` filters."""
    log = tmp_path / "gateway.log"  # the fixture's log file: the service's stderr
    log.touch()
    st = log.stat()
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    gateway = gateway_factory(_config(tmp_path))
    gateway.wait_running(120)
    (tmp_path / "wedge").touch()  # the test driver's WARNING line
    wait_for(lambda: "blocking the event loop" in gateway.log(), 60, "the warning")
    lines = gateway.log().splitlines()
    assert any(re.match(r"<6>gateway\.service\.app: DermGate .* running as ", x) for x in lines)
    assert "<4>dermgate_testdriver.drivers: test-wedger: blocking the event loop" in lines
    assert not [x for x in lines if not re.match(r"<[2-7]>", x)]  # every line has one
    assert not [x for x in lines if re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", x)]
    gateway.kill()


def test_elsewhere_lines_keep_their_time_and_level(
    tmp_path: Path,
    gateway_factory: Callable[[Path], GatewayProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``$JOURNAL_STREAM`` inherited by a redirected stderr (another file) is ignored."""
    other = tmp_path / "elsewhere"
    other.touch()
    st = other.stat()
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    gateway = gateway_factory(_config(tmp_path))
    gateway.wait_running(120)
    running = next(x for x in gateway.log().splitlines() if " running as " in x)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO    gateway\.service\.app: ", running)
    assert gateway.stop() == 0


def _faketime_library() -> str:
    """Debian's libfaketime (package faketime, installed by scripts/setup.sh --test)."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    assert found, "libfaketime is missing: run scripts/setup.sh --test"
    return found[0]


def test_a_box_that_booted_in_1970_raises_clock_not_synchronised(
    tmp_path: Path,
    gateway_factory: Callable[[Path], GatewayProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Pi without a real-time clock and no time server yet: the clock reads 1970
    (libfaketime makes it so for the service alone). The alarm is on systemd's STATUS=
    line, the log and ``/metrics``, like every alarm."""
    monkeypatch.setenv("LD_PRELOAD", _faketime_library())
    monkeypatch.setenv("FAKETIME", "@1970-01-02 00:00:00")
    monkeypatch.setenv("DONT_FAKE_MONOTONIC", "1")  # timeouts run on the real clock
    web_port = free_port()
    config = _config(tmp_path)
    config.write_text(
        config.read_text() + f'\n[web]\nlisten = "127.0.0.1:{web_port}"\n', encoding="utf-8"
    )
    with _listening("path", tmp_path, monkeypatch) as notify_socket:
        gateway = gateway_factory(config)
        wait_for(lambda: notify_socket.count("READY=1"), 120, "READY=1")
        ready = next(m for m in notify_socket.messages if "READY=1" in m.splitlines())
        assert "STATUS=clock not synchronised" in ready.splitlines()
        assert "the system clock is not synchronised" in gateway.log()
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=30) as reply:
            metrics = reply.read().decode()
        assert 'dermgate_alarm{code="clock_not_synchronised",subject=""} 1.0' in metrics
        assert gateway.stop() == 0


def test_pings_go_on_while_a_slow_stop_drains(
    tmp_path: Path,
    gateway_factory: Callable[[Path], GatewayProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """systemd watches a stopping service too: a stop that takes long (here a driver
    whose cleanup blocks in a thread, ``test-stubborn``) while the loop still turns
    keeps pinging, so ``TimeoutStopSec`` and the service's ``stop_timeout`` bound it, not
    the watchdog."""
    config = gateway_config(
        tmp_path,
        pacs_port=free_port(),
        devices="""
[supervision]
stop_timeout = 15

[[devices]]
driver = "test-stubborn"
name = "stubborn"
""",
    )
    with _listening("abstract", tmp_path, monkeypatch) as notify_socket:
        gateway = gateway_factory(config)
        wait_for(lambda: notify_socket.count("READY=1"), 120, "READY=1")
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: notify_socket.count("STOPPING=1"), 60, "STOPPING=1")
        stopping = notify_socket.count("WATCHDOG=1")
        wait_for(
            lambda: notify_socket.count("WATCHDOG=1") >= stopping + 4, 60, "pings while stopping"
        )
        assert gateway.stop(timeout=60) == 0, gateway.log()[-3000:]
        assert "exiting anyway" in gateway.log()
