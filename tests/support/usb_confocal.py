"""The RCM-1 confocal microscope's simulator as a child process, and a gateway configured for it.

The simulator serves the device at the USB transfer level over a Unix socket; the
gateway's driver reaches it through the emulated pyusb backend.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.local_orthanc import OrthancProcess
from tests.support.gateway_process import gateway_config
from tests.support.waiting import wait_for


@dataclass
class ConfocalSimulator:
    """``dermgate simulate usb-confocal`` as a child process."""

    socket: Path
    report: Path
    proc: subprocess.Popen[bytes]

    def wait(self, timeout: float) -> int:
        """Wait for the simulator to finish; return its exit code."""
        return self.proc.wait(timeout)

    def result(self) -> dict[str, Any]:
        """The simulator's JSON report."""
        data: dict[str, Any] = json.loads(self.report.read_text(encoding="utf-8"))
        return data


@pytest.fixture
def confocal_sim(tmp_path: Path) -> Iterator[Callable[..., ConfocalSimulator]]:
    """Start RCM-1 simulators listening on ``tmp_path/rcm.sock``."""
    started: list[ConfocalSimulator] = []

    def start(*args: str) -> ConfocalSimulator:
        sock = tmp_path / "rcm.sock"
        report = tmp_path / f"rcm-report-{len(started)}.json"
        cmd = [
            sys.executable,
            "-m",
            "gateway.cli",
            "simulate",
            "usb-confocal",
            "--socket",
            str(sock),
            "--report",
            str(report),
            "--timeout",
            "240",
            *args,
        ]
        proc = subprocess.Popen(cmd)
        sim = ConfocalSimulator(sock, report, proc)
        started.append(sim)
        wait_for(lambda: sock.exists() and report.exists(), 60, "the simulator's socket")
        return sim

    yield start
    for sim in started:
        if sim.proc.poll() is None:
            sim.proc.terminate()
            try:
                sim.proc.wait(10)
            except subprocess.TimeoutExpired:
                sim.proc.kill()
                sim.proc.wait()


def confocal_config(tmp_path: Path, orthanc: OrthancProcess, extra_destination: str = "") -> Path:
    """A gateway configuration with one microscope on ``tmp_path/rcm.sock``;
    ``extra_destination`` is added to the destination (keys, or further tables)."""
    devices = f"""
[[devices]]
driver = "usb-confocal"
name = "rcm"
usb_backend = "emulated:{tmp_path / "rcm.sock"}"
stall_timeout = 5
reconnect_max = 1
"""
    return gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        devices=devices,
        extra_destination=extra_destination,
    )
