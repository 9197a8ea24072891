"""The serial dermatoscope's simulator as a child process, on a pty linked into the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.waiting import wait_for


@dataclass
class SimulatorProcess:
    """``dermgate simulate serial-dermatoscope`` as a child process."""

    link: Path
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
def simulator_factory(tmp_path: Path) -> Iterator[Callable[..., SimulatorProcess]]:
    """Start device simulators on a pty linked at ``tmp_path/ttyDERM0``."""
    started: list[SimulatorProcess] = []

    def start(*args: str, link: Path | None = None) -> SimulatorProcess:
        link = link or tmp_path / "ttyDERM0"
        report = tmp_path / f"report-{len(started)}.json"
        cmd = [
            sys.executable,
            "-m",
            "gateway.cli",
            "simulate",
            "serial-dermatoscope",
            "--link",
            str(link),
            "--report",
            str(report),
            "--timeout",
            "240",
        ]
        proc = subprocess.Popen([*cmd, *args])
        sim = SimulatorProcess(link, report, proc)
        started.append(sim)
        wait_for(lambda: os.path.lexists(link), 60, "the simulator's pty link")
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
