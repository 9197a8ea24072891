"""Helpers for the photo-folder tests: the device section and the simulated camera.

The camera is the real simulator (``dermgate simulate photo-folder``) in its own
process, writing real files into a real folder; nothing in the driver is patched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Small photos keep CI quick; the driver and builder do not care about the size.
SMALL = ("--width", "640", "--height", "480")


def photo_folder_toml(
    folder: Path,
    *,
    name: str = "camera",
    settle: float = 0.3,
    poll: float = 0.2,
    grace: float = 60.0,
    extra: str = "",
) -> str:
    """A ``[[devices]]`` section for the photo-folder driver on ``folder``."""
    return f"""
[[devices]]
driver = "photo-folder"
name = "{name}"
folder = "{folder}"
settle_seconds = {settle}
poll_interval = {poll}
truncated_grace_seconds = {grace}
{extra}
"""


@dataclass
class CameraRun:
    """One ``dermgate simulate photo-folder`` process and its report."""

    proc: subprocess.Popen[bytes]
    report_path: Path
    log_path: Path

    def wait(self, timeout: float) -> int:
        """Wait for the simulator to exit; its exit code."""
        return self.proc.wait(timeout)

    def report(self) -> dict[str, Any]:
        """The simulator's JSON report."""
        data: dict[str, Any] = json.loads(self.report_path.read_text(encoding="utf-8"))
        return data

    def log(self) -> str:
        """What the simulator printed."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """Terminate the simulator if it still runs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_camera(folder: Path, workdir: Path, *args: str, timeout: float = 150) -> CameraRun:
    """Start the simulated camera writing into ``folder``."""
    report = workdir / "camera-report.json"
    log_path = workdir / "camera.log"
    cmd = [
        sys.executable,
        "-m",
        "gateway.cli",
        "simulate",
        "photo-folder",
        "--folder",
        str(folder),
        "--report",
        str(report),
        "--timeout",
        str(timeout),
        *SMALL,
        *args,
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    return CameraRun(proc, report, log_path)
