"""The serial dermatoscope simulator, driven over its pty by pyserial and HostSession."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import serial
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from drivers.serial_dermatoscope.protocol import (
    CaptureBegin,
    NakReason,
)
from drivers.serial_dermatoscope.session import (
    CaptureBytes,
    CaptureCompleted,
    CaptureFailed,
    CaptureStarted,
    DeviceIdentified,
    Event,
    FrameDropped,
    HostSession,
)
from tests.support.paths import REPO_ROOT

SMALL = ["--width", "640", "--height", "480"]  # ~5 DATA frames per capture


@dataclass
class Simulator:
    """A running simulator process and its files."""

    proc: subprocess.Popen[bytes]
    link: Path
    report: Path
    log: Path

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"simulator still running; log:\n{self.log.read_text()}")

    def read_report(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.report.read_text())
        return result


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Simulator]]:
    started: list[Simulator] = []

    def _start(*args: str) -> Simulator:
        link = tmp_path / f"dermatoscope{len(started)}"
        report = tmp_path / f"report{len(started)}.json"
        log = tmp_path / f"simulator{len(started)}.log"
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "drivers.serial_dermatoscope.simulator",
                    "--link",
                    str(link),
                    "--report",
                    str(report),
                    "--timeout",
                    "60",
                    *args,
                ],
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        sim = Simulator(proc, link, report, log)
        started.append(sim)
        wait_for(link.exists, f"link {link} to appear", sim)
        return sim

    yield _start
    for sim in started:
        if sim.proc.poll() is None:
            sim.proc.kill()
            sim.proc.wait()


def wait_for(condition: Callable[[], bool], what: str, sim: Simulator, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; log:\n{sim.log.read_text()}")
        time.sleep(0.02)


@dataclass
class Host:
    """The host end: a pyserial port and a HostSession, collecting capture bytes."""

    sim: Simulator
    session: HostSession = field(default_factory=lambda: HostSession("pytest", "0"))
    port: serial.Serial | None = None
    data: dict[str, bytearray] = field(default_factory=dict)
    dropped: list[FrameDropped] = field(default_factory=list)
    pending: deque[Event] = field(default_factory=deque)

    def connect(self) -> None:
        self.pending.clear()
        self.port = serial.Serial(str(self.sim.link), timeout=0.05)
        self.port.write(self.session.hello_frame())

    def close(self) -> None:
        assert self.port is not None
        self.port.close()
        self.port = None

    def send(self, frame: bytes) -> None:
        assert self.port is not None
        self.port.write(frame)

    def until(self, predicate: Callable[[Event], bool], timeout: float = 20.0) -> Event:
        """Process events until one satisfies ``predicate``; return it."""
        assert self.port is not None
        deadline = time.monotonic() + timeout
        seen: list[Event] = []
        while time.monotonic() < deadline:
            if not self.pending:
                chunk = self.port.read(max(1, self.port.in_waiting))
                self.pending.extend(self.session.receive(chunk))
            while self.pending:
                event = self.pending.popleft()
                if isinstance(event, CaptureStarted):
                    self.data[event.begin.capture_id] = bytearray()
                elif isinstance(event, CaptureBytes):
                    self.data[event.capture_id] += event.data
                    continue
                elif isinstance(event, FrameDropped):
                    self.dropped.append(event)
                seen.append(event)
                if predicate(event):
                    return event
        pytest.fail(f"no matching event; saw {seen!r}; log:\n{self.sim.log.read_text()}")

    def next_outcome(self, timeout: float = 20.0) -> CaptureCompleted | CaptureFailed:
        """The next completed or failed capture."""
        event = self.until(lambda e: isinstance(e, CaptureCompleted | CaptureFailed), timeout)
        assert isinstance(event, CaptureCompleted | CaptureFailed)
        return event

    def next_started(self) -> CaptureBegin:
        event = self.until(lambda e: isinstance(e, CaptureStarted))
        assert isinstance(event, CaptureStarted)
        return event.begin

    def identify(self) -> DeviceIdentified:
        event = self.until(lambda e: isinstance(e, DeviceIdentified))
        assert isinstance(event, DeviceIdentified)
        return event

    def ack_all(self, *, until_exit: bool = True) -> list[str]:
        """ACK every completed capture (NAK failed ones) until the simulator exits."""
        acked = []
        while self.sim.proc.poll() is None:
            try:
                outcome = self.next_outcome()
            except OSError:  # SerialException, or EIO from in_waiting
                break  # the simulator exited and took the port with it
            if isinstance(outcome, CaptureCompleted):
                self.send(self.session.ack_frame(outcome.capture_id))
                acked.append(outcome.capture_id)
            else:
                self.send(self.session.nak_frame(outcome.capture_id, outcome.reason))
        return acked


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_delivers_captures_acks_and_exits(start: Callable[..., Simulator]) -> None:
    sim = start("--captures", "2", "--interval", "0.05", "--serial", "DS100-TEST", *SMALL)
    host = Host(sim)
    host.connect()
    hello = host.identify().hello
    assert (hello.manufacturer, hello.model, hello.serial, hello.firmware) == (
        "DermGate Reference Devices",
        "DS-100 Dermatoscope",
        "DS100-TEST",
        "2.4.1",
    )
    begins: list[CaptureBegin] = []
    for expected_id in ("000001", "000002"):
        begins.append(host.next_started())
        outcome = host.next_outcome()
        assert isinstance(outcome, CaptureCompleted)
        assert outcome.capture_id == expected_id
        content = bytes(host.data[expected_id])
        assert outcome.sha256 == sha(content)
        image = Image.open(io.BytesIO(content))
        assert image.format == "JPEG"
        assert image.size == (640, 480)
        assert JpegImagePlugin.get_sampling(image) == 2  # 4:2:0
        host.send(host.session.ack_frame(expected_id))

    assert [b.capture_id for b in begins] == ["000001", "000002"]
    assert begins[0].polarization != begins[1].polarization
    assert begins[0].contact == "CONTACT"
    assert begins[0].immersion is not None
    assert begins[0].anatomic_site is not None
    assert begins[0].lesion_id == "L1"
    assert sim.wait() == 0
    assert sim.read_report() == {
        "acknowledged": [
            {"capture_id": "000001", "sha256": sha(bytes(host.data["000001"]))},
            {"capture_id": "000002", "sha256": sha(bytes(host.data["000002"]))},
        ],
        "refused": [],
        "offered": 2,
    }
    assert not sim.link.exists()


def test_nak_is_reported_and_capture_reoffered(start: Callable[..., Simulator]) -> None:
    sim = start("--captures", "2", "--interval", "0.05", "--retry-delay", "0.2", *SMALL)
    host = Host(sim)
    host.connect()
    outcome = host.next_outcome()
    assert isinstance(outcome, CaptureCompleted)
    assert outcome.capture_id == "000001"
    first = bytes(host.data["000001"])
    host.send(host.session.nak_frame("000001", NakReason.DISK_FULL))

    assert sorted(host.ack_all()) == ["000001", "000002"]
    assert bytes(host.data["000001"]) == first
    assert sim.wait() == 0
    report = sim.read_report()
    assert report["refused"] == [{"capture_id": "000001", "reason": "DISK_FULL"}]
    assert {a["capture_id"] for a in report["acknowledged"]} == {"000001", "000002"}


def test_reconnect_reoffers_unacked_captures(start: Callable[..., Simulator]) -> None:
    sim = start("--captures", "2", "--interval", "0.05", *SMALL)
    host = Host(sim)
    host.connect()
    outcome = host.next_outcome()
    assert isinstance(outcome, CaptureCompleted)
    assert outcome.capture_id == "000001"
    host.close()  # saved nothing, said nothing

    host.connect()
    host.identify()
    assert host.next_started().capture_id == "000001"
    assert host.ack_all() == ["000001", "000002"]
    assert sim.wait() == 0
    assert sim.read_report()["refused"] == []


@pytest.mark.parametrize(
    ("fault", "first_outcome"),
    [
        ("crc", NakReason.SEQUENCE),
        ("truncate", NakReason.LENGTH),
        ("sha", NakReason.CHECKSUM),
        ("garbage", None),
        ("duplicate-frame", None),
    ],
)
def test_transfer_faults_are_detected_and_recovered(
    start: Callable[..., Simulator], fault: str, first_outcome: NakReason | None
) -> None:
    sim = start(
        "--captures", "2", "--interval", "0.05", "--retry-delay", "0.1", "--fault", fault, *SMALL
    )
    host = Host(sim)
    host.connect()
    outcome = host.next_outcome()
    assert outcome.capture_id == "000001"
    if first_outcome is None:
        assert isinstance(outcome, CaptureCompleted)
        host.send(host.session.ack_frame("000001"))
    else:
        assert isinstance(outcome, CaptureFailed)
        assert outcome.reason is first_outcome
        host.send(host.session.nak_frame("000001", outcome.reason))
    host.ack_all()
    assert sim.wait() == 0
    report = sim.read_report()
    expected_refused = (
        [] if first_outcome is None else [{"capture_id": "000001", "reason": str(first_outcome)}]
    )
    assert report["refused"] == expected_refused
    acked = {a["capture_id"]: a["sha256"] for a in report["acknowledged"]}
    assert acked == {cid: sha(bytes(host.data[cid])) for cid in ("000001", "000002")}
    if fault in ("crc", "garbage"):
        assert host.dropped


def test_content_faults(start: Callable[..., Simulator]) -> None:
    sim = start("--captures", "2", "--interval", "0.05", "--fault", "jpeg444", *SMALL)
    host = Host(sim)
    host.connect()
    host.ack_all()
    assert sim.wait() == 0
    assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(host.data["000001"]))) == 0
    assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(host.data["000002"]))) == 2

    sim = start("--captures", "1", "--fault", "not-jpeg", *SMALL)
    host = Host(sim)
    host.connect()
    host.ack_all()
    assert sim.wait() == 0
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(host.data["000001"]))


def test_unplug_mid_transfer(start: Callable[..., Simulator]) -> None:
    sim = start(
        "--captures", "2", "--interval", "0.05", "--unplug-after-bytes", "60000",
        "--unplug-for", "0.3", *SMALL,
    )  # fmt: skip
    host = Host(sim)
    host.connect()
    host.identify()
    # pyserial says SerialException from read(), plain EIO from in_waiting.
    with pytest.raises(OSError, match=r"no data|Input/output error|read failed"):
        host.until(lambda e: isinstance(e, CaptureCompleted))
    host.close()
    wait_for(sim.link.exists, "the device to come back", sim)
    host.connect()
    assert host.ack_all() == ["000001", "000002"]
    assert sim.wait() == 0


def test_reoffer_of_acked_capture(start: Callable[..., Simulator]) -> None:
    sim = start("--captures", "2", "--interval", "0.05", "--reoffer-acked", *SMALL)
    host = Host(sim)
    host.connect()
    shas: list[str] = []
    while sim.proc.poll() is None:
        try:
            outcome = host.next_outcome()
        except OSError:
            break
        assert isinstance(outcome, CaptureCompleted)
        shas.append(outcome.sha256)
        host.send(host.session.ack_frame(outcome.capture_id))
    assert sim.wait() == 0
    assert len(shas) == 3
    assert shas[2] == shas[0]  # the same capture, offered again
    assert [a["capture_id"] for a in sim.read_report()["acknowledged"]] == ["000001", "000002"]


def test_sigterm_writes_report_and_removes_link(start: Callable[..., Simulator]) -> None:
    sim = start("--captures", "2", *SMALL)
    target = os.readlink(sim.link)
    assert target.startswith("/dev/pts/")
    sim.proc.send_signal(signal.SIGTERM)
    assert sim.wait() == 1
    report = sim.read_report()
    assert report["acknowledged"] == []
    assert report["refused"] == []
    assert not sim.link.exists()
    assert not sim.link.is_symlink()


def test_help_documents_faults() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "drivers.serial_dermatoscope.simulator", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    for word in ("--unplug-after-bytes", "duplicate-frame", "not-jpeg", "--reoffer-acked"):
        assert word in result.stdout
    assert "--width" not in result.stdout


def test_host_hello_mid_transfer_restarts_offers(start: Callable[..., Simulator]) -> None:
    sim = start("--captures", "2", "--interval", "0.05", *SMALL)
    host = Host(sim)
    host.connect()
    assert host.next_started().capture_id == "000001"
    host.send(host.session.hello_frame())  # e.g. the gateway restarted its driver
    host.pending.clear()
    host.identify()
    assert host.next_started().capture_id == "000001"
    assert host.ack_all() == ["000001", "000002"]
    assert sim.wait() == 0


def test_silent_host_is_treated_as_gone(start: Callable[..., Simulator]) -> None:
    sim = start("--captures", "1", "--ack-timeout", "0.3", *SMALL)
    host = Host(sim)
    host.connect()
    outcome = host.next_outcome()
    assert isinstance(outcome, CaptureCompleted)
    wait_for(lambda: "host gone (no ACK/NAK)" in sim.log.read_text(), "ACK timeout", sim)
    host.send(host.session.hello_frame())
    host.pending.clear()
    host.identify()
    assert host.ack_all() == ["000001"]
    assert sim.wait() == 0
