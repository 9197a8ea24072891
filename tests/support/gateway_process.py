"""The gateway under test: its configuration and ``dermgate run`` as a child process.

``gateway_config`` writes a configuration whose PACS, device and ports a test chooses;
``GatewayProcess`` runs the service under a systemd-like descriptor limit; the
``gateway_factory`` fixture starts them and stops whatever is left at the end.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.waiting import wait_for

GATEWAY_AE = "DERMGATE"


def gateway_config(
    tmp_path: Path,
    *,
    pacs_port: int,
    pacs_ae: str = "ORTHANC",
    link: Path | None = None,
    retry_initial: float = 0.5,
    retry_max: float = 2.0,
    extra_destination: str = "",
    commit_via: OrthancProcess | None = None,
    listen_port: int | None = None,
    commitment_timeout: float = 20.0,
    devices: str | None = None,
) -> Path:
    """Write a gateway configuration for a test; return its path.

    ``devices`` replaces the default device (the serial dermatoscope on ``link``)
    with the given ``[[devices]]`` TOML sections.

    With ``commit_via`` (an Orthanc from the ``orthanc`` fixture) storage commitment
    is on and our listener uses the port that Orthanc knows us by.
    """
    link = link or tmp_path / "ttyDERM0"
    commit = commit_via is not None or listen_port is not None
    if commit_via is not None:
        listen_port = commit_via.modalities["dermgate"][2]
    text = f"""
[gateway]
id = "test-box-01"
ae_title = "{GATEWAY_AE}"
listen_port = {listen_port or free_port()}
listen_address = "127.0.0.1"
state_dir = "{tmp_path / "state"}"
log_level = "DEBUG"

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "{pacs_ae}"
host = "127.0.0.1"
port = {pacs_port}
storage_commitment = {"true" if commit else "false"}
commitment_timeout = {commitment_timeout}
commitment_batch_delay = 0.2
retry_initial = {retry_initial}
retry_max = {retry_max}
connect_timeout = 3
acse_timeout = 5
dimse_timeout = 10
network_timeout = 10
{extra_destination}
"""
    text += (
        devices
        if devices is not None
        else f"""
[[devices]]
driver = "serial-dermatoscope"
name = "scope"
port = "{link}"
stall_timeout = 5
reconnect_max = 1
"""
    )
    path = tmp_path / "dermgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


#: The descriptor limit systemd gives a service (soft ``LimitNOFILE``): every test
#: runs the gateway under it, as a box does.
SERVICE_NOFILE = 1024


def service_limits() -> None:
    """In the child, before exec: the descriptor limit of a systemd service."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (SERVICE_NOFILE, SERVICE_NOFILE))


@dataclass
class GatewayProcess:
    """``dermgate run --config FILE`` as a child process, under ``ulimit -n 1024``."""

    config: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _logs: list[Any] = field(default_factory=list)
    _runs_before: int = 0

    def start(self) -> None:
        """Start the service."""
        self._runs_before = self.log().count(" running as ") if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115
        self._logs.append(log)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=service_limits,
        )

    def vm_hwm(self) -> int:
        """The process's peak resident memory (bytes)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; return the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # the service writes its thread stacks
            time.sleep(1)
            self.kill()
            pytest.fail(f"the gateway did not stop within {timeout:.0f} s:\n{self.log()[-6000:]}")
        self.close_logs()
        return code

    def close_logs(self) -> None:
        """Close the log file handles held by the test."""
        for log in self._logs:
            log.close()
        self._logs.clear()

    def kill(self) -> None:
        """SIGKILL (a crash or a power cut of the process)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.close_logs()

    def wait_running(self, timeout: float = 60.0) -> None:
        """Wait until this start of the service reports that it is running."""
        wait_for(
            lambda: self.log().count(" running as ") > self._runs_before,
            timeout,
            "the gateway to start",
        )

    def log(self) -> str:
        """Everything the service logged."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[[Path], GatewayProcess]]:
    """Start gateways; whatever is still running at the end is stopped."""
    started: list[GatewayProcess] = []

    def start(config: Path) -> GatewayProcess:
        gw = GatewayProcess(config, tmp_path / "gateway.log")
        gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait()
        gw.close_logs()
